// Checkpoint: typed accessors over hand-made checkpoints whose every weight value encodes where it
// came from, so the expected bytes of each accessor are written down here directly.
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Checkpoint } from '../src/model/checkpoint';
import { SafetensorsWriter } from '../src/model/safetensorsWriter';

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'eps-ckpt-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

type Weights = Map<string, { shape: number[]; values: number[] }>;

async function writeCheckpoint(config: object, weights: Weights, dtype: 'f32' | 'bf16' = 'f32'): Promise<void> {
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  const specs = [...weights].map(([name, w]) => ({ name, dtype, shape: w.shape }));
  const writer = await SafetensorsWriter.create(path.join(dir, 'model.safetensors'), specs);
  for (const [name, w] of weights) {
    const f32 = new Float32Array(w.values);
    if (dtype === 'f32') {
      await writer.writeTensor(name, new Uint8Array(f32.buffer));
    } else {
      // bfloat16 = the top 16 bits of the float32 (the test values need no rounding)
      const u16 = new Uint16Array(new Uint32Array(f32.buffer).map((u) => u >>> 16));
      await writer.writeTensor(name, new Uint8Array(u16.buffer));
    }
  }
  await writer.close();
}

const floats = (bytes: Uint8Array): number[] => Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
const range = (n: number, f: (i: number) => number): number[] => Array.from({ length: n }, (_, i) => f(i));

// Tiny Mixtral: V 6, H 4, 1 layer, 2 heads of 2 (1 kv head), 3 experts of I = 3.
const E = 3;
const I = 3;
const H = 4;
const mixtralConfig = {
  model_type: 'mixtral',
  vocab_size: 6,
  hidden_size: H,
  intermediate_size: I,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  num_local_experts: E,
  num_experts_per_tok: 2,
  torch_dtype: 'float32',
};

/** Expert e's gate (w1), up (w3), down (w2) values: the value says expert, matrix, row and column. */
const gateOf = (e: number): number[] => range(I * H, (i) => 1000 * e + 100 + i);
const upOf = (e: number): number[] => range(I * H, (i) => 1000 * e + 200 + i);
const downOf = (e: number): number[] => range(H * I, (i) => 1000 * e + 300 + i);

function attentionAndNorms(): Weights {
  return new Map([
    ['model.embed_tokens.weight', { shape: [6, H], values: range(24, (i) => i) }],
    ['model.norm.weight', { shape: [H], values: [1, 2, 3, 4] }],
    ['model.layers.0.input_layernorm.weight', { shape: [H], values: [5, 6, 7, 8] }],
    ['model.layers.0.post_attention_layernorm.weight', { shape: [H], values: [9, 10, 11, 12] }],
    ['model.layers.0.self_attn.q_proj.weight', { shape: [4, H], values: range(16, (i) => 0.5 * i) }],
    ['model.layers.0.self_attn.k_proj.weight', { shape: [2, H], values: range(8, (i) => -i) }],
    ['model.layers.0.self_attn.v_proj.weight', { shape: [2, H], values: range(8, (i) => 2 * i) }],
    ['model.layers.0.self_attn.o_proj.weight', { shape: [H, 4], values: range(16, (i) => 3 * i) }],
  ]);
}

function perExpertMixtral(): Weights {
  const w = attentionAndNorms();
  w.set('lm_head.weight', { shape: [6, H], values: range(24, (i) => -i) });
  w.set('model.layers.0.block_sparse_moe.gate.weight', { shape: [E, H], values: range(12, (i) => i / 10) });
  for (let e = 0; e < E; e++) {
    w.set(`model.layers.0.block_sparse_moe.experts.${e}.w1.weight`, { shape: [I, H], values: gateOf(e) });
    w.set(`model.layers.0.block_sparse_moe.experts.${e}.w2.weight`, { shape: [H, I], values: downOf(e) });
    w.set(`model.layers.0.block_sparse_moe.experts.${e}.w3.weight`, { shape: [I, H], values: upOf(e) });
  }
  return w;
}

