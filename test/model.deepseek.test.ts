// DeepSeek-V2/V3 config.json (model/families/deepseek.ts): every new field read as transformers 5.17 reads
// it, and refused with a message naming the file and the field when missing, of the wrong type, out of
// range, or inconsistent with the tensors (through `eps-moe forward`, one line on stderr).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseModelConfig } from '../src/model/config';
import { FIXTURES, runCli } from './helpers/cli';

const fixtureConfig = (name: string): Record<string, unknown> =>
  JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'config.json'), 'utf8')) as Record<string, unknown>;
const v2 = fixtureConfig('deepseek-v2');
const v2lite = fixtureConfig('deepseek-v2-lite');
const v3 = fixtureConfig('deepseek-v3');

describe('parseModelConfig: DeepSeek', () => {
  test('deepseek-v2: MLA with q_lora_rank, group_limited_greedy, YaRN mscale in the softmax scale', () => {
    const s = parseModelConfig(v2, 'v2.json');
    expect(s.family).toBe('deepseek_v2');
    expect(s.mla).toEqual({ qLoraRank: 24, kvLoraRank: 16, qkNopeHeadDim: 8, qkRopeHeadDim: 8, vHeadDim: 12, ropeInterleave: true, attentionBias: false });
    expect(s.headDim).toBe(16);
    expect(s.moe.routing).toEqual({ scoring: 'softmax', method: 'group_limited_greedy', groups: 4, topkGroup: 2, scoreCorrectionBias: false });
    expect(s.moe).toMatchObject({ numExperts: 16, topK: 3, normTopkProb: false, routedScale: 2, sharedIntermediate: 12, sharedGate: false });
    expect(s.layers.map((l) => l.mlp)).toEqual(['dense', 'moe', 'moe']);
    const m = 0.1 * 0.8 * Math.log(8) + 1;
    expect(s.softmaxScale).toBeCloseTo((m * m) / Math.sqrt(16), 12);
  });

  test('deepseek-v2-lite: q_proj (q_lora_rank null), greedy, plain rope', () => {
    const s = parseModelConfig(v2lite, 'lite.json');
    expect(s.mla?.qLoraRank).toBeNull();
    expect(s.moe.routing?.method).toBe('greedy');
    expect(s.moe.sharedIntermediate).toBe(32);
    expect(s.softmaxScale).toBeCloseTo(1 / Math.sqrt(12), 12);
  });

  test('deepseek-v3: sigmoid, noaux_tc, correction bias, renormalised, scaled', () => {
    const s = parseModelConfig(v3, 'v3.json');
    expect(s.moe.routing).toEqual({ scoring: 'sigmoid', method: 'noaux_tc', groups: 4, topkGroup: 2, scoreCorrectionBias: true });
    expect(s.moe).toMatchObject({ normTopkProb: true, routedScale: 2.5 });
  });

  test('V2 never renormalises (5.17 ignores norm_topk_prob) but still types it', () => {
    expect(parseModelConfig({ ...v2, norm_topk_prob: true }, 'v2.json').moe.normTopkProb).toBe(false);
    expect(() => parseModelConfig({ ...v2, norm_topk_prob: 1 }, 'v2.json')).toThrow(/v2\.json: field "norm_topk_prob" must be true or false/);
  });

  const without = (c: Record<string, unknown>, key: string) => Object.fromEntries(Object.entries(c).filter(([k]) => k !== key));
  test.each([
    ['q_lora_rank missing', without(v2, 'q_lora_rank'), /required field "q_lora_rank" is missing \(a positive integer for q_a_proj\/q_b_proj, or null for q_proj\)/],
    ['q_lora_rank not an integer', { ...v2, q_lora_rank: 1.5 }, /field "q_lora_rank" must be a positive integer, got 1\.5/],
    ['kv_lora_rank missing', without(v2, 'kv_lora_rank'), /required field "kv_lora_rank" is missing/],
    ['kv_lora_rank zero', { ...v2, kv_lora_rank: 0 }, /field "kv_lora_rank" must be a positive integer, got 0/],
    ['qk_nope_head_dim a string', { ...v2, qk_nope_head_dim: '8' }, /field "qk_nope_head_dim" must be a positive integer, got "8"/],
    ['qk_rope_head_dim odd', { ...v2, qk_rope_head_dim: 5 }, /field "qk_rope_head_dim" must be an even integer/],
    ['v_head_dim missing', without(v2, 'v_head_dim'), /required field "v_head_dim" is missing/],
    ['n_routed_experts missing', without(v2, 'n_routed_experts'), /required field "n_routed_experts" is missing/],
    ['num_experts_per_tok above the experts', { ...v2, num_experts_per_tok: 17 }, /field "num_experts_per_tok" must be <= n_routed_experts \(16\)/],
    ['topk_method unknown', { ...v2, topk_method: 'noaux_tc' }, /field "topk_method" must be "greedy" or "group_limited_greedy", got "noaux_tc"/],
    ['V3 topk_method not noaux_tc', { ...v3, topk_method: 'greedy' }, /field "topk_method" must be "noaux_tc"/],
    ['n_group missing for group_limited_greedy', without(v2, 'n_group'), /required field "n_group" is missing \(topk_method group_limited_greedy needs it\)/],
    ['n_group not dividing the experts', { ...v2, n_group: 3 }, /field "n_group" must be a divisor of n_routed_experts \(16\)/],
    ['topk_group above n_group', { ...v2, topk_group: 5 }, /field "topk_group" must be <= n_group \(4\)/],
    ['topk_group too small for top-k', { ...v2, topk_group: 1, num_experts_per_tok: 5 }, /field "topk_group" must be large enough that topk_group \* n_routed_experts \/ n_group >= num_experts_per_tok \(5\)/],
    ['V3 groups of one expert', { ...v3, n_group: 16, topk_group: 4 }, /field "n_group" must be at most n_routed_experts \/ 2 \(8\)/],
    ['routed_scaling_factor negative', { ...v3, routed_scaling_factor: -1 }, /field "routed_scaling_factor" must be a finite number > 0, got -1/],
    ['n_shared_experts missing', without(v3, 'n_shared_experts'), /required field "n_shared_experts" is missing/],
    ['n_shared_experts negative', { ...v3, n_shared_experts: -1 }, /field "n_shared_experts" must be an integer >= 0, got -1/],
    ['first_k_dense_replace beyond the layers', { ...v3, first_k_dense_replace: 4 }, /field "first_k_dense_replace" must be <= num_hidden_layers \(3\)/],
    ['first_k_dense_replace a boolean', { ...v3, first_k_dense_replace: true }, /field "first_k_dense_replace" must be an integer >= 0, got true/],
    ['moe_layer_freq other than 1', { ...v3, moe_layer_freq: 2 }, /moe_layer_freq=2 is not supported: transformers 5\.17 makes every layer/],
    ['moe_layer_freq not an integer', { ...v3, moe_layer_freq: 'x' }, /field "moe_layer_freq" must be a positive integer, got "x"/],
    ['num_key_value_heads unlike the heads', { ...v3, num_key_value_heads: 2 }, /field "num_key_value_heads" must be equal to num_attention_heads \(4\) for MLA/],
    ['rope_interleave not a boolean', { ...v3, rope_interleave: 'yes' }, /field "rope_interleave" must be true or false, got "yes"/],
    ['mscale_all_dim not a number', { ...v3, rope_parameters: { ...(v3.rope_parameters as object), mscale_all_dim: 'a' } }, /field "rope_parameters\.mscale_all_dim" must be a finite number/],
    ['mlp_bias true', { ...v3, mlp_bias: true }, /mlp_bias=true is not supported/],
    ['intermediate_size missing with dense layers', without(v3, 'intermediate_size'), /required field "intermediate_size" is missing \(layers below first_k_dense_replace have a dense MLP\)/],
  ])('%s', (_name, config, message) => {
    expect(() => parseModelConfig(config, 'c.json')).toThrow(message);
  });
});

