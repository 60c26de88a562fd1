// DBRX's config.json fields (families/dbrx.ts) and the presets and --override of issue 11: every new field
// missing, of the wrong type, out of range, or inconsistent with the tensors fails naming the file and field.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Checkpoint } from '../src/model/checkpoint';
import { parseModelConfig } from '../src/model/config';
import { applyOverrides, parseOverride } from '../src/model/overrides';
import { findPreset } from '../src/model/presets';
import { FIXTURES } from './helpers/cli';

const FIXTURE = path.join(FIXTURES, 'dbrx');
const base = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'config.json'), 'utf8')) as Record<string, unknown>;

function withField(pathKey: string, value: unknown): Record<string, unknown> {
  const c = JSON.parse(JSON.stringify(base)) as Record<string, unknown>;
  const parts = pathKey.split('.');
  let o = c as Record<string, unknown>;
  for (const p of parts.slice(0, -1)) o = o[p] as Record<string, unknown>;
  if (value === undefined) delete o[parts[parts.length - 1]];
  else o[parts[parts.length - 1]] = value;
  return c;
}

const parse = (c: unknown) => parseModelConfig(c, 'dbrx/config.json');

test('the fixture parses as DBRX: GQA, LayerNorm, clip_qkv, fused experts, theta from rope_parameters', () => {
  const s = parse(base);
  expect(s).toMatchObject({
    family: 'dbrx',
    hiddenSize: 32,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 8,
    numLayers: 2,
    norm: 'layernorm',
    rmsNormEps: 1e-5,
    clipQkv: 1,
    maxPositions: 256,
    moe: { numExperts: 8, topK: 2, expertIntermediate: 24, normTopkProb: true, routedScale: 1, sharedIntermediate: 0 },
  });
  expect(s.rope.theta).toBe(500000);
  expect(s.layers.every((l) => l.mlp === 'moe')).toBe(true);
  expect(parse(withField('attn_config.clip_qkv', null)).clipQkv).toBeUndefined();
  expect(parse(withField('ffn_config.moe_normalize_expert_weights', null)).moe.normTopkProb).toBe(false);
  // transformers 5.17 rotates with the top-level theta (default 10000), whatever attn_config.rope_theta says.
  expect(parse(withField('rope_parameters', undefined)).rope.theta).toBe(10000);
});

test.each([
  ['d_model', undefined, /required field "d_model" is missing/],
  ['d_model', '32', /field "d_model" must be a positive integer, got "32"/],
  ['n_heads', 5, /field "n_heads" must be a divisor of d_model \(32\), got 5/],
  ['n_layers', 0, /field "n_layers" must be a positive integer, got 0/],
  ['attn_config', undefined, /required field "attn_config" is missing/],
  ['attn_config', 3, /field "attn_config" must be an object or null, got 3/],
  ['attn_config.kv_n_heads', undefined, /required field "attn_config.kv_n_heads" is missing/],
  ['attn_config.kv_n_heads', 3, /field "attn_config.kv_n_heads" must be a divisor of n_heads \(4\), got 3/],
  ['attn_config.kv_n_heads', 1.5, /field "attn_config.kv_n_heads" must be a positive integer, got 1.5/],
  ['attn_config.clip_qkv', -1, /field "attn_config.clip_qkv" must be a finite number > 0, got -1/],
  ['attn_config.clip_qkv', 'big', /field "attn_config.clip_qkv" must be a finite number > 0, got "big"/],
  ['attn_config.rope_theta', undefined, /required field "attn_config.rope_theta" is missing/],
  ['ffn_config', undefined, /required field "ffn_config" is missing/],
  ['ffn_config.ffn_hidden_size', undefined, /required field "ffn_config.ffn_hidden_size" is missing/],
  ['ffn_config.moe_num_experts', 0, /field "ffn_config.moe_num_experts" must be a positive integer, got 0/],
  ['ffn_config.moe_top_k', 9, /field "ffn_config.moe_top_k" must be <= moe_num_experts \(8\), got 9/],
  ['ffn_config.moe_top_k', true, /field "ffn_config.moe_top_k" must be a positive integer, got true/],
  ['ffn_config.hidden_size', 64, /field "ffn_config.hidden_size" must be equal to d_model \(32\)/],
  ['ffn_config.moe_normalize_expert_weights', 2, /moe_normalize_expert_weights=2 is not supported: 1 .* or null/],
  ['ffn_config.moe_normalize_expert_weights', 'one', /field "ffn_config.moe_normalize_expert_weights" must be a finite number > 0/],
  ['ffn_config.ffn_act_fn', { name: 'gelu' }, /ffn_act_fn.name "gelu" is not supported \(only silu\)/],
  ['tie_word_embeddings', true, /field "tie_word_embeddings" must be false/],
  ['max_seq_len', -4, /field "max_seq_len" must be a positive integer, got -4/],
])('%s = %j fails naming the field', (field, value, message) => {
  expect(() => parse(withField(field, value))).toThrow(message);
});

