// Every op of native/ops.md on the CUDA backend against the same op on the CPU backend (the
// reference backend, itself tested against float64 in ops.cpu.test.ts), on the same fresh random
// inputs: relative L2 error <= 1e-2 for bf16 outputs, tighter for f32 ones, exact for integer
// outputs (routing, counts, row maps), copies and fill_random (bit for bit). Outputs start as NaN
// on both sides, so an element the GPU never writes fails the comparison. Edge shapes: 1 token,
// experts with no tokens, odd dims, sequences of 1 and of 8192 tokens.
//
// Skipped, saying why, where the addon has no CUDA backend (no GPU, or built without CUDA).
import { hasBackend } from '../src/native/addon';
import { Device, type Stream, type Tensor } from '../src/native/device';
import { f32ArrayToBf16 } from '../src/model/bf16';
import * as ops from '../src/native/ops';
import { projection } from '../src/engine/projection';
import { withEnv } from '../src/util/env';
import { Rng, encodeFloats, relL2, roundTo, type FloatStorage } from './reference/numeric';

function cudaPresent(): boolean {
  try {
    return hasBackend('cuda');
  } catch {
    return false;
  }
}

const haveCuda = cudaPresent();
const describeGpu = haveCuda ? describe : describe.skip;
if (!haveCuda) {
  console.log('gpu.ops: skipped: the addon has no CUDA backend here (built without CUDA, or no GPU visible)');
}

type Side = 'cpu' | 'gpu';
const SIDES: Side[] = ['cpu', 'gpu'];

/** One tensor on each backend, holding the same bytes. */
type Twin = Record<Side, Tensor>;

let dev: Record<Side, Device>;
let st: Record<Side, Stream>;
const made: Tensor[] = [];
const table: { name: string; error: number }[] = [];

function prod(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function twinOfBytes(dtype: FloatStorage | 'i32', shape: number[], bytes: ArrayBufferView): Twin {
  const t = {} as Twin;
  for (const side of SIDES) {
    t[side] = dev[side].tensor(dtype, shape);
    made.push(t[side]);
    t[side].upload(st[side], bytes);
  }
  return t;
}

/** A float twin holding `values` rounded to dtype, or NaN everywhere (an output) when omitted. */
function floats(dtype: FloatStorage, shape: number[], values?: ArrayLike<number>): Twin {
  const n = prod(shape);
  if (dtype === 'bf16') {
    // src/model/bf16.ts's rounding (tested in model.bf16.test.ts, the same round-to-nearest-even): the
    // reference's field-by-field one takes tens of seconds at the 8K-token attention cases' sizes.
    if (values && values.length !== n) throw new Error(`floats: ${values.length} values for shape [${shape}]`);
    const bits = new Uint16Array(n);
    if (values) f32ArrayToBf16(Float32Array.from(values), bits);
    else bits.fill(0x7fc0); // NaN
    return twinOfBytes(dtype, shape, bits);
  }
  const v = values ? Float64Array.from(values, (x) => roundTo(dtype, x)) : new Float64Array(n).fill(NaN);
  if (v.length !== n) throw new Error(`floats: ${v.length} values for shape [${shape}]`);
  return twinOfBytes(dtype, shape, encodeFloats(dtype, v));
}

function randomFloats(rng: Rng, dtype: FloatStorage, shape: number[], lo = -1, hi = 1): Twin {
  return floats(dtype, shape, rng.array(prod(shape), lo, hi));
}

/** An i32 twin holding `values`, or a poison pattern (an output) when omitted. */
function ints(shape: number[], values?: readonly number[]): Twin {
  const v = values ? Int32Array.from(values) : new Int32Array(prod(shape)).fill(-123456789);
  return twinOfBytes('i32', shape, v);
}

/** The rope's inverse frequencies for 2 * half rotary dims (theta 10000), as an f32 twin. */
function ropeInvFreq(half: number): Twin {
  return floats('f32', [half], Array.from({ length: half }, (_, i) => 1 / 10000 ** ((2 * i) / (2 * half))));
}

/** Enqueues the same op on both backends. */
function run(fn: (s: Stream, side: Side) => void): void {
  for (const side of SIDES) fn(st[side], side);
}

async function readBoth(t: Twin): Promise<Record<Side, Float32Array | Int32Array>> {
  return { cpu: await t.cpu.read(st.cpu), gpu: await t.gpu.read(st.gpu) };
}

function countNaN(v: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < v.length; i++) if (Number.isNaN(v[i])) n++;
  return n;
}

/** GPU vs CPU: no NaN the CPU has not got, and relative L2 error within `bound`. */
async function expectClose(name: string, t: Twin, bound: number, rows?: { count: number; width: number }): Promise<void> {
  let { cpu, gpu } = await readBoth(t);
  if (rows) {
    cpu = cpu.subarray(0, rows.count * rows.width);
    gpu = gpu.subarray(0, rows.count * rows.width);
  }
  expect(countNaN(gpu)).toBe(countNaN(cpu));
  const err = relL2(gpu, cpu);
  table.push({ name, error: err });
  expect(err).toBeLessThanOrEqual(bound);
}

async function expectSame(name: string, t: Twin, rows?: { count: number; width: number }): Promise<void> {
  let { cpu, gpu } = await readBoth(t);
  if (rows) {
    cpu = cpu.subarray(0, rows.count * rows.width);
    gpu = gpu.subarray(0, rows.count * rows.width);
  }
  table.push({ name, error: relL2(gpu, cpu) });
  expect(Array.from(gpu)).toEqual(Array.from(cpu));
}

async function expectSameBytes(name: string, t: Twin): Promise<void> {
  const cpu = new Uint8Array(await t.cpu.bytes(st.cpu));
  const gpu = new Uint8Array(await t.gpu.bytes(st.gpu));
  table.push({ name, error: 0 });
  expect(Buffer.compare(Buffer.from(gpu), Buffer.from(cpu))).toBe(0);
}

/** bf16 outputs get the contract's 1e-2; f32 outputs of bf16-free math a tighter bound. */
function bound(dtype: FloatStorage): number {
  return dtype === 'f32' ? 1e-5 : 1e-2;
}