/** transformers 5's fused layout: gate_up_proj[e] = cat(w1_e, w3_e) rows, down_proj[e] = w2_e. */
function fusedMixtral(): Weights {
  const w = attentionAndNorms();
  w.set('lm_head.weight', { shape: [6, H], values: range(24, (i) => -i) });
  w.set('model.layers.0.mlp.gate.weight', { shape: [E, H], values: range(12, (i) => i / 10) });
  w.set('model.layers.0.mlp.experts.gate_up_proj', {
    shape: [E, 2 * I, H],
    values: range(E, (e) => e).flatMap((e) => [...gateOf(e), ...upOf(e)]),
  });
  w.set('model.layers.0.mlp.experts.down_proj', { shape: [E, H, I], values: range(E, (e) => e).flatMap(downOf) });
  return w;
}

describe('Checkpoint: Mixtral experts, per expert and fused', () => {
  test.each([
    ['per_expert', perExpertMixtral],
    ['fused', fusedMixtral],
  ] as const)('%s layout', async (layout, weights) => {
    await writeCheckpoint(mixtralConfig, weights());
    const ck = await Checkpoint.open(dir);
    try {
      await ck.verify();
      expect(ck.expertLayout(0)).toBe(layout);
      for (let e = 0; e < E; e++) {
        const gu = await ck.expertGateUp(0, e);
        expect(gu.dtype).toBe('f32');
        expect(gu.shape).toEqual([2 * I, H]);
        expect(floats(gu.bytes)).toEqual([...gateOf(e), ...upOf(e)]);
        const down = await ck.expertDown(0, e);
        expect(down.shape).toEqual([H, I]);
        expect(floats(down.bytes)).toEqual(downOf(e));
      }
      // A rank holding experts 1 and 2 reads them stacked.
      const gu12 = await ck.expertsGateUp(0, 1, 2);
      expect(gu12.shape).toEqual([2, 2 * I, H]);
      expect(floats(gu12.bytes)).toEqual([...gateOf(1), ...upOf(1), ...gateOf(2), ...upOf(2)]);
      const down12 = await ck.expertsDown(0, 1, 2);
      expect(down12.shape).toEqual([2, H, I]);
      expect(floats(down12.bytes)).toEqual([...downOf(1), ...downOf(2)]);

      const router = await ck.router(0);
      expect(router.shape).toEqual([E, H]);
      expect(floats(router.bytes)).toEqual(range(12, (i) => Math.fround(i / 10)));
      expect(floats((await ck.attnProj(0, 'k')).bytes)).toEqual(range(8, (i) => -i));
      expect((await ck.attnProj(0, 'o')).shape).toEqual([H, 4]);
      expect(await ck.attnBias(0, 'q')).toBeUndefined();
      expect(await ck.qNorm(0)).toBeUndefined();
      expect(floats((await ck.inputNorm(0)).bytes)).toEqual([5, 6, 7, 8]);
      expect(floats((await ck.postAttentionNorm(0)).bytes)).toEqual([9, 10, 11, 12]);
      expect(floats((await ck.finalNorm()).bytes)).toEqual([1, 2, 3, 4]);
      expect(ck.tiedLmHead).toBe(false);
      expect(floats((await ck.lmHead()).bytes)).toEqual(range(24, (i) => -i));
      await expect(ck.expertsGateUp(0, 2, 2)).rejects.toThrow(RangeError);
    } finally {
      await ck.close();
    }
  });

  test('lm_head absent: tied to the embedding', async () => {
    const w = perExpertMixtral();
    w.delete('lm_head.weight');
    await writeCheckpoint(mixtralConfig, w);
    const ck = await Checkpoint.open(dir);
    try {
      expect(ck.tiedLmHead).toBe(true);
      expect(floats((await ck.lmHead()).bytes)).toEqual(range(24, (i) => i));
    } finally {
      await ck.close();
    }
  });

  test('a weight whose shape disagrees with config.json names the tensor, file and shapes', async () => {
    await writeCheckpoint({ ...mixtralConfig, intermediate_size: 2 }, perExpertMixtral());
    const ck = await Checkpoint.open(dir);
    try {
      await expect(ck.expertGateUp(0, 0)).rejects.toMatchObject({
        code: 'CHECKPOINT_BAD_WEIGHT',
        message: expect.stringMatching(/model\.safetensors.*block_sparse_moe\.experts\.0\.w1\.weight.*\[3, 4\].*\[2, 4\]/),
      });
      await expect(ck.verify()).rejects.toMatchObject({ code: 'CHECKPOINT_BAD_WEIGHT' });
    } finally {
      await ck.close();
    }
  });

  test('a missing expert is named', async () => {
    const w = perExpertMixtral();
    w.delete('model.layers.0.block_sparse_moe.experts.2.w3.weight');
    await writeCheckpoint(mixtralConfig, w);
    const ck = await Checkpoint.open(dir);
    try {
      expect(floats((await ck.expertGateUp(0, 1)).bytes)).toEqual([...gateOf(1), ...upOf(1)]);
      await expect(ck.expertGateUp(0, 2)).rejects.toMatchObject({
        code: 'TENSOR_MISSING',
        message: expect.stringContaining('model.layers.0.block_sparse_moe.experts.2.w3.weight'),
      });
      await expect(ck.verify()).rejects.toMatchObject({ code: 'TENSOR_MISSING' });
    } finally {
      await ck.close();
    }
  });

  test('no experts at all names both layouts', async () => {
    const w = attentionAndNorms();
    w.set('model.layers.0.block_sparse_moe.gate.weight', { shape: [E, H], values: range(12, (i) => i) });
    await writeCheckpoint(mixtralConfig, w);
    const ck = await Checkpoint.open(dir);
    try {
      expect(() => ck.expertLayout(0)).toThrow(/gate_up_proj.*w1\.weight/);
    } finally {
      await ck.close();
    }
  });

  test('config.json without a dtype takes the checkpoint dtype', async () => {
    const { torch_dtype: _d, ...noDtype } = mixtralConfig;
    await writeCheckpoint(noDtype, perExpertMixtral(), 'bf16');
    const ck = await Checkpoint.open(dir);
    try {
      expect(ck.spec.dtype).toBe('bf16');
      const gu = await ck.expertGateUp(0, 1);
      expect(gu.dtype).toBe('bf16');
      expect(gu.bytes.length).toBe(2 * I * H * 2);
      // 1100 = 0x44898000 in float32: bfloat16 0x4489, little-endian.
      expect(Array.from(gu.bytes.subarray(0, 2))).toEqual([0x89, 0x44]);
    } finally {
      await ck.close();
    }
  });
});