describe('a config inconsistent with the tensors fails at load, naming the tensor', () => {
  function folderWith(config: Record<string, unknown>): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-dbrx-'));
    fs.copyFileSync(path.join(FIXTURE, 'model.safetensors'), path.join(dir, 'model.safetensors'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    return dir;
  }
  test.each([
    ['attn_config.kv_n_heads', 1, /Wqkv.weight" has shape \[64, 32\], .* implies \[48, 32\]/],
    ['ffn_config.ffn_hidden_size', 16, /ffn.experts.mlp.w1" has shape \[192, 32\], .* implies \[128, 32\]/],
    ['ffn_config.moe_num_experts', 4, /router.layer.weight" has shape \[8, 32\], .* implies \[4, 32\]/],
    ['vocab_size', 100, /transformer.wte.weight" has shape \[160, 32\], .* implies \[100, 32\]/],
  ])('%s = %j', async (field, value, message) => {
    const ckpt = await Checkpoint.open(folderWith(withField(field, value)));
    try {
      await expect(ckpt.verify()).rejects.toThrow(message);
    } finally {
      await ckpt.close();
    }
  });
});

describe('presets and --override', () => {
  test.each([
    ['deepseek-v2-lite', 'deepseek_v2', 27, 64],
    ['deepseek-v2', 'deepseek_v2', 60, 160],
    ['deepseek-v3', 'deepseek_v3', 61, 256],
    ['dbrx', 'dbrx', 40, 16],
  ])('%s parses at its published shape', (name, family, layers, experts) => {
    const s = parseModelConfig(findPreset(name)!.config, `preset ${name}`);
    expect(s.family).toBe(family);
    expect(s.numLayers).toBe(layers);
    expect(s.moe.numExperts).toBe(experts);
  });

  test('num_hidden_layers=8 cuts a preset (DBRX through its n_layers alias); nested keys; JSON values', () => {
    const cut = applyOverrides(findPreset('dbrx')!.config, [parseOverride('num_hidden_layers=8'), parseOverride('ffn_config.moe_top_k=2')]);
    const s = parseModelConfig(cut, 'preset dbrx');
    expect(s.numLayers).toBe(8);
    expect(s.moe.topK).toBe(2);
    expect(findPreset('dbrx')!.config['n_layers']).toBe(40); // the preset itself is untouched
    const v3 = parseModelConfig(applyOverrides(findPreset('deepseek-v3')!.config, [parseOverride('num_hidden_layers=4')]), 'v3');
    expect(v3.layers.map((l) => l.mlp)).toEqual(['dense', 'dense', 'dense', 'moe']);
    expect(parseOverride('rope_parameters.rope_type=yarn')).toEqual({ key: 'rope_parameters.rope_type', value: 'yarn' });
    expect(parseOverride('q_lora_rank=null')).toEqual({ key: 'q_lora_rank', value: null });
  });

  test('a malformed override, an unknown field or a value the config rejects fails naming it', () => {
    expect(() => parseOverride('num_hidden_layers')).toThrow(/--override "num_hidden_layers": expected KEY=VALUE/);
    expect(() => parseOverride('=3')).toThrow(/expected KEY=VALUE/);
    expect(() => parseOverride('a b=3')).toThrow(/"a b" is not a field name/);
    expect(() => applyOverrides(findPreset('dbrx')!.config, [parseOverride('num_layers=8')], 'preset dbrx')).toThrow(
      /--override num_layers: preset dbrx has no field "num_layers"/,
    );
    expect(() => applyOverrides(findPreset('dbrx')!.config, [parseOverride('n_layers.x=8')])).toThrow(/"n_layers" is not an object/);
    const bad = applyOverrides(findPreset('deepseek-v2-lite')!.config, [parseOverride('num_hidden_layers=0')]);
    expect(() => parseModelConfig(bad, 'preset deepseek-v2-lite')).toThrow(/field "num_hidden_layers" must be a positive integer, got 0/);
    const text = applyOverrides(findPreset('dbrx')!.config, [parseOverride('n_layers=eight')]);
    expect(() => parseModelConfig(text, 'preset dbrx')).toThrow(/field "n_layers" must be a positive integer, got "eight"/);
  });
});
