// make-model: every tiny preset writes a checkpoint that reloads through parseModelConfig and
// Checkpoint; same seed, same bytes; layouts, shards and dtypes hold the same numbers.
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { bf16BitsToF32 } from '../src/model/bf16';
import { Checkpoint } from '../src/model/checkpoint';
import { parseModelConfig } from '../src/model/config';
import { makeModel, presetBytes, presetConfig } from '../src/model/makeModel';
import { listPresets } from '../src/model/presets';

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'eps-make-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

let n = 0;
const outDir = (): string => path.join(root, `m${n++}`);

const f32 = (b: Uint8Array): Float32Array => new Float32Array(b.buffer, b.byteOffset, b.length / 4);

function stats(v: Float32Array): { mean: number; std: number } {
  let s = 0;
  let s2 = 0;
  for (const x of v) {
    s += x;
    s2 += x * x;
  }
  const mean = s / v.length;
  return { mean, std: Math.sqrt(s2 / v.length - mean * mean) };
}

describe.each(['tiny-mixtral', 'tiny-qwen2-moe', 'tiny-qwen3-moe'])('preset %s', (preset) => {
  test('writes a checkpoint that reloads and verifies', async () => {
    const out = outDir();
    const progress: [number, number][] = [];
    const result = await makeModel({ preset, out, seed: 7 }, (done, total) => progress.push([done, total]));

    const config = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'));
    // transformers 5 spelling, with what AutoConfig needs.
    expect(typeof config.model_type).toBe('string');
    expect(config.architectures).toHaveLength(1);
    expect(config.dtype).toBe('float32');
    expect(config.rope_parameters.rope_type).toBe('default');
    expect(config.torch_dtype).toBeUndefined();
    expect(config.rope_theta).toBeUndefined();

    const ck = await Checkpoint.open(out);
    try {
      expect(ck.spec).toEqual(parseModelConfig(config, 'config.json'));
      expect(ck.spec).toEqual(result.spec);
      await ck.verify();
      expect(result.files).toEqual(['model.safetensors']);
      expect(progress[progress.length - 1]).toEqual([result.totalBytes, result.totalBytes]);
      expect(progress.every(([d], i) => i === 0 || d >= progress[i - 1][0])).toBe(true);
      const file = await fs.stat(path.join(out, 'model.safetensors'));
      expect(file.size).toBeGreaterThan(result.totalBytes);

      // Initialisation: q_proj ~ 1/sqrt(H), router wider (3/sqrt(H)), norms around 1.
      const H = ck.spec.hiddenSize;
      const q = stats(f32((await ck.attnProj(0, 'q')).bytes));
      expect(Math.abs(q.mean)).toBeLessThan(0.02);
      expect(q.std).toBeGreaterThan(0.93 / Math.sqrt(H));
      expect(q.std).toBeLessThan(1.07 / Math.sqrt(H));
      const moeLayer = ck.spec.layers.findIndex((l) => l.mlp === 'moe');
      const router = stats(f32((await ck.router(moeLayer)).bytes));
      expect(router.std).toBeGreaterThan(2.5 / Math.sqrt(H));
      const norm = stats(f32((await ck.inputNorm(0)).bytes));
      expect(Math.abs(norm.mean - 1)).toBeLessThan(0.05);
      expect(norm.std).toBeGreaterThan(0.05);
    } finally {
      await ck.close();
    }
  });
});