describe('Checkpoint: Qwen2-MoE shared expert, dense layer, biases', () => {
  // 2 layers: layer 0 MoE (2 experts of I 2, shared expert of 3), layer 1 dense (intermediate 5).
  const config = {
    model_type: 'qwen2_moe',
    vocab_size: 6,
    hidden_size: H,
    intermediate_size: 5,
    moe_intermediate_size: 2,
    shared_expert_intermediate_size: 3,
    num_hidden_layers: 2,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    num_experts: 2,
    num_experts_per_tok: 1,
    mlp_only_layers: [1],
    tie_word_embeddings: true,
    torch_dtype: 'float32',
  };

  function weights(): Weights {
    const w: Weights = new Map([
      ['model.embed_tokens.weight', { shape: [6, H], values: range(24, (i) => i) }],
      ['model.norm.weight', { shape: [H], values: [1, 1, 1, 1] }],
    ]);
    for (let l = 0; l < 2; l++) {
      const p = `model.layers.${l}.`;
      w.set(`${p}input_layernorm.weight`, { shape: [H], values: [1, 1, 1, 1] });
      w.set(`${p}post_attention_layernorm.weight`, { shape: [H], values: [1, 1, 1, 1] });
      for (const proj of ['q', 'k', 'v']) {
        w.set(`${p}self_attn.${proj}_proj.weight`, { shape: [4, H], values: range(16, (i) => i) });
        w.set(`${p}self_attn.${proj}_proj.bias`, { shape: [4], values: range(4, (i) => 10 * l + i + (proj === 'k' ? 100 : 0)) });
      }
      w.set(`${p}self_attn.o_proj.weight`, { shape: [H, 4], values: range(16, (i) => i) });
    }
    const p0 = 'model.layers.0.mlp.';
    w.set(`${p0}gate.weight`, { shape: [2, H], values: range(8, (i) => i) });
    for (let e = 0; e < 2; e++) {
      w.set(`${p0}experts.${e}.gate_proj.weight`, { shape: [2, H], values: range(8, (i) => 100 * e + i) });
      w.set(`${p0}experts.${e}.up_proj.weight`, { shape: [2, H], values: range(8, (i) => 100 * e + 50 + i) });
      w.set(`${p0}experts.${e}.down_proj.weight`, { shape: [H, 2], values: range(8, (i) => -100 * e - i) });
    }
    w.set(`${p0}shared_expert.gate_proj.weight`, { shape: [3, H], values: range(12, (i) => 500 + i) });
    w.set(`${p0}shared_expert.up_proj.weight`, { shape: [3, H], values: range(12, (i) => 600 + i) });
    w.set(`${p0}shared_expert.down_proj.weight`, { shape: [H, 3], values: range(12, (i) => 700 + i) });
    w.set(`${p0}shared_expert_gate.weight`, { shape: [1, H], values: [0.1, 0.2, 0.3, 0.4] });
    const p1 = 'model.layers.1.mlp.';
    w.set(`${p1}gate_proj.weight`, { shape: [5, H], values: range(20, (i) => 800 + i) });
    w.set(`${p1}up_proj.weight`, { shape: [5, H], values: range(20, (i) => 900 + i) });
    w.set(`${p1}down_proj.weight`, { shape: [H, 5], values: range(20, (i) => -800 - i) });
    return w;
  }

  test('accessors', async () => {
    await writeCheckpoint(config, weights());
    const ck = await Checkpoint.open(dir);
    try {
      await ck.verify();
      expect(ck.spec.layers.map((l) => l.mlp)).toEqual(['moe', 'dense']);
      expect(floats((await ck.sharedExpertGateUp(0)).bytes)).toEqual([...range(12, (i) => 500 + i), ...range(12, (i) => 600 + i)]);
      expect((await ck.sharedExpertGateUp(0)).shape).toEqual([6, H]);
      expect(floats((await ck.sharedExpertDown(0)).bytes)).toEqual(range(12, (i) => 700 + i));
      expect(floats((await ck.sharedExpertGate(0)).bytes)).toEqual([0.1, 0.2, 0.3, 0.4].map(Math.fround));
      expect(floats((await ck.denseGateUp(1)).bytes)).toEqual([...range(20, (i) => 800 + i), ...range(20, (i) => 900 + i)]);
      expect((await ck.denseDown(1)).shape).toEqual([H, 5]);
      expect(floats((await ck.expertGateUp(0, 1)).bytes)).toEqual([...range(8, (i) => 100 + i), ...range(8, (i) => 150 + i)]);
      expect(floats((await ck.attnBias(1, 'k'))!.bytes)).toEqual([110, 111, 112, 113]);
      expect(await ck.attnBias(0, 'o')).toBeUndefined();
      expect(ck.tiedLmHead).toBe(true);
      expect((await ck.lmHead()).name).toBe('model.embed_tokens.weight');
      await expect(ck.denseGateUp(0)).rejects.toThrow(RangeError);
      await expect(ck.expertGateUp(1, 0)).rejects.toThrow(RangeError);
    } finally {
      await ck.close();
    }
  });
});