describeGpu('CUDA ops vs the CPU backend', () => {
  beforeAll(() => {
    dev = { cpu: Device.open('cpu'), gpu: Device.open('cuda', 0) };
    st = { cpu: dev.cpu.stream(), gpu: dev.gpu.stream() };
  });
  afterEach(async () => {
    await Promise.all([st.cpu.synchronize(), st.gpu.synchronize()]);
    for (const t of made.splice(0)) t.dispose();
  });
  afterAll(() => {
    st.cpu.dispose();
    st.gpu.dispose();
    console.log(
      `CUDA vs CPU, relative L2 error per case (${dev.gpu.name}):\n` +
        table.map((r) => `  ${r.name.padEnd(58)} ${r.error.toExponential(2)}`).join('\n'),
    );
  });

  test('the CUDA backend has every op the CPU backend has', () => {
    expect([...dev.gpu.native.opNames()].sort()).toEqual([...dev.cpu.native.opNames()].sort());
  });

  test.each([
    ['bf16', 'bf16', 1000, 136, 77],
    ['f32', 'bf16', 50, 129, 1],
    ['bf16', 'f32', 7, 8, 33],
  ] as const)('embedding and gather_rows: table %s -> out %s, V=%d H=%d T=%d', async (tdt, odt, V, H, T) => {
    const rng = new Rng(11 + H);
    const tableT = randomFloats(rng, tdt, [V, H]);
    const ids = ints([T], rng.ints(T, 0, V));
    const out = floats(odt, [T, H]);
    const gathered = floats(odt, [T, H]);
    run((s, d) => {
      ops.embedding(s, out[d], tableT[d], ids[d]);
      ops.gatherRows(s, gathered[d], tableT[d], ids[d]);
    });
    await expectSame(`embedding ${tdt}->${odt} [${T},${H}]`, out);
    await expectSame(`gather_rows ${tdt}->${odt} [${T},${H}]`, gathered);
  });

  test.each([
    ['bf16', 37, 4096],
    ['bf16', 3, 5120],
    ['bf16', 2, 8200],
    ['bf16', 1000, 128],
    ['bf16', 1, 129],
    ['f32', 5, 2049],
    ['f16', 3, 64],
  ] as const)('rmsnorm %s, %d rows of %d', async (dt, rows, H) => {
    const rng = new Rng(rows * 7 + H);
    const x = randomFloats(rng, dt, [rows, H], -2, 2);
    const w = randomFloats(rng, dt, [H], 0.5, 1.5);
    const out = floats(dt, [rows, H]);
    run((s, d) => ops.rmsnorm(s, out[d], x[d], w[d], 1e-6));
    await expectClose(`rmsnorm ${dt} [${rows},${H}]`, out, bound(dt));
    // In place (out = x), as the engine's q/k norms run.
    run((s, d) => ops.rmsnorm(s, x[d], x[d], w[d], 1e-5));
    await expectClose(`rmsnorm ${dt} [${rows},${H}] in place`, x, bound(dt));
  });

  // rmsnorm with a residual (x += residual, then the norm of the sum): x and out against the CPU, and on the GPU
  // bit for bit against add then rmsnorm. Shapes: Qwen3's hidden 2048 (the warp kernel), 4096 and 8200 (the block
  // kernel, and a row not a multiple of 8: the add kernel, then the scalar one), f32.
  test.each([
    ['bf16', 37, 2048],
    ['bf16', 5, 4096],
    ['bf16', 3, 8200],
    ['bf16', 1, 1024],
    ['f32', 5, 2049],
  ] as const)('rmsnorm with residual %s, %d rows of %d', async (dt, rows, H) => {
    const rng = new Rng(rows * 11 + H);
    const values = rng.array(rows * H, -2, 2);
    const [x, x2] = [floats(dt, [rows, H], values), floats(dt, [rows, H], values)];
    const r = randomFloats(rng, dt, [rows, H], -2, 2);
    const w = randomFloats(rng, dt, [H], 0.5, 1.5);
    const [out, out2] = [floats(dt, [rows, H]), floats(dt, [rows, H])];
    run((s, d) => {
      ops.rmsnorm(s, out[d], x[d], w[d], 1e-6, r[d]);
      ops.add(s, x2[d], x2[d], r[d]);
      ops.rmsnorm(s, out2[d], x2[d], w[d], 1e-6);
    });
    await expectClose(`rmsnorm+residual ${dt} [${rows},${H}]: x`, x, bound(dt));
    await expectClose(`rmsnorm+residual ${dt} [${rows},${H}]: out`, out, bound(dt));
    expect(Array.from(await x.gpu.read(st.gpu))).toEqual(Array.from(await x2.gpu.read(st.gpu)));
    expect(Array.from(await out.gpu.read(st.gpu))).toEqual(Array.from(await out2.gpu.read(st.gpu)));
  });

  test.each([
    ['bf16', 37, 6144],
    ['bf16', 1000, 128],
    ['bf16', 1, 129],
    ['f32', 5, 2049],
    ['f16', 3, 64],
  ] as const)('layernorm %s, %d rows of %d (DBRX)', async (dt, rows, H) => {
    const rng = new Rng(rows * 11 + H);
    const x = randomFloats(rng, dt, [rows, H], 1, 5);
    const w = randomFloats(rng, dt, [H], 0.5, 1.5);
    const out = floats(dt, [rows, H]);
    run((s, d) => ops.layernorm(s, out[d], x[d], w[d], 1e-5));
    await expectClose(`layernorm ${dt} [${rows},${H}]`, out, bound(dt));
    run((s, d) => ops.layernorm(s, x[d], x[d], w[d], 1e-5));
    await expectClose(`layernorm ${dt} [${rows},${H}] in place`, x, bound(dt));
  });

  test.each([
    ['bf16', 4096 * 3 + 5],
    ['f32', 1001],
  ] as const)('clamp %s, %d elements (DBRX clip_qkv), in place too', async (dt, n) => {
    const rng = new Rng(n);
    const x = randomFloats(rng, dt, [n], -16, 16);
    const out = floats(dt, [n]);
    run((s, d) => ops.clamp(s, out[d], x[d], -8, 8));
    await expectSame(`clamp ${dt} [${n}]`, out);
    run((s, d) => ops.clamp(s, x[d], x[d], -1.5, 0.25));
    await expectSame(`clamp ${dt} [${n}] in place`, x);
  });

  test.each([
    ['bf16', 50, 4, 128, 64],
    ['bf16', 1, 2, 64, 32],
    ['f32', 9, 3, 24, 12],
    // Qwen3-like (32 heads), partial rotary, DeepSeek's rope of 64 of 192 dims, f16.
    ['bf16', 37, 32, 128, 64],
    ['bf16', 20, 5, 128, 32],
    ['bf16', 33, 3, 192, 32],
    ['f16', 7, 7, 96, 48],
  ] as const)('rope %s T=%d nh=%d hd=%d rd/2=%d', async (dt, T, nh, hd, half) => {
    const rng = new Rng(T + nh + hd);
    const x = randomFloats(rng, dt, [T, nh, hd]);
    const positions = ints([T], rng.ints(T, 0, 8192));
    const invFreq = ropeInvFreq(half);
    run((s, d) => ops.rope(s, x[d], positions[d], invFreq[d], 1.0));
    await expectClose(`rope ${dt} [${T},${nh},${hd}] rd=${2 * half}`, x, dt === 'f32' ? 1e-5 : 1e-2);
  });

  // rope with the per-head RMSNorm (Qwen3's q/k norm): against the CPU, and on the GPU bit for bit against
  // rmsnorm then rope (the fused bf16 kernel must be the two-kernel path in one pass). Shapes: Qwen3's q
  // (32 heads of 128, two heads per warp) and k (4), head dim 64 (four per warp), 256, partial rotary,
  // an odd head count, rd/2 = 4 and f32 (the two-kernel path), one token.
  test.each([
    ['bf16', 37, 32, 128, 64],
    ['bf16', 37, 4, 128, 64],
    ['bf16', 19, 7, 64, 32],
    ['bf16', 5, 3, 256, 128],
    ['bf16', 11, 5, 128, 16],
    ['bf16', 1, 1, 128, 64],
    ['bf16', 6, 3, 16, 4],
    ['f32', 9, 3, 24, 12],
  ] as const)('rope with q/k norm %s T=%d nh=%d hd=%d rd/2=%d', async (dt, T, nh, hd, half) => {
    const rng = new Rng(7 * T + nh + hd + half);
    const values = rng.array(T * nh * hd, -3, 3);
    const x = floats(dt, [T, nh, hd], values);
    const twoPass = floats(dt, [T, nh, hd], values);
    const w = randomFloats(rng, dt, [hd], 0.5, 1.5);
    const positions = ints([T], rng.ints(T, 0, 8192));
    const invFreq = ropeInvFreq(half);
    run((s, d) => {
      ops.rope(s, x[d], positions[d], invFreq[d], 1.25, { weight: w[d], eps: 1e-6 });
      const heads = twoPass[d].reshape([T * nh, hd]);
      ops.rmsnorm(s, heads, heads, w[d], 1e-6);
      ops.rope(s, twoPass[d], positions[d], invFreq[d], 1.25);
    });
    await expectClose(`rope+norm ${dt} [${T},${nh},${hd}] rd=${2 * half}`, x, dt === 'f32' ? 1e-5 : 1e-2);
    const [fused, separate] = [await x.gpu.read(st.gpu), await twoPass.gpu.read(st.gpu)];
    expect(Array.from(fused)).toEqual(Array.from(separate));
  });

  // Partial rotary without the norm (MLA's q: 16 heads, 64 of 192 dims): the fused kernel reads and writes only the
  // rotated dims, so the others must keep their bits; the rotated ones match the CPU.
  test('rope of 64 of 192 dims leaves the other 128 of every head as they were, bit for bit', async () => {
    const [T, nh, hd, half] = [41, 16, 192, 32];
    const rng = new Rng(4242);
    const x = randomFloats(rng, 'bf16', [T, nh, hd], -3, 3);
    const before = await x.gpu.read(st.gpu);
    const positions = ints([T], rng.ints(T, 0, 8192));
    const invFreq = ropeInvFreq(half);
    run((s, d) => ops.rope(s, x[d], positions[d], invFreq[d], 1.0));
    await expectClose(`rope bf16 [${T},${nh},${hd}] rd=${2 * half}`, x, 1e-2);
    const after = await x.gpu.read(st.gpu);
    let changed = 0;
    let moved = 0;
    for (let r = 0; r < T * nh; r++) {
      for (let c = 0; c < hd; c++) {
        const i = r * hd + c;
        if (after[i] === before[i]) continue;
        if (c >= 2 * half) moved++;
        else changed++;
      }
    }
    expect(moved).toBe(0);
    expect(changed).toBeGreaterThan(T * nh * half); // the rotated dims did move
  });

  test.each([
    ['fast path hd=128, GQA 8/2, mixed lengths', 'bf16', [1, 64, 65, 0, 200, 3], 8, 2, 128],
    ['fast path hd=64, MHA', 'bf16', [130, 1], 4, 4, 64],
    ['fast path hd=128, 128-row tile edges', 'bf16', [127, 128, 129, 1, 300], 4, 4, 128],
    ['fast path hd=64, GQA 6/3, tile edges', 'bf16', [257, 2, 64], 6, 3, 64],
    ['fallback f32 hd=40', 'f32', [17, 1, 40], 4, 2, 40],
    ['fallback bf16 odd hd=24', 'bf16', [33], 3, 1, 24],
    // Head dim 256 (issue 13's largest; Gemma-class models) takes the generic kernel, packed and GQA.
    ['generic bf16 hd=256, GQA 4/2, packed', 'bf16', [129, 1, 300, 64], 4, 2, 256],
  ] as const)('attention %s', async (label, dt, lens, nq, nkv, hd) => {
    const rng = new Rng(nq * 13 + hd);
    const T = lens.reduce((a: number, b: number) => a + b, 0);
    const cu = [0];
    for (const l of lens) cu.push(cu[cu.length - 1] + l);
    const q = randomFloats(rng, dt, [T, nq, hd]);
    const k = randomFloats(rng, dt, [T, nkv, hd]);
    const v = randomFloats(rng, dt, [T, nkv, hd]);
    const cuT = ints([cu.length], cu);
    const out = floats(dt, [T, nq, hd]);
    run((s, d) => ops.attention(s, out[d], q[d], k[d], v[d], cuT[d], cu, 1 / Math.sqrt(hd)));
    await expectClose(`attention ${label} T=${T}`, out, dt === 'f32' ? 1e-5 : 1e-2);
  });

  // MLA: value head dim != query/key head dim. bf16 192/128 (DeepSeek-V2/V3, nq == nkv after the
  // kv expansion) takes the flash path, whose 192/128 instance walks keys in 32-key tiles: lengths
  // around 32 and 128 cross its key-tile and query-tile edges.
  test.each([
    ['MLA fast path bf16 hd=192 hdv=128 (DeepSeek)', 'bf16', [130, 1, 64], 4, 4, 192, 128],
    ['MLA fast path bf16 hd=192 hdv=128, tile edges', 'bf16', [31, 32, 33, 0, 127, 128, 129, 1, 300, 65], 3, 3, 192, 128],
    ['MLA fast path bf16 hd=192 hdv=128, GQA 4/2', 'bf16', [96, 161, 2], 4, 2, 192, 128],
    ['MLA f32 hd=24 hdv=16', 'f32', [17, 5], 2, 2, 24, 16],
    ['MLA bf16 hd=128 hdv=64 (not the fast path)', 'bf16', [33], 2, 2, 128, 64],
    ['MLA bf16 hd=192 hdv=192 (not the fast path)', 'bf16', [40, 9], 2, 2, 192, 192],
  ] as const)('attention %s', async (label, dt, lens, nq, nkv, hd, hdv) => {
    const rng = new Rng(nq * 17 + nkv + hd + hdv);
    const T = lens.reduce((a: number, b: number) => a + b, 0);
    const cu = [0];
    for (const l of lens) cu.push(cu[cu.length - 1] + l);
    const q = randomFloats(rng, dt, [T, nq, hd]);
    const k = randomFloats(rng, dt, [T, nkv, hd]);
    const v = randomFloats(rng, dt, [T, nkv, hdv]);
    const cuT = ints([cu.length], cu);
    const out = floats(dt, [T, nq, hdv]);
    run((s, d) => ops.attention(s, out[d], q[d], k[d], v[d], cuT[d], cu, 1 / Math.sqrt(hd)));
    await expectClose(`attention ${label} T=${T}`, out, dt === 'f32' ? 1e-5 : 1e-2);
  });

  // The Hopper kernel (native/cuda/attention_sm90.cu; EPS_ATTENTION_KERNEL=sm90, where the device runs
  // it) and the sm_80 kernels (EPS_ATTENTION_KERNEL=sm80) on the same inputs, both against one CPU run:
  // packed lengths from 1 to 8K around the 128-row query tiles and 128-key blocks, every head dim pair
  // of the fast path, GQA and MHA. Both outputs start as NaN, so every element must be written. Besides
  // relative L2, each output row's argmax over the head dim must match the CPU's in >= 99% of rows (a
  // near tie may round either way in bf16).
  /** Packed bf16 attention inputs for the Hopper cases: q wider than k so the softmax has peaks. */
  function hopperAttentionInputs(seed: number, lens: readonly number[], nq: number, nkv: number, hd: number, hdv: number) {
    const rng = new Rng(seed);
    const T = lens.reduce((a, b) => a + b, 0);
    const cu = [0];
    for (const l of lens) cu.push(cu[cu.length - 1] + l);
    return {
      T,
      cu,
      q: randomFloats(rng, 'bf16', [T, nq, hd], -2, 2),
      k: randomFloats(rng, 'bf16', [T, nkv, hd]),
      v: randomFloats(rng, 'bf16', [T, nkv, hdv]),
      cuT: ints([cu.length], cu),
      scale: 1 / Math.sqrt(hd),
    };
  }

  test('the Hopper attention kernel exists on Hopper (compute capability 9.0) and only there', () => {
    // Without this the cases below would compare the sm_80 kernel with itself where the sm_90a build is missing.
    const hopper = /\b(H100|H200|H800|H20|GH200)\b/.test(dev.gpu.name);
    expect(dev.cpu.native.attentionKernels).toEqual(['reference']);
    expect(dev.gpu.native.attentionKernels).toEqual(hopper ? ['sm80', 'sm90'] : ['sm80']);
  });

  test.each([
    ['hd=128, GQA 2/1', [1, 127, 128, 129, 8192, 300, 2], 2, 1, 128, 128],
    ['hd=128, MHA 3/3', [129, 1, 1000, 256, 255], 3, 3, 128, 128],
    ['hd=64, GQA 2/1', [8192, 1, 127, 129, 64], 2, 1, 64, 64],
    ['hd=64, MHA 4/4', [300, 1, 128, 2], 4, 4, 64, 64],
    ['hd=192 hdv=128, MHA 1/1', [8192, 1, 127, 128, 129], 1, 1, 192, 128],
    ['hd=192 hdv=128, GQA 4/2', [700, 129, 1, 300], 4, 2, 192, 128],
  ] as const)('attention, Hopper and sm_80 kernels, %s, lengths %j', async (label, lens, nq, nkv, hd, hdv) => {
    const { T, cu, q, k, v, cuT, scale } = hopperAttentionInputs(nq * 31 + nkv + hd + hdv, lens, nq, nkv, hd, hdv);
    const outs = { sm90: floats('bf16', [T, nq, hdv]), sm80: floats('bf16', [T, nq, hdv]) };
    for (const kernel of ['sm90', 'sm80'] as const) {
      await withEnv({ EPS_ATTENTION_KERNEL: kernel }, async () => {
        ops.attention(st.gpu, outs[kernel].gpu, q.gpu, k.gpu, v.gpu, cuT.gpu, cu, scale);
        await st.gpu.synchronize();
      });
    }
    ops.attention(st.cpu, outs.sm90.cpu, q.cpu, k.cpu, v.cpu, cuT.cpu, cu, scale);
    const cpu = await outs.sm90.cpu.read(st.cpu);
    for (const kernel of ['sm90', 'sm80'] as const) {
      const gpu = await outs[kernel].gpu.read(st.gpu);
      expect(countNaN(gpu)).toBe(0);
      const err = relL2(gpu, cpu);
      table.push({ name: `attention ${kernel} ${label} T=${T}`, error: err });
      expect(err).toBeLessThanOrEqual(1e-2);
      let agree = 0;
      for (let r = 0; r < T * nq; r++) {
        let a = 0,
          b = 0;
        for (let d = 1; d < hdv; d++) {
          if (gpu[r * hdv + d] > gpu[r * hdv + a]) a = d;
          if (cpu[r * hdv + d] > cpu[r * hdv + b]) b = d;
        }
        if (a === b) agree++;
      }
      expect(agree / (T * nq)).toBeGreaterThanOrEqual(0.99);
    }
  });

  // The Hopper kernel's other schedules and grid orders, as the op runs them when asked
  // (EPS_ATTENTION_SM90_MODE 0-7, EPS_ATTENTION_SM90_GRID heads / tile / a head count per group: measurement
  // knobs, so that a faster variant can become the default), each against the CPU. A group of 3 heads leaves
  // a last group of fewer; MHA 20/20 takes groups of 16 and 4 by default. Where the GPU has no sm90 kernel
  // there is nothing to vary.
  const sm90Variants: Record<string, string>[] = [
    ...[0, 1, 2, 3, 4, 5, 6, 7].map((mode) => ({ EPS_ATTENTION_SM90_MODE: String(mode) })),
    ...['heads', 'tile', '3'].map((grid) => ({ EPS_ATTENTION_SM90_GRID: grid })),
  ];
  test.each([
    ['hd=128, GQA 4/2', [700, 129, 1, 300], 4, 2, 128, 128],
    ['hd=64, MHA 2/2', [513, 1, 128, 64], 2, 2, 64, 64],
    ['hd=192 hdv=128, GQA 4/2', [700, 129, 1, 300], 4, 2, 192, 128],
    ['hd=192 hdv=128, MHA 20/20', [300, 129, 1], 20, 20, 192, 128],
  ] as const)('attention, every Hopper schedule and grid order, %s, lengths %j', async (label, lens, nq, nkv, hd, hdv) => {
    if (!dev.gpu.native.attentionKernels?.includes('sm90')) return;
    const { T, cu, q, k, v, cuT, scale } = hopperAttentionInputs(nq * 37 + nkv + hd + hdv, lens, nq, nkv, hd, hdv);
    const ref = floats('bf16', [T, nq, hdv]);
    ops.attention(st.cpu, ref.cpu, q.cpu, k.cpu, v.cpu, cuT.cpu, cu, scale);
    const cpu = await ref.cpu.read(st.cpu);
    for (const variant of sm90Variants) {
      const out = floats('bf16', [T, nq, hdv]);
      await withEnv({ EPS_ATTENTION_KERNEL: 'sm90', ...variant }, async () => {
        ops.attention(st.gpu, out.gpu, q.gpu, k.gpu, v.gpu, cuT.gpu, cu, scale);
        await st.gpu.synchronize();
      });
      const gpu = await out.gpu.read(st.gpu);
      const name = `attention sm90 ${JSON.stringify(variant)} ${label} T=${T}`;
      expect([name, countNaN(gpu)]).toEqual([name, 0]);
      const err = relL2(gpu, cpu);
      table.push({ name, error: err });
      expect([name, err <= 1e-2]).toEqual([name, true]);
    }
  });

  test.each([
    ['f32', 3, 5, 7, 4, 1, 3, 2],
    ['bf16', 64, 192, 192, 0, 0, 64, 16],
    ['bf16', 1024, 256, 192, 64, 0, 128, 1],
    // (the two above take the 16-byte-chunk kernel; this one's offsets are not whole chunks: the element-wise one)
    ['bf16', 33, 20, 24, 4, 8, 12, 3],
  ] as const)('copy_cols %s Rx=%d Nx=%d No=%d dst=%d src=%d width=%d rep=%d', async (dt, Rx, Nx, No, dst, src, width, rep) => {
    const rng = new Rng(Rx + Nx + width);
    const x = randomFloats(rng, dt, [Rx, Nx]);
    const out = randomFloats(rng, dt, [Rx * rep, No]);
    run((s, d) => ops.copyCols(s, out[d], x[d], dst, src, width, rep));
    await expectClose(`copy_cols ${dt}`, out, 0);
  });

  test.each([
    ['f32', 100, 64, 6, 'softmax', 'group_limited_greedy', 8, 3, false, false],
    ['bf16', 57, 160, 6, 'softmax', 'group_limited_greedy', 8, 3, false, true],
    ['f32', 100, 256, 8, 'sigmoid', 'noaux_tc', 8, 4, true, false],
    ['bf16', 33, 64, 8, 'sigmoid', 'noaux_tc', 8, 4, true, true],
    ['f32', 20, 16, 4, 'sigmoid', 'noaux_tc', 4, 2, true, false],
  ] as const)(
    'router %s T=%d E=%d k=%d %s %s groups=%d topkGroup=%d bias=%s expertGroup=%s',
    async (dt, T, E, k, scoring, method, groups, topkGroup, withBias, permuted) => {
      const rng = new Rng(T * E + k + groups);
      const logits = randomFloats(rng, dt, [T, E], -3, 3);
      const bias = withBias ? floats('f32', [E], rng.array(E, -0.3, 0.3)) : undefined;
      const expertGroup = permuted ? Array.from({ length: E }, (_, e) => Math.floor(((e * 5) % E) / (E / groups))) : undefined;
      const idx = ints([T, k]);
      const w = floats('f32', [T, k]);
      const renormalize = scoring === 'sigmoid';
      run((s, d) =>
        ops.router(s, idx[d], w[d], logits[d], k, renormalize, 2.5, { scoring, method, groups, topkGroup, bias: bias?.[d], expertGroup }),
      );
      await expectSame(`router ${dt} ${method} E=${E} k=${k}: indices`, idx);
      await expectClose(`router ${dt} ${method} E=${E} k=${k}: weights`, w, 1e-5);
    },
  );

  test('attention over one sequence of 8192 tokens (bf16, hd=128, GQA 2/1)', async () => {
    const rng = new Rng(8192);
    const T = 8192,
      nq = 2,
      nkv = 1,
      hd = 128;
    const q = randomFloats(rng, 'bf16', [T, nq, hd], -2, 2);
    const k = randomFloats(rng, 'bf16', [T, nkv, hd], -2, 2);
    const v = randomFloats(rng, 'bf16', [T, nkv, hd]);
    const cu = [0, T];
    const cuT = ints([2], cu);
    const out = floats('bf16', [T, nq, hd]);
    run((s, d) => ops.attention(s, out[d], q[d], k[d], v[d], cuT[d], cu, 1 / Math.sqrt(hd)));
    await expectClose('attention 1 x 8192 tokens hd=128', out, 1e-2);
  });

  test('attention MLA over two packed sequences of ~2048 tokens (bf16, hd=192, hdv=128, MHA 4/4)', async () => {
    const rng = new Rng(4089);
    const lens = [2048, 2041];
    const T = lens[0] + lens[1],
      nq = 4,
      nkv = 4,
      hd = 192,
      hdv = 128;
    const q = randomFloats(rng, 'bf16', [T, nq, hd], -2, 2);
    const k = randomFloats(rng, 'bf16', [T, nkv, hd], -2, 2);
    const v = randomFloats(rng, 'bf16', [T, nkv, hdv]);
    const cu = [0, lens[0], T];
    const cuT = ints([3], cu);
    const out = floats('bf16', [T, nq, hdv]);
    run((s, d) => ops.attention(s, out[d], q[d], k[d], v[d], cuT[d], cu, 1 / Math.sqrt(hd)));
    await expectClose('attention MLA 2048 + 2041 tokens hd=192 hdv=128', out, 1e-2);
  });

  // MLA's shared rope key (kShared): the sm_90a kernel reads it through its own tensor map, the sm_80 and generic
  // kernels get whole keys assembled in scratch first; each against the CPU, which assembles them in fp32.
  test.each([
    ['bf16, sm90 kernel', 'bf16', 'sm90'],
    ['bf16, sm80 kernel', 'bf16', 'sm80'],
    ['f32, generic kernel', 'f32', 'sm90'],
  ] as const)('attention with a shared rope key (MLA kShared, hd = 64 + 128, hdv=128), %s', async (label, dt, kernel) => {
    const rng = new Rng(4093);
    const lens = [700, 129, 1, 300];
    const T = lens.reduce((a, b) => a + b, 0);
    const cu = [0];
    for (const l of lens) cu.push(cu[cu.length - 1] + l);
    const cuT = ints([cu.length], cu);
    const nq = 4;
    const q = randomFloats(rng, dt, [T, nq, 192], -2, 2);
    const kShared = randomFloats(rng, dt, [T, 64], -2, 2);
    const k = randomFloats(rng, dt, [T, nq, 128], -2, 2);
    const v = randomFloats(rng, dt, [T, nq, 128]);
    const out = floats(dt, [T, nq, 128]);
    await withEnv({ EPS_ATTENTION_KERNEL: kernel }, async () => {
      run((s, d) => ops.attention(s, out[d], q[d], k[d], v[d], cuT[d], cu, 1 / Math.sqrt(192), kShared[d]));
    });
    await expectClose(`attention kShared ${label} T=${T}`, out, dt === 'f32' ? 1e-5 : 1e-2);
  });

  test.each([
    ['bf16 -> bf16', 'bf16', 'bf16', 'bf16', 1, 1000, 4096, false],
    ['bf16 -> f32 with bias', 'bf16', 'bf16', 'f32', 77, 65, 129, true],
    ['bf16 -> bf16 with bias', 'bf16', 'bf16', 'bf16', 64, 256, 512, true],
    ['f32 -> f32', 'f32', 'f32', 'f32', 33, 17, 96, false],
    ['mixed: a f32, w bf16 -> f16', 'f32', 'bf16', 'f16', 5, 40, 64, true],
  ] as const)('matmul %s (a %s, w %s, out %s, M=%d N=%d K=%d)', async (label, adt, wdt, odt, M, N, K, withBias) => {
    const rng = new Rng(M * 31 + N + K);
    const a = randomFloats(rng, adt, [M, K]);
    const w = randomFloats(rng, wdt, [N, K], -0.1, 0.1);
    const bias = withBias ? randomFloats(rng, 'bf16', [N]) : undefined;
    const out = floats(odt, [M, N]);
    run((s, d) => ops.matmul(s, out[d], a[d], w[d], bias?.[d]));
    await expectClose(`matmul ${label} [${M},${N},${K}]`, out, odt === 'f32' && adt === 'f32' ? 1e-5 : 1e-2);
  });

  // engine/projection.ts: with EPS_PROJ_KERNEL=grouped_sm90 the attention projections go through the Hopper grouped
  // GEMM as one expert where it takes them (and through cuBLAS otherwise): the same products as the CPU's matmul.
  test.each([
    ['MLA kv_a-like', 257, 576, 2048, false, 0],
    ['a row block of w (kv_b-like view)', 130, 256, 512, false, 256],
    ['with bias: cuBLAS', 64, 256, 512, true, 0],
    ['N not a multiple of 8: cuBLAS', 33, 100, 64, false, 0],
  ] as const)('projection under EPS_PROJ_KERNEL=grouped_sm90: %s (M=%d N=%d K=%d)', async (label, M, N, K, withBias, rowOffset) => {
    const rng = new Rng(M * 7 + N + K);
    const a = randomFloats(rng, 'bf16', [M, K]);
    const w = randomFloats(rng, 'bf16', [rowOffset + N, K], -0.1, 0.1);
    const bias = withBias ? randomFloats(rng, 'bf16', [N]) : undefined;
    const out = floats('bf16', [M, N]);
    await withEnv({ EPS_PROJ_KERNEL: 'grouped_sm90' }, async () => {
      run((s, d) => projection(s, out[d], a[d], w[d].rows(rowOffset, N), bias?.[d]));
      await expectClose(`projection ${label} [${M},${N},${K}]`, out, 1e-2);
    });
  });

  test.each([
    ['E=8, zero-count experts', 'bf16', 8, [0, 5, 0, 0, 130, 1, 0, 64], 96, 64],
    ['E=4, two ranks of segments (S=2E)', 'bf16', 4, [3, 0, 17, 1, 0, 0, 40, 2], 80, 128],
    ['E=3, odd dims, f32', 'f32', 3, [7, 1, 2], 33, 19],
    ['E=4, all rows to one expert', 'bf16', 4, [0, 0, 300, 0], 64, 256],
    ['E=2, one row', 'bf16', 2, [0, 1], 128, 64],
  ] as const)('expert_matmul %s, grouped and dense', async (label, dt, E, counts, N, K) => {
    const rng = new Rng(E * 101 + N + K);
    const R = counts.reduce((x: number, y: number) => x + y, 0);
    const a = randomFloats(rng, dt, [R, K]);
    const w = randomFloats(rng, dt, [E, N, K], -0.1, 0.1);
    for (const kernel of ['grouped', 'dense'] as const) {
      const out = floats(dt, [R, N]);
      run((s, d) => ops.expertMatmul(s, out[d], a[d], w[d], counts, kernel));
      await expectClose(`expert_matmul ${kernel} ${label}`, out, bound(dt));
    }
  });

  // grouped_sm90, the Hopper kernel (native/cuda/grouped_gemm_sm90.cu), where the device runs it (compute
  // capability 9.0, the sm_90a image built); elsewhere, and for what it does not take (not bf16, N or K
  // not a multiple of 8), it must run as grouped: the same result either way. Random inputs never zero
  // (|x| in [0.05, 1]), outputs poisoned with NaN on both sides: every row must be written.
  describe('expert_matmul grouped_sm90', () => {
    const nonZero = (rng: Rng, n: number, scale: number) =>
      Array.from({ length: n }, () => (rng.next() < 0.5 ? -1 : 1) * scale * (0.05 + 0.95 * rng.next()));
    /** Where the kernel runs as itself on this GPU (the rest runs as grouped). */
    const native = () => ops.expertKernelsOf(dev.gpu).includes('grouped_sm90');
    const zipf = (rng: Rng, E: number, mean: number) => {
      const weights = Array.from({ length: E }, (_, i) => 1 / (i + 1) ** 1.2);
      const total = weights.reduce((a, b) => a + b, 0);
      const counts = weights.map((w) => Math.floor((w / total) * E * mean));
      for (let i = E - 1; i > 0; i--) {
        const j = rng.int(0, i + 1);
        [counts[i], counts[j]] = [counts[j], counts[i]];
      }
      return counts;
    };

    test('runs as itself on Hopper (compute capability 9.0) and only there', () => {
      const hopper = /\b(H100|H200|H800|H20|GH200)\b/.test(dev.gpu.name);
      expect(ops.expertKernelsOf(dev.cpu)).toEqual(['grouped', 'dense']);
      if (hopper) expect(ops.expertKernelsOf(dev.gpu)).toEqual(['grouped', 'dense', 'grouped_sm90']);
      else expect(ops.expertKernelsOf(dev.gpu)).not.toContain('grouped_sm90');
    });

    const cases: [string, 'bf16' | 'f32' | 'f16', number, number[] | ((rng: Rng) => number[]), number, number][] = [
      // Every rows-per-expert M from 0 and 1 across the 128-row tile edges; R / E < 192: the 128x128 tile.
      [
        'every M 0..300 across tile edges',
        'bf16',
        23,
        [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257, 300],
        136,
        64,
      ],
      // R / E >= 192: the 128x256 tile with the TMA-store epilogue.
      ['large M (128x256 tile), empty and single-row experts', 'bf16', 4, [0, 1, 600, 250], 264, 64],
      ['ragged, two ranks of segments (S=2E)', 'bf16', 8, [0, 1, 127, 128, 129, 300, 5, 64, 3, 0, 0, 77, 200, 9, 1, 50], 128, 128],
      ['all experts empty but one', 'bf16', 16, [0, 0, 0, 0, 0, 0, 0, 0, 0, 777, 0, 0, 0, 0, 0, 0], 128, 64],
      ['odd N and K (multiples of 8 off the tiles)', 'bf16', 4, [3, 0, 130, 41, 7, 0, 1, 90], 392, 104],
      ['tiny: N=24 K=40', 'bf16', 3, [5, 0, 2], 24, 40],
      ['one row, N=8 K=8', 'bf16', 1, [1], 8, 8],
      // A real expert shape (Qwen3-30B-A3B's down projection: N=2048, K=768), one expert, rows off the tile.
      ['Qwen3-30B-A3B down shape, 37 rows', 'bf16', 1, [37], 2048, 768],
      ['Zipf-skewed over 32 experts (some empty)', 'bf16', 32, (rng) => zipf(rng, 32, 40), 128, 64],
      ['one expert of many rows beside a nearly empty one', 'bf16', 2, [600, 3], 256, 256],
      // 2048 segments and R / E >= 192: the staging-buffer tile does not fit shared memory beside the
      // segment tables, and the launcher falls back to direct stores.
      ['16 ranks x 128 experts (S=2048), 12 rows each', 'bf16', 128, new Array(2048).fill(12), 16, 16],
      ['64 experts, 4 ranks, 0..5 rows each', 'bf16', 64, (rng) => rng.ints(256, 0, 6), 64, 64],
      // Not taken: must run as grouped.
      ['falls back: N not a multiple of 8', 'bf16', 4, [3, 0, 70, 9], 36, 64],
      ['falls back: K not a multiple of 8', 'bf16', 4, [3, 0, 70, 9], 64, 36],
      ['falls back: f32', 'f32', 3, [7, 1, 130], 64, 64],
      ['falls back: f16', 'f16', 3, [7, 0, 130], 64, 64],
    ];
    test.each(cases)('%s (%s, E=%d)', async (label, dt, E, countsOf, N, K) => {
      const rng = new Rng(E * 977 + N * 13 + K);
      const counts = typeof countsOf === 'function' ? countsOf(rng) : countsOf;
      const R = counts.reduce((x, y) => x + y, 0);
      const a = floats(dt, [R, K], nonZero(rng, R * K, 1));
      const w = floats(dt, [E, N, K], nonZero(rng, E * N * K, 0.1));
      const out = floats(dt, [R, N]); // NaN on both sides
      run((s, d) => ops.expertMatmul(s, out[d], a[d], w[d], counts, 'grouped_sm90'));
      const taken = native() && dt === 'bf16' && N % 8 === 0 && K % 8 === 0;
      await expectClose(`expert_matmul grouped_sm90${taken ? '' : ' (as grouped)'} ${label}`, out, bound(dt));
      expect(countNaN(await out.gpu.read(st.gpu))).toBe(0);
      // The counts as a device tensor (a lone rank's layer without the host sync): the same bits, whether the
      // kernel scans them on the device or (falling back) reads them to the host.
      const onDevice = floats(dt, [R, N]);
      ops.expertMatmul(st.gpu, onDevice.gpu, a.gpu, w.gpu, ints([counts.length], counts).gpu, 'grouped_sm90');
      expect(Array.from(await onDevice.gpu.read(st.gpu))).toEqual(Array.from(await out.gpu.read(st.gpu)));
    });

    // swiglu: the gate/up product's SwiGLU in the kernel's epilogue (N % 16 == 0), or through scratch memory and
    // the swiglu kernel (the rest): against the CPU, and on the GPU bit for bit against expert_matmul then swiglu,
    // with the counts on the host and on the device.
    const swigluCases: [string, 'bf16' | 'f32', number, number[], number, number][] = [
      ['every M 0..300 across tile edges', 'bf16', 23, [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256, 257, 300], 144, 64],
      ['large M (128x256 tile), empty and single-row experts', 'bf16', 4, [0, 1, 600, 250], 272, 64],
      ['ragged, two ranks of segments (S=2E)', 'bf16', 8, [0, 1, 127, 128, 129, 300, 5, 64, 3, 0, 0, 77, 200, 9, 1, 50], 128, 128],
      ['all experts empty but one', 'bf16', 16, [0, 0, 0, 0, 0, 0, 0, 0, 0, 777, 0, 0, 0, 0, 0, 0], 128, 64],
      ['Qwen3-30B-A3B gate_up shape, 37 rows', 'bf16', 1, [37], 1536, 2048],
      ['16 ranks x 128 experts (S=2048), 12 rows each', 'bf16', 128, new Array(2048).fill(12), 32, 16],
      ['through scratch: I not a multiple of 8', 'bf16', 4, [3, 0, 70, 9], 136, 64],
      ['through scratch: f32', 'f32', 3, [7, 1, 130], 64, 64],
    ];
    test.each(swigluCases)('swiglu epilogue: %s (%s, E=%d)', async (label, dt, E, counts, N, K) => {
      const rng = new Rng(E * 31 + N * 7 + K);
      const R = counts.reduce((x, y) => x + y, 0);
      const a = floats(dt, [R, K], nonZero(rng, R * K, 1));
      const w = floats(dt, [E, N, K], nonZero(rng, E * N * K, 0.1));
      const act = floats(dt, [R, N / 2]);
      run((s, d) => ops.expertMatmul(s, act[d], a[d], w[d], counts, 'grouped_sm90', true));
      const fused = native() && ops.groupedSm90FusesSwiglu(dt, N, K);
      await expectClose(`expert_matmul swiglu${fused ? ' (epilogue)' : ' (scratch)'} ${label}`, act, bound(dt));
      const got = Array.from(await act.gpu.read(st.gpu));
      expect(countNaN(got)).toBe(0);
      const gateUp = floats(dt, [R, N]);
      const twoOps = floats(dt, [R, N / 2]);
      ops.expertMatmul(st.gpu, gateUp.gpu, a.gpu, w.gpu, counts, 'grouped_sm90');
      ops.swiglu(st.gpu, twoOps.gpu, gateUp.gpu);
      expect(got).toEqual(Array.from(await twoOps.gpu.read(st.gpu)));
      const onDevice = floats(dt, [R, N / 2]);
      ops.expertMatmul(st.gpu, onDevice.gpu, a.gpu, w.gpu, ints([counts.length], counts).gpu, 'grouped_sm90', true);
      expect(Array.from(await onDevice.gpu.read(st.gpu))).toEqual(got);
    });

    test('swiglu through grouped and dense (scratch memory) against the CPU', async () => {
      const rng = new Rng(78);
      const E = 6;
      const counts = [0, 40, 1, 130, 0, 9];
      const R = counts.reduce((x, y) => x + y, 0);
      const a = floats('bf16', [R, 96], nonZero(rng, R * 96, 1));
      const w = floats('bf16', [E, 160, 96], nonZero(rng, E * 160 * 96, 0.1));
      for (const kernel of ['grouped', 'dense'] as const) {
        const act = floats('bf16', [R, 80]);
        run((s, d) => ops.expertMatmul(s, act[d], a[d], w[d], counts, kernel, true));
        await expectClose(`expert_matmul swiglu ${kernel}`, act, bound('bf16'));
      }
    });

    test('row views at an offset (as the profiler and the layer pass them)', async () => {
      const rng = new Rng(4242);
      const E = 4;
      const N = 256;
      const K = 128;
      const counts = [40, 0, 200, 9];
      const R = counts.reduce((x, y) => x + y, 0);
      const a = floats('bf16', [R + 16, K], nonZero(rng, (R + 16) * K, 1));
      const w = floats('bf16', [E, N, K], nonZero(rng, E * N * K, 0.1));
      const out = floats('bf16', [R + 16, N]);
      run((s, d) => ops.expertMatmul(s, out[d].rows(8, R), a[d].rows(8, R), w[d], counts, 'grouped_sm90'));
      const { cpu, gpu } = await readBoth(out);
      // The rows before and after the view stay poisoned; the view's rows match the CPU.
      expect(countNaN(gpu.subarray(0, 8 * N))).toBe(8 * N);
      expect(countNaN(gpu.subarray((8 + R) * N))).toBe(8 * N);
      const inside = [cpu.subarray(8 * N, (8 + R) * N), gpu.subarray(8 * N, (8 + R) * N)];
      expect(countNaN(inside[1])).toBe(0);
      const err = relL2(inside[1], inside[0]);
      table.push({ name: 'expert_matmul grouped_sm90 row views at an offset', error: err });
      expect(err).toBeLessThanOrEqual(1e-2);
    });

    test('as grouped and dense give (same GPU)', async () => {
      const rng = new Rng(77);
      const E = 8;
      const N = 256;
      const K = 64;
      const counts = rng.ints(E, 0, 300);
      const R = counts.reduce((x, y) => x + y, 0);
      const a = floats('bf16', [R, K], nonZero(rng, R * K, 1));
      const w = floats('bf16', [E, N, K], nonZero(rng, E * N * K, 0.1));
      const outs = (['grouped_sm90', 'grouped', 'dense'] as const).map((kernel) => {
        const out = floats('bf16', [R, N]);
        ops.expertMatmul(st.gpu, out.gpu, a.gpu, w.gpu, counts, kernel);
        return out;
      });
      const [sm90, grouped, dense] = await Promise.all(outs.map((o) => o.gpu.read(st.gpu)));
      expect(relL2(sm90, grouped)).toBeLessThanOrEqual(1e-2);
      expect(relL2(sm90, dense)).toBeLessThanOrEqual(1e-2);
    });
  });

  test.each([
    ['bf16', 33, 1408],
    ['bf16', 1, 7],
    ['f32', 4, 100],
  ] as const)('swiglu %s T=%d I=%d', async (dt, T, I) => {
    const rng = new Rng(T + I);
    const gateUp = randomFloats(rng, dt, [T, 2 * I], -4, 4);
    const out = floats(dt, [T, I]);
    run((s, d) => ops.swiglu(s, out[d], gateUp[d]));
    await expectClose(`swiglu ${dt} [${T},${I}]`, out, bound(dt));
  });

  test.each([
    ['f32', 100, 64, 8, true, 1.0],
    ['bf16', 57, 60, 4, false, 2.5],
    ['bf16', 1, 8, 2, true, 1.0],
    ['f32', 20, 128, 8, true, 1.0],
  ] as const)('router %s T=%d E=%d k=%d renormalize=%s scale=%d', async (dt, T, E, k, renormalize, scale) => {
    const rng = new Rng(T * E + k);
    const logits = randomFloats(rng, dt, [T, E], -3, 3);
    const idx = ints([T, k]);
    const w = floats('f32', [T, k]);
    run((s, d) => ops.router(s, idx[d], w[d], logits[d], k, renormalize, scale));
    await expectSame(`router ${dt} E=${E} k=${k}: indices`, idx);
    await expectClose(`router ${dt} E=${E} k=${k}: weights`, w, 1e-5);
  });

  test.each([
    ['bf16', 100, 4, 16, 256],
    ['bf16', 1, 2, 8, 64],
    ['f32', 3000, 8, 128, 24],
  ] as const)('moe_permute and moe_count %s T=%d k=%d E=%d H=%d (dropped pairs, empty experts)', async (dt, T, k, E, H) => {
    const rng = new Rng(T * k + E);
    // Experts E/2.. get nothing; some pairs are dropped (-1 or E).
    const topk = Array.from({ length: T * k }, () => {
      const r = rng.next();
      if (r < 0.03) return -1;
      if (r < 0.05) return E;
      return rng.int(0, Math.max(1, E >> 1));
    });
    const x = randomFloats(rng, dt, [T, H]);
    const topkT = ints([T, k], topk);
    const out = floats(dt, [T * k, H]);
    const rowMap = ints([T, k]);
    const counts = ints([E]);
    const bounds = [0, Math.floor(T / 3), Math.floor(T / 3), T];
    const chunkCounts = ints([bounds.length - 1, E]);
    run((s, d) => {
      ops.moePermute(s, out[d], rowMap[d], counts[d], x[d], topkT[d]);
      ops.moeCount(s, chunkCounts[d], topkT[d], bounds);
    });
    const routed = topk.filter((e) => e >= 0 && e < E).length;
    await expectSame(`moe_permute ${dt} T=${T}: counts`, counts);
    await expectSame(`moe_permute ${dt} T=${T}: rowMap`, rowMap);
    await expectSame(`moe_permute ${dt} T=${T}: rows`, out, { count: routed, width: H });
    await expectSame(`moe_count ${dt} T=${T}`, chunkCounts);
  });

  test.each([
    ['bf16', 200, 6, 16, 2, 128],
    ['bf16', 1, 2, 8, 4, 64],
    ['f32', 3000, 8, 64, 4, 24],
  ] as const)('moe_rank_dispatch %s T=%d k=%d E=%d W=%d H=%d (one row per token and rank)', async (dt, T, k, E, W, H) => {
    const rng = new Rng(T * k + E * W);
    // Distinct experts per token, some tokens all on rank 0's experts; a few slots name no expert.
    const topk: number[] = [];
    for (let t = 0; t < T; t++) {
      const pool = t % 5 === 0 ? Math.max(k, E / W) : E;
      const picked = new Set<number>();
      while (picked.size < k) picked.add(rng.int(0, pool));
      for (const e of picked) topk.push(rng.next() < 0.02 ? -1 : e);
    }
    const offsets = Array.from({ length: W + 1 }, (_, p) => Math.round((p * E) / W));
    const R = T * Math.min(k, W);
    const x = randomFloats(rng, dt, [T, H]);
    const topkT = ints([T, k], topk);
    const topkW = floats('f32', [T, k], rng.array(T * k, 0, 1));
    const out = floats(dt, [R, H]);
    const rowMap = ints([T, W]);
    const counts = ints([W]);
    const localIdx = ints([R, k]);
    const localW = floats('f32', [R, k]);
    run((s, d) => ops.moeRankDispatch(s, out[d], rowMap[d], counts[d], localIdx[d], localW[d], x[d], topkT[d], topkW[d], offsets));
    await expectSame(`moe_rank_dispatch ${dt} T=${T}: counts`, counts);
    await expectSame(`moe_rank_dispatch ${dt} T=${T}: rowMap`, rowMap);
    const cpuCounts = Array.from(await counts.cpu.read(st.cpu));
    const rows = cpuCounts.reduce((a, b) => a + b, 0);
    await expectSame(`moe_rank_dispatch ${dt} T=${T}: rows`, out, { count: rows, width: H });
    await expectSame(`moe_rank_dispatch ${dt} T=${T}: localIdx`, localIdx, { count: rows, width: k });
    await expectClose(`moe_rank_dispatch ${dt} T=${T}: localW`, localW, 0, { count: rows, width: k });
    // The same rows counted per micro-chunk (one empty), as the dedup pipeline plans its chunks.
    const bounds = [0, Math.floor(T / 2), Math.floor(T / 2), T];
    const microCounts = ints([3, W]);
    run((s, d) => ops.moeRankCount(s, microCounts[d], topkT[d], offsets, bounds));
    await expectSame(`moe_rank_count T=${T} W=${W}`, microCounts);
  });

  test.each([
    ['bf16', 'bf16', 50, 4, 256, false],
    ['bf16', 'f32', 1, 2, 33, true],
    ['f32', 'bf16', 300, 8, 64, true],
    ['f32', 'f32', 9, 3, 17, false],
    ['bf16', 'bf16', 20, 2, 4096, true],
  ] as const)('moe_unpermute y %s -> out %s T=%d k=%d H=%d accumulate=%s', async (ydt, odt, T, k, H, accumulate) => {
    const rng = new Rng(T * k + H);
    const pairs = T * k;
    // A random permutation of the routed pairs onto rows; ~5% dropped.
    const perm = Array.from({ length: pairs }, (_, i) => i);
    for (let i = pairs - 1; i > 0; i--) {
      const j = rng.int(0, i + 1);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const rowMapV = perm.map((r) => (rng.next() < 0.05 ? -1 : r));
    const y = randomFloats(rng, ydt, [pairs, H]);
    const rowMap = ints([T, k], rowMapV);
    const w = floats('f32', [T, k], rng.array(pairs, 0, 1));
    const out = accumulate ? randomFloats(rng, odt, [T, H]) : floats(odt, [T, H]);
    run((s, d) => ops.moeUnpermute(s, out[d], y[d], rowMap[d], w[d], accumulate));
    await expectClose(`moe_unpermute ${ydt}->${odt} [${T},${k},${H}] acc=${accumulate}`, out, odt === 'f32' && ydt === 'f32' ? 1e-5 : 1e-2);
  });

  test('add, sigmoid_gate_add (odd sizes, in place)', async () => {
    const rng = new Rng(5);
    const a = randomFloats(rng, 'bf16', [7, 129]);
    const b = randomFloats(rng, 'f32', [7, 129]);
    const out = floats('bf16', [7, 129]);
    run((s, d) => ops.add(s, out[d], a[d], b[d]));
    await expectClose('add bf16+f32->bf16 [7,129]', out, 1e-2);
    run((s, d) => ops.add(s, a[d], a[d], b[d]));
    await expectClose('add in place', a, 1e-2);
    const c16 = randomFloats(rng, 'bf16', [5, 4096]);
    const d16 = randomFloats(rng, 'bf16', [5, 4096]);
    const sum16 = floats('bf16', [5, 4096]);
    run((s, d) => ops.add(s, sum16[d], c16[d], d16[d]));
    await expectClose('add bf16+bf16->bf16 [5,4096]', sum16, 1e-2);
    const y = randomFloats(rng, 'bf16', [7, 129]);
    const gate = randomFloats(rng, 'bf16', [7, 1], -3, 3);
    run((s, d) => ops.sigmoidGateAdd(s, out[d], y[d], gate[d]));
    await expectClose('sigmoid_gate_add bf16 [7,129]', out, 1e-2);
  });

  test('copy converts between float dtypes bit for bit and copies i32', async () => {
    const rng = new Rng(6);
    const src = randomFloats(rng, 'f32', [1001], -100, 100);
    for (const dt of ['bf16', 'f16', 'f32'] as const) {
      const dst = floats(dt, [1001]);
      run((s, d) => ops.copy(s, dst[d], src[d]));
      await expectSameBytes(`copy f32->${dt} [1001]`, dst);
    }
    const isrc = ints([17], rng.ints(17, -1000, 1000));
    const idst = ints([17]);
    run((s, d) => ops.copy(s, idst[d], isrc[d]));
    await expectSame('copy i32 [17]', idst);
  });

  test('fill_random matches the CPU bit for bit', async () => {
    for (const dt of ['f32', 'bf16', 'f16'] as const) {
      const out = floats(dt, [1000003]);
      run((s, d) => ops.fillRandom(s, out[d], 123456789012, 0.02));
      await expectSameBytes(`fill_random ${dt} [1000003]`, out);
    }
  });

  test.each([
    ['bf16', 5, 151936],
    ['f32', 3, 1000],
    ['f16', 70000, 3],
  ] as const)('count_nonfinite %s, %d rows of %d, NaN and +-Inf sprinkled (and none in some rows)', async (dt, R, N) => {
    const rng = new Rng(R + N);
    const v = rng.array(R * N, -3, 3);
    for (let r = 0; r < R; r += 2) {
      for (let j = 0; j <= r % 5; j++) v[r * N + ((r * 7919 + j * 104729) % N)] = [NaN, Infinity, -Infinity][j % 3];
    }
    const x = floats(dt, [R, N], v);
    const counts = ints([R]);
    run((s, d) => ops.countNonfinite(s, counts[d], x[d]));
    await expectSame(`count_nonfinite ${dt} [${R},${N}]`, counts);
  });
});

describeGpu('CUDA device: memory, streams, events, errors', () => {
  let gpu: Device;
  beforeAll(() => {
    gpu = Device.open('cuda', 0);
  });

  test('out of memory is an error with the sizes, and the device goes on working', async () => {
    let caught: (Error & { code?: string; askedBytes?: number; freeBytes?: number }) | undefined;
    try {
      gpu.tensor('f32', [1 << 20, 1 << 20]); // 4 TiB
    } catch (e) {
      caught = e as Error;
    }
    expect(caught?.code).toBe('EPS_OUT_OF_MEMORY');
    expect(caught?.askedBytes).toBe(4 * 2 ** 40);
    expect(caught?.freeBytes).toBeGreaterThan(0);
    const s = gpu.stream();
    const t = gpu.tensor('f32', [4]);
    t.upload(s, Float32Array.from([1, 2, 3, 4]));
    ops.add(s, t, t, t);
    expect(Array.from(await t.readFloat32(s))).toEqual([2, 4, 6, 8]);
    t.dispose();
    s.dispose();
  });

  test('memory counters: a size class comes from cudaMalloc once, then from the cache; a full device counts a flush', async () => {
    const s = gpu.stream();
    const bytes = 37 * 2 ** 20 + 6; // an odd class (40 MiB after rounding), unlikely to sit idle already
    const c0 = gpu.memoryCounters();
    const t = gpu.tensor('bf16', [bytes / 2]);
    const c1 = gpu.memoryCounters();
    expect(c1.allocations - c0.allocations).toBeLessThanOrEqual(1);
    expect(c1.reservedBytes).toBeGreaterThanOrEqual(bytes);
    ops.fillRandom(s, t, 1, 1);
    t.dispose();
    // The next allocation fences the released block (an event on every stream); once the streams have passed it,
    // the next request of its class takes it from the cache.
    gpu.tensor('i32', [1]).dispose();
    await s.synchronize();
    await new Promise((r) => setTimeout(r, 20));
    const again = gpu.tensor('bf16', [bytes / 2]);
    const c2 = gpu.memoryCounters();
    expect(c2.allocations).toBe(c1.allocations);
    expect(c2.allocatedBytes).toBe(c1.allocatedBytes);
    again.dispose();
    expect(() => gpu.tensor('f32', [1 << 20, 1 << 20])).toThrow(/memory/i);
    const c3 = gpu.memoryCounters();
    expect(c3.outOfMemoryFlushes).toBe(c2.outOfMemoryFlushes + 1);
    expect(c3.allocateMs).toBeGreaterThanOrEqual(c2.allocateMs);
    s.dispose();
  });

  // EPS_EVENT_DOWNLOADS=1 (native/cuda/event_downloads.h): reads of up to 64 KB by an event a thread polls, larger
  // ones the other way; more reads in flight than its 16 slots; a kernel's index error still fails the read.
  test('reads through event downloads give the same values, in flight by the dozen, and report index errors', async () => {
    await withEnv({ EPS_EVENT_DOWNLOADS: '1' }, async () => {
      const s = gpu.stream();
      for (const n of [1, 1000, 16384, 40000]) {
        const v = Float32Array.from({ length: n }, (_, i) => i * 0.5 - 3);
        const t = gpu.tensor('f32', [n]);
        t.upload(s, v);
        expect(Array.from(await t.readFloat32(s))).toEqual(Array.from(v));
        t.dispose();
      }
      const ts = Array.from({ length: 40 }, (_, k) => {
        const t = gpu.tensor('i32', [4]);
        t.upload(s, Int32Array.of(k, k + 1, k + 2, k + 3));
        return t;
      });
      const got = await Promise.all(ts.map((t) => t.read(s)));
      got.forEach((g, k) => expect(Array.from(g)).toEqual([k, k + 1, k + 2, k + 3]));
      ts.forEach((t) => t.dispose());
      const table = gpu.tensor('f32', [3, 2]);
      const ids = gpu.tensor('i32', [2]);
      const out = gpu.tensor('f32', [2, 2]);
      ids.upload(s, Int32Array.of(1, 7));
      ops.embedding(s, out, table, ids);
      await expect(out.read(s)).rejects.toThrow(/embedding: ids\[1\] = 7 is outside \[0, 3\)/);
      for (const o of [table, ids, out, s]) o.dispose();
    });
  });

  test('events order two streams; elapsed time is measured', async () => {
    const a = gpu.stream();
    const b = gpu.stream();
    const n = 1 << 22;
    const x = gpu.tensor('f32', [n]);
    const y = gpu.tensor('f32', [n]);
    const start = a.record();
    ops.fillRandom(a, x, 7, 1);
    const done = a.record();
    b.wait(done);
    ops.add(b, y, x, x);
    const [xs, ys] = [await x.readFloat32(b), await y.readFloat32(b)];
    let bad = 0;
    for (let i = 0; i < n; i++) if (ys[i] !== xs[i] * 2) bad++;
    expect(bad).toBe(0);
    await a.synchronize();
    expect(done.elapsedSince(start)).toBeGreaterThanOrEqual(0);
    for (const o of [x, y, a, b, start, done]) o.dispose();
  });

  test('a tensor disposed while an op still reads it is not reused under that op', async () => {
    const s = gpu.stream();
    const n = 1 << 24;
    const src = gpu.tensor('bf16', [n]);
    ops.fillRandom(s, src, 99, 1);
    const dst = gpu.tensor('f32', [n]);
    ops.copy(s, dst, src);
    src.dispose();
    // Same size class, another stream: without the allocator's fences src's block could be handed
    // out at once and overwritten while the copy still reads it.
    const s2 = gpu.stream();
    const other = gpu.tensor('bf16', [n]);
    ops.fillRandom(s2, other, 100, 5);
    const expected = gpu.tensor('f32', [n]);
    const again = gpu.tensor('bf16', [n]);
    ops.fillRandom(s, again, 99, 1);
    ops.copy(s, expected, again);
    const [got, want] = [await dst.readFloat32(s), await expected.readFloat32(s)];
    expect(Buffer.compare(Buffer.from(got.buffer), Buffer.from(want.buffer))).toBe(0);
    await s2.synchronize();
    for (const o of [dst, other, expected, again, s, s2]) o.dispose();
  });

  test('an id outside the table fails the stream, naming the op; the process lives on', async () => {
    const s = gpu.stream();
    const tableT = gpu.tensor('bf16', [10, 8]);
    ops.fillRandom(s, tableT, 1, 1);
    const ids = gpu.tensor('i32', [3]);
    ids.upload(s, Int32Array.from([1, 99, 2]));
    const out = gpu.tensor('bf16', [3, 8]);
    ops.embedding(s, out, tableT, ids);
    await expect(s.synchronize()).rejects.toThrow(/embedding: ids\[1\] = 99 is outside \[0, 10\)/);
    const s2 = gpu.stream();
    const t = gpu.tensor('f32', [2]);
    t.upload(s2, Float32Array.from([1, 2]));
    expect(Array.from(await t.readFloat32(s2))).toEqual([1, 2]);
    for (const o of [tableT, ids, out, t, s, s2]) o.dispose();
  });

  test('large upload and download round-trip through the staging ring', async () => {
    const s = gpu.stream();
    const n = 40 << 20; // 40 Mi bytes: several chunks of the ring
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = (i * 2654435761) >>> 24;
    const t = gpu.tensor('i32', [n / 4]);
    t.upload(s, bytes);
    const back = new Uint8Array(await t.bytes(s));
    expect(Buffer.compare(Buffer.from(back), Buffer.from(bytes))).toBe(0);
    t.dispose();
    s.dispose();
  });
});