describe('eps-moe forward refuses a DeepSeek config with one line', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-deepseek-'));
  const input = path.join(dir, 'in.json');
  fs.writeFileSync(input, JSON.stringify({ sequences: [[1, 2, 3]] }));
  function modelWith(name: string, edit: (c: Record<string, unknown>) => void): string {
    const to = path.join(dir, name);
    fs.cpSync(path.join(FIXTURES, 'deepseek-v3'), to, { recursive: true });
    const c = fixtureConfig('deepseek-v3');
    edit(c);
    fs.writeFileSync(path.join(to, 'config.json'), JSON.stringify(c));
    return to;
  }
  async function expectOneLine(model: string, pattern: RegExp): Promise<void> {
    const r = await runCli(['forward', '--model', model, '--input', input, '--backend', 'cpu']);
    expect(r.code).not.toBe(0);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(pattern);
  }

  test('a field of the wrong type', async () => {
    await expectOneLine(modelWith('bad-type', (c) => (c.kv_lora_rank = '16')), /config\.json: field "kv_lora_rank" must be a positive integer, got "16"/);
  });

  test('a field inconsistent with the tensors', async () => {
    await expectOneLine(
      modelWith('bad-shape', (c) => (c.kv_lora_rank = 8)),
      /"model\.layers\.0\.self_attn\.kv_a_proj_with_mqa\.weight" has shape \[24, 32\], .*config\.json implies \[16, 32\]/,
    );
  });

  test('q_lora_rank set where the checkpoint has q_proj', async () => {
    await expectOneLine(
      modelWith('no-q-lora', (c) => (c.q_lora_rank = null)),
      /q_proj\.weight/,
    );
  });
});

describe('a traced DeepSeek forward (CPU)', () => {
  test('MLA projections and the router are spans of their parts, inside their parents', async () => {
    const { loadRankEngine } = await import('../src/engine/rankEngine');
    const { LocalCommunicator } = await import('../src/comm/communicator');
    const spec = parseModelConfig(v2lite, 'lite.json');
    const engine = await loadRankEngine({ spec, randomSeed: 3, backend: 'cpu', deviceIndex: 0, comm: new LocalCommunicator() });
    try {
      const { measured } = await engine.runner.forward([[1, 2, 3, 4], [5, 6]], { trace: true });
      const ops = measured!;
      const inside = (child: string, parent: string) => {
        const kids = ops.filter((o) => o.name === child);
        expect(kids.length).toBeGreaterThan(0);
        for (const k of kids)
          expect(ops.some((p) => p.name === parent && p.layer === k.layer && p.startMs <= k.startMs && k.endMs <= p.endMs)).toBe(true);
      };
      for (const part of ['mla_q', 'mla_kv_a', 'mla_kv_b']) inside(part, 'qkv_proj');
      for (const part of ['router_gemm', 'router_topk']) inside(part, 'router');
      // Every span says how long the host took inside it and how far ahead of the device it was when it opened it,
      // counted from where the device waited most (0 there, never below).
      for (const o of ops) {
        expect(o.args.hostUs).toBeGreaterThanOrEqual(0);
        expect(o.args.aheadUs).toBeGreaterThanOrEqual(0);
        expect(o.args.aheadUs).toBeLessThan(60e6);
      }
      expect(Math.min(...ops.map((o) => Number(o.args.aheadUs)))).toBe(0);
    } finally {
      await engine.dispose();
    }
  });
});