describe('makeModel', () => {
  test('same seed => same bytes; another seed => other bytes', async () => {
    const [a, b, c] = [outDir(), outDir(), outDir()];
    await makeModel({ preset: 'tiny', out: a, seed: 3 });
    await makeModel({ preset: 'tiny', out: b, seed: 3 });
    await makeModel({ preset: 'tiny', out: c, seed: 4 });
    const read = (d: string): Promise<Buffer> => fs.readFile(path.join(d, 'model.safetensors'));
    const [ba, bb, bc] = await Promise.all([read(a), read(b), read(c)]);
    expect(ba.equals(bb)).toBe(true);
    expect(ba.length).toBe(bc.length);
    expect(ba.equals(bc)).toBe(false);
  });

  test('fused and per-expert layouts hold the same experts; shards the same tensors', async () => {
    const perExpert = outDir();
    const fused = outDir();
    const sharded = outDir();
    await makeModel({ preset: 'tiny-qwen3-moe', out: perExpert, seed: 11 });
    await makeModel({ preset: 'tiny-qwen3-moe', out: fused, seed: 11, expertLayout: 'fused' });
    const progress: number[] = [];
    const r = await makeModel({ preset: 'tiny-qwen3-moe', out: sharded, seed: 11, maxShardBytes: 300_000 }, (d) => progress.push(d));
    expect(r.files.length).toBeGreaterThan(2);
    expect(r.files[0]).toBe(`model-00001-of-${String(r.files.length).padStart(5, '0')}.safetensors`);
    const index = JSON.parse(await fs.readFile(path.join(sharded, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(r.totalBytes);
    expect(progress[progress.length - 1]).toBe(r.totalBytes);

    const cks = await Promise.all([perExpert, fused, sharded].map((d) => Checkpoint.open(d)));
    try {
      const [p, f, s] = cks;
      await f.verify();
      await s.verify();
      expect(f.has('model.layers.0.mlp.experts.gate_up_proj')).toBe(true);
      expect(f.expertLayout(0)).toBe('fused');
      expect(p.expertLayout(0)).toBe('per_expert');
      const E = p.spec.moe.numExperts;
      for (let l = 0; l < p.spec.numLayers; l++) {
        const [pg, fg, sg] = await Promise.all(cks.map((c) => c.expertsGateUp(l, 0, E)));
        expect(Buffer.from(fg.bytes).equals(Buffer.from(pg.bytes))).toBe(true);
        expect(Buffer.from(sg.bytes).equals(Buffer.from(pg.bytes))).toBe(true);
        const [pd, fd] = await Promise.all([p.expertsDown(l, 0, E), f.expertsDown(l, 0, E)]);
        expect(Buffer.from(fd.bytes).equals(Buffer.from(pd.bytes))).toBe(true);
        const [pr, fr] = await Promise.all([p.router(l), f.router(l)]);
        expect(Buffer.from(fr.bytes).equals(Buffer.from(pr.bytes))).toBe(true);
      }
      // Tied preset: no lm_head tensor, the embedding serves.
      expect(p.has('lm_head.weight')).toBe(false);
      expect((await p.lmHead()).name).toBe('model.embed_tokens.weight');
    } finally {
      await Promise.all(cks.map((c) => c.close()));
    }
  });

  test('bf16 holds the f32 values rounded to bfloat16', async () => {
    const a = outDir();
    const b = outDir();
    await makeModel({ preset: 'tiny-mixtral', out: a, seed: 5 });
    await makeModel({ preset: 'tiny-mixtral', out: b, seed: 5, dtype: 'bf16' });
    const [fck, bck] = await Promise.all([Checkpoint.open(a), Checkpoint.open(b)]);
    try {
      expect(bck.spec.dtype).toBe('bf16');
      const fv = f32((await fck.expertGateUp(1, 6)).bytes);
      const bt = await bck.expertGateUp(1, 6);
      expect(bt.dtype).toBe('bf16');
      const bv = new Uint16Array(bt.bytes.buffer, bt.bytes.byteOffset, bt.bytes.length / 2);
      expect(bv.length).toBe(fv.length);
      for (let i = 0; i < fv.length; i++) {
        // nearest bfloat16: within half a bfloat16 ulp (2^-8 relative)
        expect(Math.abs(bf16BitsToF32(bv[i]) - fv[i])).toBeLessThanOrEqual(Math.abs(fv[i]) * 2 ** -8);
      }
    } finally {
      await Promise.all([fck.close(), bck.close()]);
    }
  });

  test('refuses a non-empty folder; force replaces stale shards', async () => {
    const out = outDir();
    await makeModel({ preset: 'tiny', out, maxShardBytes: 500_000 });
    await expect(makeModel({ preset: 'tiny', out })).rejects.toMatchObject({ code: 'MAKE_MODEL_OPTIONS' });
    await makeModel({ preset: 'tiny', out, force: true });
    expect((await fs.readdir(out)).sort()).toEqual(['config.json', 'model.safetensors']);
  });

  test('unknown preset lists the presets', async () => {
    await expect(makeModel({ preset: 'gpt-5', out: outDir() })).rejects.toMatchObject({
      code: 'PRESET_UNKNOWN',
      message: expect.stringMatching(/gpt-5.*tiny-mixtral.*qwen3-30b-a3b/),
    });
  });
});

describe('presets', () => {
  test('every preset is listed with a description and parses', () => {
    const names = listPresets().map((p) => p.name);
    expect(names).toEqual([
      'tiny',
      'tiny-mixtral',
      'tiny-qwen2-moe',
      'tiny-qwen3-moe',
      'mixtral-8x7b',
      'qwen3-30b-a3b',
      'deepseek-v2-lite',
      'deepseek-v2',
      'deepseek-v3',
      'dbrx',
    ]);
    for (const p of listPresets()) {
      expect(p.description.length).toBeGreaterThan(10);
      expect(() => parseModelConfig(presetConfig(p.name), p.name)).not.toThrow();
    }
  });

  // Parameter counts from the architecture: embed + lm_head + per layer (attention, 2 norms,
  // router, experts) + final norm; bf16 = 2 bytes each.
  test('mixtral-8x7b: 46.7B parameters in bf16', () => {
    const [V, H, L, I, E, kv] = [32000, 4096, 32, 14336, 8, 1024];
    const params = 2 * V * H + L * (2 * H * H + 2 * H * kv + 2 * H + E * H + E * 3 * H * I) + H;
    expect(params).toBe(46_702_792_704);
    expect(presetBytes('mixtral-8x7b')).toBe(2 * params);
    const spec = parseModelConfig(presetConfig('mixtral-8x7b'), 'preset');
    expect(spec.dtype).toBe('bf16');
  });

  test('qwen3-30b-a3b: 30.5B parameters in bf16', () => {
    const [V, H, L, I, E, hd, nh, nkv] = [151936, 2048, 48, 768, 128, 128, 32, 4];
    const attention = 2 * H * nh * hd + 2 * H * nkv * hd + 2 * hd;
    const params = 2 * V * H + L * (attention + 2 * H + E * H + E * 3 * H * I) + H;
    expect(presetBytes('qwen3-30b-a3b')).toBe(2 * params);
    expect(params / 1e9).toBeCloseTo(30.53, 2);
  });
});
