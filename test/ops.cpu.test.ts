// Every op of native/ops.md on the CPU backend against a float64 reference (test/reference/ops.ts)
// on seeded random data, for f32 and bf16 storage, plus the contract checks of checkOp.
//
// Bounds: f32 storage: relative L2 and relative max error <= 1e-5. bf16 storage: the reference
// runs on the bf16-rounded inputs (what the kernel sees) and the bound is relative L2 <= 1e-2.
import type { Stream, Tensor } from '../src/native/device';
import { cpuTestDevice } from './helpers/cpuDevice';
import * as ops from '../src/native/ops';
import { Rng, encodeFloats, relL2, relMaxErr, roundBf16, roundF16, roundTo, type FloatStorage } from './reference/numeric';
import {
  attentionRef,
  expertMatmulRef,
  fillRandomRef,
  gatherRowsRef,
  matmulRef,
  permuteRef,
  rmsnormRef,
  ropeRef,
  routerRef,
  groupRouterRef,
  sigmoidGateAddRef,
  swigluRef,
  unpermuteRef,
} from './reference/ops';

const { device, stream: s, keep } = cpuTestDevice();

interface FloatInput {
  t: Tensor;
  /** The values the tensor holds (rounded to its dtype). */
  v: Float64Array;
}

/** A float tensor holding `values` rounded to `dtype` (rounded and encoded here, not by the addon). */
function floats(dtype: FloatStorage, shape: number[], values: ArrayLike<number>, stream: Stream = s): FloatInput {
  const v = Float64Array.from(values, (x) => roundTo(dtype, x));
  const t = device.tensor(dtype, shape);
  keep(t);
  t.upload(stream, encodeFloats(dtype, v));
  return { t, v };
}

function randomFloats(rng: Rng, dtype: FloatStorage, shape: number[], lo = -1, hi = 1): FloatInput {
  return floats(
    dtype,
    shape,
    rng.array(
      shape.reduce((a, b) => a * b, 1),
      lo,
      hi,
    ),
  );
}

function ints(shape: number[], values: readonly number[], stream: Stream = s): Tensor {
  const t = device.tensor('i32', shape);
  keep(t);
  t.upload(stream, Int32Array.from(values));
  return t;
}

function empty(dtype: FloatStorage | 'i32', shape: number[]): Tensor {
  const t = device.tensor(dtype, shape);
  keep(t);
  return t;
}

async function readFloats(t: Tensor, stream: Stream = s): Promise<Float64Array> {
  return Float64Array.from(await t.read(stream));
}

async function readInts(t: Tensor): Promise<number[]> {
  const v = await t.read(s);
  if (!(v instanceof Int32Array)) throw new Error(`expected an i32 tensor, got ${t.dtype}`);
  return Array.from(v);
}

/** The bound of the numerical contract for results computed from `dtype` storage. */
function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, dtype: FloatStorage): void {
  expect(actual.length).toBe(expected.length);
  if (dtype === 'f32') {
    expect(relL2(actual, expected)).toBeLessThanOrEqual(1e-5);
    expect(relMaxErr(actual, expected)).toBeLessThanOrEqual(1e-5);
  } else {
    expect(relL2(actual, expected)).toBeLessThanOrEqual(1e-2);
  }
}

const storages: FloatStorage[] = ['f32', 'bf16'];

describe.each(storages)('ops on %s storage', (dtype) => {
  test.each([
    // M, N, K, bias: one token; odd sizes; several 64x64 tiles, K in two 256-deep slices, padding
    [1, 7, 13, false],
    [37, 13, 7, true],
    [67, 69, 300, true],
  ])('matmul M=%i N=%i K=%i bias=%s', async (M, N, K, withBias) => {
    const rng = new Rng(M * 1000 + N);
    const a = randomFloats(rng, dtype, [M, K]);
    const w = randomFloats(rng, dtype, [N, K]);
    const bias = withBias ? randomFloats(rng, dtype, [N]) : undefined;
    const out = empty(dtype, [M, N]);
    ops.matmul(s, out, a.t, w.t, bias?.t);
    expectClose(await readFloats(out), matmulRef(a.v, w.v, M, N, K, bias?.v), dtype);
  });

  test.each([
    ['experts with and without rows', [3, 0, 5, 1]],
    ['every row on one expert', [0, 0, 9, 0]],
    ['one row', [1, 0, 0, 0]],
    ['two ranks of segments (S = 2E)', [2, 0, 1, 3, 0, 4, 1, 0]],
    ['rows across tile boundaries', [70, 1, 0, 66]],
  ])('expert_matmul: %s', async (_name, counts) => {
    const E = 4;
    const N = 13;
    const K = 37;
    const R = counts.reduce((x, y) => x + y, 0);
    const rng = new Rng(R * 7 + counts.length);
    const a = randomFloats(rng, dtype, [R, K]);
    const w = randomFloats(rng, dtype, [E, N, K]);
    const expected = expertMatmulRef(a.v, w.v, counts, E, N, K);
    const grouped = empty(dtype, [R, N]);
    const dense = empty(dtype, [R, N]);
    const sm90 = empty(dtype, [R, N]);
    ops.expertMatmul(s, grouped, a.t, w.t, counts, 'grouped');
    ops.expertMatmul(s, dense, a.t, w.t, counts, 'dense');
    // The Hopper kernel's choice on the CPU backend: the same routine as the others.
    ops.expertMatmul(s, sm90, a.t, w.t, counts, 'grouped_sm90');
    const g = await readFloats(grouped);
    expectClose(g, expected, dtype);
    expect(relMaxErr(await readFloats(dense), g)).toBeLessThanOrEqual(1e-6);
    expect(relMaxErr(await readFloats(sm90), g)).toBeLessThanOrEqual(1e-6);
    // The counts as a device tensor (as moe_permute writes them): the same result from every kernel.
    for (const kernel of ['grouped', 'dense', 'grouped_sm90'] as const) {
      const out = empty(dtype, [R, N]);
      ops.expertMatmul(s, out, a.t, w.t, ints([counts.length], counts), kernel);
      expect({ kernel, err: relMaxErr(await readFloats(out), g) <= 1e-6 }).toEqual({ kernel, err: true });
    }
  });

  test('expert_matmul with swiglu: silu(gate) * up of the product (rounded to the dtype first), every kernel', async () => {
    const [E, I, K] = [3, 6, 20];
    const counts = [4, 0, 3, 2, 1, 0];
    const R = counts.reduce((x, y) => x + y, 0);
    const rng = new Rng(55);
    const a = randomFloats(rng, dtype, [R, K]);
    const w = randomFloats(rng, dtype, [E, 2 * I, K]);
    const product = expertMatmulRef(a.v, w.v, counts, E, 2 * I, K).map((v) => roundTo(dtype, v));
    const expected = swigluRef(product, R, I);
    for (const kernel of ['grouped', 'dense', 'grouped_sm90'] as const) {
      const out = empty(dtype, [R, I]);
      ops.expertMatmul(s, out, a.t, w.t, counts, kernel, true);
      expectClose(await readFloats(out), expected, dtype);
    }
    // Device counts summing below R: the rows past their sum stay as they were.
    const before = randomFloats(rng, dtype, [R, I]);
    ops.expertMatmul(s, before.t, a.t, w.t, ints([6], [4, 0, 3, 0, 0, 0]), 'grouped', true);
    const got = await readFloats(before.t);
    expectClose(got.slice(0, 7 * I), expected.slice(0, 7 * I), dtype);
    expect(Array.from(got.slice(7 * I))).toEqual(Array.from(before.v.slice(7 * I)));
  });

  test('expert_matmul: device counts summing below R leave the rows past their sum as they were', async () => {
    const rng = new Rng(41);
    const a = randomFloats(rng, dtype, [6, 8]);
    const w = randomFloats(rng, dtype, [2, 5, 8]);
    const before = randomFloats(rng, dtype, [6, 5]);
    ops.expertMatmul(s, before.t, a.t, w.t, ints([2], [1, 3]), 'grouped');
    const got = await readFloats(before.t);
    const expected = expertMatmulRef(a.v.slice(0, 4 * 8), w.v, [1, 3], 2, 5, 8);
    expectClose(got.slice(0, 4 * 5), expected, dtype);
    expect(Array.from(got.slice(4 * 5))).toEqual(Array.from(before.v.slice(4 * 5)));
  });

  test('expert_matmul: device counts are checked where they are read', async () => {
    const bad = device.stream();
    const out = empty('f32', [4, 3]);
    ops.expertMatmul(bad, out, empty('f32', [4, 5]), empty('f32', [2, 3, 5]), ints([2], [5, -1], bad), 'dense');
    await expect(bad.synchronize()).rejects.toThrow(/expert_matmul: a device count is negative/);
    const bad2 = device.stream();
    ops.expertMatmul(bad2, out, empty('f32', [4, 5]), empty('f32', [2, 3, 5]), ints([2], [3, 2], bad2), 'grouped');
    await expect(bad2.synchronize()).rejects.toThrow(/expert_matmul: the device counts sum to 5, past R=4/);
  });

  test.each([
    // cuSeqlens, nq, nkv, hd
    [[0, 1, 6, 18, 21], 4, 2, 13], // lengths 1, 5, 12, 3; grouped KV; hd not a multiple of 8
    [[0, 3, 3, 8], 3, 3, 8], // an empty sequence in the middle; one KV head per query head
    [[0, 70], 6, 1, 16], // one KV head for six query heads; longer than a query block
    [[0, 1], 2, 1, 7], // a single token
  ])('attention cuSeqlens=%j nq=%i nkv=%i hd=%i', async (cu, nq, nkv, hd) => {
    const T = cu[cu.length - 1];
    const rng = new Rng(T * 31 + nq);
    const q = randomFloats(rng, dtype, [T, nq, hd], -2, 2);
    const k = randomFloats(rng, dtype, [T, nkv, hd], -2, 2);
    const v = randomFloats(rng, dtype, [T, nkv, hd]);
    const out = empty(dtype, [T, nq, hd]);
    const scale = 1 / Math.sqrt(hd);
    ops.attention(s, out, q.t, k.t, v.t, ints([cu.length], cu), cu, scale);
    expectClose(await readFloats(out), attentionRef(q.v, k.v, v.v, cu, nq, nkv, hd, scale), dtype);
  });

  test.each([
    // hd, rotary dims, attention scaling
    [16, 16, 1.0],
    [12, 8, 1.25], // partial rotary: the last 4 dims of each head stay as they are
  ])('rope hd=%i rd=%i scaling=%f', async (hd, rd, scaling) => {
    const T = 5;
    const nh = 3;
    const positions = [0, 1, 7, 100, 4000];
    const invFreqValues = Array.from({ length: rd / 2 }, (_, i) => Math.pow(10000, (-2 * i) / rd));
    const rng = new Rng(hd + rd);
    const x = randomFloats(rng, dtype, [T, nh, hd]);
    const invFreq = floats('f32', [rd / 2], invFreqValues);
    ops.rope(s, x.t, ints([T], positions), invFreq.t, scaling);
    expectClose(await readFloats(x.t), ropeRef(x.v, positions, invFreq.v, T, nh, hd, scaling), dtype);
  });

  test('rope with normWeight: the heads rmsnormed (rounded to the dtype), then rotated', async () => {
    const [T, nh, hd, rd] = [4, 3, 12, 8];
    const rng = new Rng(31);
    const x = randomFloats(rng, dtype, [T, nh, hd], -3, 3);
    const w = randomFloats(rng, dtype, [hd], 0.5, 1.5);
    const positions = [0, 3, 17, 900];
    const invFreq = floats('f32', [rd / 2], Array.from({ length: rd / 2 }, (_, i) => Math.pow(10000, (-2 * i) / rd)));
    ops.rope(s, x.t, ints([T], positions), invFreq.t, 1.1, { weight: w.t, eps: 1e-6 });
    const normed = rmsnormRef(x.v, w.v, 1e-6).map((v) => roundTo(dtype, v));
    expectClose(await readFloats(x.t), ropeRef(normed, positions, invFreq.v, T, nh, hd, 1.1), dtype);
  });

  test('rmsnorm with a residual: x += residual (rounded to the dtype), then the norm of the sum', async () => {
    const rng = new Rng(13);
    const x = randomFloats(rng, dtype, [4, 24], -3, 3);
    const r = randomFloats(rng, dtype, [4, 24], -3, 3);
    const w = randomFloats(rng, dtype, [24], 0.5, 1.5);
    const out = empty(dtype, [4, 24]);
    ops.rmsnorm(s, out, x.t, w.t, 1e-6, r.t);
    const sum = x.v.map((v, i) => roundTo(dtype, v + r.v[i]));
    expectClose(await readFloats(x.t), sum, dtype);
    expectClose(await readFloats(out), rmsnormRef(sum, w.v, 1e-6), dtype);
  });

  test('rmsnorm over rows, and in place per head (x viewed [T,nh,hd])', async () => {
    const rng = new Rng(11);
    const x = randomFloats(rng, dtype, [5, 37], -3, 3);
    const w = randomFloats(rng, dtype, [37], 0.5, 1.5);
    const out = empty(dtype, [5, 37]);
    ops.rmsnorm(s, out, x.t, w.t, 1e-6);
    expectClose(await readFloats(out), rmsnormRef(x.v, w.v, 1e-6), dtype);

    const heads = randomFloats(rng, dtype, [4, 3, 13]);
    const hw = randomFloats(rng, dtype, [13], 0.5, 1.5);
    ops.rmsnorm(s, heads.t, heads.t, hw.t, 1e-5);
    expectClose(await readFloats(heads.t), rmsnormRef(heads.v, hw.v, 1e-5), dtype);
  });

  test('swiglu', async () => {
    const rng = new Rng(12);
    const gateUp = randomFloats(rng, dtype, [7, 26], -4, 4);
    const out = empty(dtype, [7, 13]);
    ops.swiglu(s, out, gateUp.t);
    expectClose(await readFloats(out), swigluRef(gateUp.v, 7, 13), dtype);
  });

  test.each([
    [1, false, 1],
    [2, true, 1],
    [4, false, 2.5],
  ])('router k=%i renormalize=%s scale=%f', async (k, renormalize, scale) => {
    const T = 9;
    const E = 13;
    const rng = new Rng(k * 100 + E);
    const logits = randomFloats(rng, dtype, [T, E], -3, 3);
    const topkIdx = empty('i32', [T, k]);
    const topkW = empty('f32', [T, k]);
    ops.router(s, topkIdx, topkW, logits.t, k, renormalize, scale);
    const ref = routerRef(logits.v, T, E, k, renormalize, scale);
    expect(await readInts(topkIdx)).toEqual(ref.idx);
    // The weights are f32 whatever the logits' storage, computed from the values the kernel saw.
    expectClose(await readFloats(topkW), ref.w, 'f32');
  });

  test.each([
    ['softmax', 'greedy', 1, 1, false, false],
    ['softmax', 'group_limited_greedy', 4, 2, false, false],
    ['softmax', 'group_limited_greedy', 4, 1, true, true],
    ['sigmoid', 'noaux_tc', 4, 2, true, false],
    ['sigmoid', 'noaux_tc', 2, 1, false, true],
    ['sigmoid', 'noaux_tc', 8, 3, true, true],
  ] as const)('router %s %s groups=%i topkGroup=%i bias=%s expertGroup=%s', async (scoring, method, groups, topkGroup, withBias, permuted) => {
    const T = 11;
    const E = 16;
    const k = 3;
    const rng = new Rng(groups * 31 + topkGroup);
    const logits = randomFloats(rng, dtype, [T, E], -3, 3);
    const bias = withBias ? floats('f32', [E], rng.array(E, -0.3, 0.3)) : undefined;
    // A permuted column order: column e holds checkpoint expert perm[e], whose group is perm[e] / (E/groups).
    const perm = Array.from({ length: E }, (_, e) => (permuted ? (e * 5) % E : e));
    const groupOf = perm.map((g) => Math.floor(g / (E / groups)));
    const topkIdx = empty('i32', [T, k]);
    const topkW = empty('f32', [T, k]);
    const renormalize = scoring === 'sigmoid';
    const scale = 2.5;
    ops.router(s, topkIdx, topkW, logits.t, k, renormalize, scale, {
      scoring,
      method,
      groups,
      topkGroup,
      bias: bias?.t,
      expertGroup: permuted ? groupOf : undefined,
    });
    const ref = groupRouterRef(logits.v, T, E, k, {
      renormalize,
      scale,
      scoring,
      method,
      groups,
      topkGroup,
      bias: bias?.v,
      groupOf: method === 'greedy' ? undefined : groupOf,
    });
    expect(await readInts(topkIdx)).toEqual(ref.idx);
    expectClose(await readFloats(topkW), ref.w, 'f32');
  });

  test('copy_cols: a block of columns, rows repeated, the rest of out kept', async () => {
    const rng = new Rng(77);
    const x = randomFloats(rng, dtype, [3, 5]);
    const init = rng.array(6 * 7, -1, 1);
    const out = floats(dtype, [6, 7], init);
    ops.copyCols(s, out.t, x.t, 4, 1, 3, 2);
    const want = Float64Array.from(out.v);
    for (let r = 0; r < 6; r++) for (let c = 0; c < 3; c++) want[r * 7 + 4 + c] = x.v[Math.floor(r / 2) * 5 + 1 + c];
    expectClose(await readFloats(out.t), want, dtype);
  });

  test('attention with a value head dim unlike the query/key one (MLA)', async () => {
    const rng = new Rng(91);
    const cu = [0, 5, 12];
    const T = 12;
    const nq = 4;
    const nkv = 2;
    const hd = 12;
    const hdv = 8;
    const q = randomFloats(rng, dtype, [T, nq, hd]);
    const k = randomFloats(rng, dtype, [T, nkv, hd]);
    const v = randomFloats(rng, dtype, [T, nkv, hdv]);
    const out = empty(dtype, [T, nq, hdv]);
    ops.attention(s, out, q.t, k.t, v.t, ints([cu.length], cu), cu, 0.3);
    expectClose(await readFloats(out), attentionRef(q.v, k.v, v.v, cu, nq, nkv, hd, 0.3, hdv), dtype);
  });

  test('attention with a shared key part (kShared [T,r]: every head\'s key is kShared then its own k)', async () => {
    const rng = new Rng(92);
    const cu = [0, 5, 12];
    const T = 12;
    const nq = 4;
    const nkv = 2;
    const r = 4;
    const hd = 12;
    const hdv = 8;
    const q = randomFloats(rng, dtype, [T, nq, hd]);
    const kShared = randomFloats(rng, dtype, [T, r]);
    const k = randomFloats(rng, dtype, [T, nkv, hd - r]);
    const v = randomFloats(rng, dtype, [T, nkv, hdv]);
    const whole = new Float64Array(T * nkv * hd);
    for (let t = 0; t < T; t++)
      for (let h = 0; h < nkv; h++)
        for (let d = 0; d < hd; d++) {
          whole[(t * nkv + h) * hd + d] = d < r ? kShared.v[t * r + d] : k.v[(t * nkv + h) * (hd - r) + d - r];
        }
    const out = empty(dtype, [T, nq, hdv]);
    ops.attention(s, out, q.t, k.t, v.t, ints([cu.length], cu), cu, 0.3, kShared.t);
    expectClose(await readFloats(out), attentionRef(q.v, whole, v.v, cu, nq, nkv, hd, 0.3, hdv), dtype);
  });

  test('moe_count: pairs per micro-chunk per expert, empty chunks, ids outside [0,E) not counted', async () => {
    const T = 9;
    const k = 2;
    const E = 5;
    const rng = new Rng(29);
    const topk = rng.ints(T * k, -1, E); // -1 and E fall outside
    const bounds = [0, 4, 4, 7, 9]; // the second micro-chunk is empty
    const counts = empty('i32', [bounds.length - 1, E]);
    ops.moeCount(s, counts, ints([T, k], topk), bounds);
    const want = new Array((bounds.length - 1) * E).fill(0);
    for (let m = 0; m + 1 < bounds.length; m++) {
      for (let i = bounds[m] * k; i < bounds[m + 1] * k; i++) if (topk[i] >= 0 && topk[i] < E) want[m * E + topk[i]]++;
    }
    expect(await readInts(counts)).toEqual(want);
  });

  test('moe_permute: stable grouping by expert, an expert with no rows, dropped pairs', async () => {
    const T = 7;
    const k = 2;
    const E = 5;
    const H = 13;
    const rng = new Rng(13);
    // Expert 3 gets nothing; pair (2,1) names no expert (-1) and pair (5,0) one past the last (E).
    const topk = rng.ints(T * k, 0, 4).map((e) => (e === 3 ? 4 : e));
    topk[2 * k + 1] = -1;
    topk[5 * k + 0] = E;
    const x = randomFloats(rng, dtype, [T, H]);
    const sentinel = 1024;
    const out = floats(dtype, [T * k, H], new Array(T * k * H).fill(sentinel));
    const rowMap = empty('i32', [T, k]);
    const counts = empty('i32', [E]);
    ops.moePermute(s, out.t, rowMap, counts, x.t, ints([T, k], topk));

    const ref = permuteRef(topk, E);
    expect(await readInts(counts)).toEqual(ref.counts);
    expect(ref.counts[3]).toBe(0);
    expect(await readInts(rowMap)).toEqual(ref.rowMap);
    const got = await readFloats(out.t);
    const expected = new Float64Array(T * k * H).fill(sentinel); // rows past sum(counts) stay unwritten
    ref.rowMap.forEach((row, pair) => {
      if (row >= 0) expected.set(x.v.subarray(Math.floor(pair / k) * H, Math.floor(pair / k) * H + H), row * H);
    });
    expect(Array.from(got)).toEqual(Array.from(expected));
  });

  test.each([
    ['every token on one expert', 6, 1, [2, 2, 2, 2, 2, 2]],
    ['one token', 1, 2, [3, 0]],
  ])('moe_permute: %s', async (_name, T, k, topk) => {
    const E = 4;
    const H = 7;
    const x = randomFloats(new Rng(T), dtype, [T, H]);
    const out = empty(dtype, [T * k, H]);
    const rowMap = empty('i32', [T, k]);
    const counts = empty('i32', [E]);
    ops.moePermute(s, out, rowMap, counts, x.t, ints([T, k], topk));
    const ref = permuteRef(topk, E);
    expect(await readInts(counts)).toEqual(ref.counts);
    expect(await readInts(rowMap)).toEqual(ref.rowMap);
    const got = await readFloats(out);
    const expected = new Float64Array(T * k * H);
    ref.rowMap.forEach((row, pair) => expected.set(x.v.subarray(Math.floor(pair / k) * H, Math.floor(pair / k) * H + H), row * H));
    expect(Array.from(got)).toEqual(Array.from(expected));
  });

  test.each([false, true])('moe_unpermute accumulate=%s', async (accumulate) => {
    const T = 6;
    const k = 3;
    const H = 13;
    const R = 15;
    const rng = new Rng(accumulate ? 14 : 15);
    const rowMap = [0, 5, 14, 1, -1, 2, 3, 4, 6, -1, -1, -1, 7, 8, 9, 10, 11, 13];
    const y = randomFloats(rng, dtype, [R, H]);
    const topkW = randomFloats(rng, 'f32', [T, k], 0, 1);
    const out = randomFloats(rng, dtype, [T, H]);
    ops.moeUnpermute(s, out.t, y.t, ints([T, k], rowMap), topkW.t, accumulate);
    const expected = unpermuteRef(y.v, rowMap, topkW.v, T, k, H, accumulate ? out.v : undefined);
    expectClose(await readFloats(out.t), expected, dtype);
  });

  test('add, also in place', async () => {
    const rng = new Rng(16);
    const a = randomFloats(rng, dtype, [5, 37]);
    const b = randomFloats(rng, dtype, [5, 37]);
    const out = empty(dtype, [5, 37]);
    const sum = a.v.map((x, i) => x + b.v[i]);
    ops.add(s, out, a.t, b.t);
    expectClose(await readFloats(out), sum, dtype);
    ops.add(s, a.t, a.t, b.t);
    expectClose(await readFloats(a.t), sum, dtype);
  });

  test('sigmoid_gate_add', async () => {
    const rng = new Rng(17);
    const out = randomFloats(rng, dtype, [5, 37]);
    const y = randomFloats(rng, dtype, [5, 37]);
    const gate = randomFloats(rng, dtype, [5, 1], -3, 3);
    ops.sigmoidGateAdd(s, out.t, y.t, gate.t);
    expectClose(await readFloats(out.t), sigmoidGateAddRef(out.v, y.v, gate.v, 5, 37), dtype);
  });

  test('gather_rows with repeated and skipped rows', async () => {
    const x = randomFloats(new Rng(18), dtype, [5, 13]);
    const idx = [4, 0, 0, 2, 1, 4, 3, 3, 0];
    const out = empty(dtype, [idx.length, 13]);
    ops.gatherRows(s, out, x.t, ints([idx.length], idx));
    expect(Array.from(await readFloats(out))).toEqual(Array.from(gatherRowsRef(x.v, idx, 13)));
  });

  test('embedding, with and without the host copy of the ids', async () => {
    const table = randomFloats(new Rng(19), dtype, [11, 13]);
    const ids = [3, 0, 10, 3, 7, 1];
    const out = empty(dtype, [ids.length, 13]);
    ops.embedding(s, out, table.t, ints([ids.length], ids));
    expect(Array.from(await readFloats(out))).toEqual(Array.from(gatherRowsRef(table.v, ids, 13)));
    const out2 = empty(dtype, [ids.length, 13]);
    ops.embedding(s, out2, table.t, ints([ids.length], ids), ids);
    expect(Array.from(await readFloats(out2))).toEqual(Array.from(gatherRowsRef(table.v, ids, 13)));
  });

  test('fill_random reproduces the counter-based hash of random.h bit for bit', async () => {
    const n = 5000;
    for (const [seed, std] of [
      [0, 1],
      [123456789012, 0.02],
    ]) {
      const out = empty(dtype, [n]);
      ops.fillRandom(s, out, seed, std);
      const expected = Array.from(fillRandomRef(n, seed, std), (x) => roundTo(dtype, x));
      expect(Array.from(await readFloats(out))).toEqual(expected);
    }
  });
});

describe('ops across storage types', () => {
  test('matmul of bf16 activations and f16 weights into f32 has fp32 accuracy', async () => {
    const rng = new Rng(20);
    const a = randomFloats(rng, 'bf16', [9, 37]);
    const w = randomFloats(rng, 'f16', [21, 37]);
    const bias = randomFloats(rng, 'f32', [21]);
    const out = empty('f32', [9, 21]);
    ops.matmul(s, out, a.t, w.t, bias.t);
    expectClose(await readFloats(out), matmulRef(a.v, w.v, 9, 21, 37, bias.v), 'f32');
  });

  test('add of f32 and bf16 into bf16 rounds once, on store', async () => {
    const rng = new Rng(21);
    const a = randomFloats(rng, 'f32', [101]);
    const b = randomFloats(rng, 'bf16', [101]);
    const out = empty('bf16', [101]);
    ops.add(s, out, a.t, b.t);
    expect(Array.from(await readFloats(out))).toEqual(Array.from(a.v, (x, i) => roundBf16(Math.fround(x + b.v[i]))));
  });

  test('moe_permute from f32 rows into bf16 rows rounds each value', async () => {
    const x = randomFloats(new Rng(22), 'f32', [3, 5]);
    const out = empty('bf16', [3, 5]);
    const rowMap = empty('i32', [3, 1]);
    const counts = empty('i32', [2]);
    ops.moePermute(s, out, rowMap, counts, x.t, ints([3, 1], [1, 0, 1]));
    const order = [1, 0, 2]; // expert 0: token 1; expert 1: tokens 0 and 2
    const expected = order.flatMap((t) => Array.from(x.v.subarray(t * 5, t * 5 + 5), roundBf16));
    expect(Array.from(await readFloats(out))).toEqual(expected);
  });

  // Values chosen at the edges of the formats: ties at both ends of the mantissa, the largest
  // finite values, overflow, subnormals and their ties, signed zero, infinities.
  const edges = [
    0,
    -0,
    1,
    -1,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    1 + 2 ** -8,
    1 + 3 * 2 ** -8,
    65504,
    65519,
    65520,
    -70000,
    2 ** -24,
    2 ** -25,
    3 * 2 ** -26,
    2 ** -14 - 2 ** -25,
    2 ** -14,
    5.960464477539063e-8,
    1e-30,
    3.4e38,
    -Infinity,
    Infinity,
    0.1,
    -123.456,
  ];

  test.each([
    ['f16', roundF16],
    ['bf16', roundBf16],
  ] as const)('copy f32 -> %s rounds to nearest even, with subnormals and overflow', async (target, round) => {
    const src = floats('f32', [edges.length], edges);
    const dst = empty(target, [edges.length]);
    ops.copy(s, dst, src.t);
    const got = Array.from(await readFloats(dst));
    expect(got).toEqual(Array.from(src.v, round));
    // And back: widening is exact.
    const back = empty('f32', [edges.length]);
    ops.copy(s, back, dst);
    expect(Array.from(await readFloats(back))).toEqual(got);
  });

  test('copy f16 -> bf16 and i32 -> i32', async () => {
    const values = [1.5, -2.25, 2 ** -20, 1000.5, 65504];
    const src = floats('f16', [values.length], values);
    const dst = empty('bf16', [values.length]);
    ops.copy(s, dst, src.t);
    expect(Array.from(await readFloats(dst))).toEqual(Array.from(src.v, roundBf16));
    const i = ints([4], [7, -1, 2 ** 31 - 1, 0]);
    const j = empty('i32', [4]);
    ops.copy(s, j, i);
    expect(await readInts(j)).toEqual([7, -1, 2 ** 31 - 1, 0]);
  });

  test('router breaks ties by the lower expert index', async () => {
    const E = 6;
    const logits = floats('f32', [3, E], [0, 0, 0, 0, 0, 0, 1, 5, 5, 0, 5, 2, -1, -1, 3, 3, -2, 3]);
    const topkIdx = empty('i32', [3, 3]);
    const topkW = empty('f32', [3, 3]);
    ops.router(s, topkIdx, topkW, logits.t, 3, true, 1);
    expect(await readInts(topkIdx)).toEqual([0, 1, 2, 1, 2, 4, 2, 3, 5]);
    expectClose(await readFloats(topkW), Array(9).fill(1 / 3), 'f32');
  });

  test('fill_random has the asked spread', async () => {
    const out = empty('f32', [20000]);
    ops.fillRandom(s, out, 7, 0.5);
    const v = await readFloats(out);
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
    expect(Math.abs(mean)).toBeLessThan(0.02);
    expect(Math.abs(std - 0.5)).toBeLessThan(0.02);
    expect(Math.max(...v)).toBeLessThanOrEqual(0.5 * Math.sqrt(3));
  });

  test('ops on zero rows do nothing and do not fail', async () => {
    const a = empty('f32', [0, 8]);
    const w = floats('f32', [3, 8], new Array(24).fill(1));
    const out = empty('f32', [0, 3]);
    ops.matmul(s, out, a, w.t);
    ops.expertMatmul(s, out, a, w.t.reshape([1, 3, 8]), [0], 'grouped');
    ops.swiglu(s, empty('f32', [0, 4]), empty('f32', [0, 8]));
    const qkv = (heads: number) => empty('f32', [0, heads, 4]);
    ops.attention(s, qkv(2), qkv(2), qkv(1), qkv(1), ints([1], [0]), [0], 0.5);
    await s.synchronize();
  });
});

test('the CPU device names its kernels: one attention routine, grouped and dense expert GEMMs', () => {
  expect(device.native.attentionKernels).toEqual(['reference']);
  expect(device.native.expertKernels).toEqual(['grouped', 'dense']);
});

describe('errors found while an op runs fail the stream, naming the op', () => {
  let bad: Stream;
  beforeEach(() => {
    bad = device.stream();
  });
  afterEach(() => bad.dispose());

  test('gather_rows with an index past the rows', async () => {
    const x = floats('f32', [5, 4], new Array(20).fill(0), bad);
    ops.gatherRows(bad, empty('f32', [2, 4]), x.t, ints([2], [1, 9], bad));
    await expect(bad.synchronize()).rejects.toThrow(/gather_rows.*idx\[1\] = 9 is outside \[0, 5\)/);
  });

  test('embedding with an id past the vocabulary', async () => {
    const table = floats('f32', [3, 4], new Array(12).fill(0), bad);
    ops.embedding(bad, empty('f32', [1, 4]), table.t, ints([1], [-2], bad));
    await expect(bad.synchronize()).rejects.toThrow(/embedding.*ids\[0\] = -2/);
  });

  test('moe_unpermute with a row map past y', async () => {
    const y = floats('f32', [2, 3], new Array(6).fill(1), bad);
    const w = floats('f32', [1, 2], [1, 1], bad);
    ops.moeUnpermute(bad, empty('f32', [1, 3]), y.t, ints([1, 2], [0, 2], bad), w.t, false);
    await expect(bad.synchronize()).rejects.toThrow(/moe_unpermute.*rowMap\[0,1\] = 2/);
  });
});

describe('checkOp rejects calls that break the contract, naming the op and the argument', () => {
  const f = (shape: number[], dtype: FloatStorage | 'i32' = 'f32'): Tensor => empty(dtype, shape);
  const call =
    (name: string, tensors: (Tensor | null)[], params: number[] = [], intArgs: number[] = []) =>
    () =>
      device.native.op(
        s.native,
        name,
        tensors.map((t) => t?.native ?? null),
        params,
        intArgs,
      );

  test.each<[string, () => () => void, RegExp]>([
    ['unknown op', () => call('nope', []), /unknown op 'nope' \(known: .*matmul/],
    [
      'matmul w of the wrong K',
      () => () => ops.matmul(s, f([3, 5]), f([3, 64]), f([5, 32])),
      /matmul: w must be \[N,K\] with K=64 \(a is \[3,64\]\); got \[5,32\]/,
    ],
    [
      'matmul out of the wrong shape',
      () => () => ops.matmul(s, f([3, 6]), f([3, 4]), f([5, 4])),
      /matmul: out must be \[M,N\] with M=3, N=5/,
    ],
    [
      'matmul bias of the wrong length',
      () => () => ops.matmul(s, f([3, 5]), f([3, 4]), f([5, 4]), f([4])),
      /matmul: bias must be \[N\] with N=5/,
    ],
    [
      'matmul with too few tensors',
      () => call('matmul', [f([1, 1]), f([1, 1])]),
      /matmul: expects 3 to 4 tensors \(out, a, w, bias\); got 2/,
    ],
    ['a required tensor given as null', () => call('matmul', [f([1, 1]), null, f([1, 1])]), /matmul: a is required; got null/],
    [
      'an i32 tensor where a float one belongs',
      () => () => ops.matmul(s, f([2, 2]), f([2, 2], 'i32'), f([2, 2])),
      /matmul: a must be a float tensor.*got i32/,
    ],
    [
      'a float tensor where an i32 one belongs',
      () => () => ops.router(s, f([2, 1]), f([2, 1]), f([2, 4]), 1, false, 1),
      /router: topkIdx must be i32; got f32/,
    ],
    [
      'router topkW in bf16',
      () => () => ops.router(s, f([2, 1], 'i32'), f([2, 1], 'bf16'), f([2, 4]), 1, false, 1),
      /router: topkW must be f32; got bf16/,
    ],
    [
      'router k above E',
      () => () => ops.router(s, f([2, 5], 'i32'), f([2, 5]), f([2, 4]), 5, false, 1),
      /router: k must be an integer in \[1, 4\]; got 5/,
    ],
    [
      'router output not [T,k]',
      () => () => ops.router(s, f([2, 3], 'i32'), f([2, 2]), f([2, 4]), 2, false, 1),
      /router: topkIdx must be \[T,k\] with T=2, k=2/,
    ],
    ['rmsnorm without eps', () => call('rmsnorm', [f([2, 4]), f([2, 4]), f([4])]), /rmsnorm: expects 1 params \(eps\); got 0/],
    [
      'rmsnorm x of another width than w',
      () => () => ops.rmsnorm(s, f([2, 4]), f([2, 4]), f([5]), 1e-6),
      /rmsnorm: x must be \[\.\.,H\] with H=5/,
    ],
    ['a NaN param', () => () => ops.rmsnorm(s, f([2, 4]), f([2, 4]), f([4]), NaN), /rmsnorm: eps must be finite/],
    [
      'attention nq not a multiple of nkv',
      () => () => ops.attention(s, f([2, 3, 4]), f([2, 3, 4]), f([2, 2, 4]), f([2, 2, 4]), f([2], 'i32'), [0, 2], 1),
      /attention: nq % nkv must be 0.*nq=3, nkv=2/,
    ],
    [
      'attention cuSeqlens not ending at T',
      () => () => ops.attention(s, f([3, 2, 4]), f([3, 2, 4]), f([3, 1, 4]), f([3, 1, 4]), f([3], 'i32'), [0, 1, 2], 1),
      /attention: cuSeqlens\[B\] must be T=3.*got 2/,
    ],
    [
      'attention host cuSeqlens of the wrong length',
      () => () => ops.attention(s, f([3, 2, 4]), f([3, 2, 4]), f([3, 1, 4]), f([3, 1, 4]), f([3], 'i32'), [0, 3], 1),
      /attention: ints must hold the host copy of cuSeqlens/,
    ],
    [
      'attention decreasing cuSeqlens',
      () => () => ops.attention(s, f([3, 2, 4]), f([3, 2, 4]), f([3, 1, 4]), f([3, 1, 4]), f([4], 'i32'), [0, 2, 1, 3], 1),
      /attention: cuSeqlens must not decrease/,
    ],
    [
      'attention v unlike k',
      () => () => ops.attention(s, f([3, 2, 4]), f([3, 2, 4]), f([3, 1, 4]), f([3, 2, 4]), f([2], 'i32'), [0, 3], 1),
      /attention: v must be \[T,nkv,hdv\] with T=3, nkv=1/,
    ],
    [
      'attention k not [T,nkv,hd-r] beside kShared',
      () => () => ops.attention(s, f([3, 2, 4]), f([3, 2, 6]), f([3, 2, 6]), f([3, 2, 4]), f([2], 'i32'), [0, 3], 1, f([3, 2])),
      /attention: k must be \[T,nkv,hd-r\] with T=3, hd-r=4 \(q is \[3,2,6\]\), kShared is \[3,2\]; got \[3,2,6\]/,
    ],
    [
      'attention kShared as wide as the head',
      () => () => ops.attention(s, f([3, 2, 4]), f([3, 2, 6]), f([3, 2, 0]), f([3, 2, 4]), f([2], 'i32'), [0, 3], 1, f([3, 6])),
      /attention: kShared must be \[T,r\] with 0 < r < hd=6 \(q is \[3,2,6\]\); got \[3,6\]/,
    ],
    [
      'attention kShared of another T',
      () => () => ops.attention(s, f([3, 2, 4]), f([3, 2, 6]), f([3, 2, 4]), f([3, 2, 4]), f([2], 'i32'), [0, 3], 1, f([4, 2])),
      /attention: kShared must be \[T,r\] with T=3/,
    ],
    [
      'expert_matmul swiglu with an odd N',
      () => () => ops.expertMatmul(s, f([4, 1]), f([4, 5]), f([2, 3, 5]), [1, 3], 'grouped', true),
      /expert_matmul: with swiglu, w must be \[E,2I,K\] \(gate rows, then up rows\); got \[2,3,5\]/,
    ],
    [
      'expert_matmul swiglu out not [R,N/2]',
      () => () => ops.expertMatmul(s, f([4, 4]), f([4, 5]), f([2, 4, 5]), [1, 3], 'grouped', true),
      /expert_matmul: out must be \[R,I\] with R=4, I=N\/2=2/,
    ],
    [
      'expert_matmul counts not summing to R',
      () => () => ops.expertMatmul(s, f([4, 3]), f([4, 5]), f([2, 3, 5]), [1, 2], 'grouped'),
      /expert_matmul: counts must sum to R=4 \(a is \[4,5\]\); got 3/,
    ],
    [
      'expert_matmul counts not a multiple of E',
      () => () => ops.expertMatmul(s, f([4, 3]), f([4, 5]), f([2, 3, 5]), [1, 2, 1], 'dense'),
      /expert_matmul: ints must hold counts\[S\] with S a positive multiple of E=2/,
    ],
    [
      'expert_matmul a negative count',
      () => () => ops.expertMatmul(s, f([4, 3]), f([4, 5]), f([2, 3, 5]), [5, -1], 'dense'),
      /expert_matmul: counts\[1\] must be >= 0; got -1/,
    ],
    [
      'expert_matmul counts both as ints and as a tensor',
      () => call('expert_matmul', [f([4, 3]), f([4, 5]), f([2, 3, 5]), f([2], 'i32')], [0, 0], [1, 3]),
      /expert_matmul: counts come either as the segmentCounts tensor or as ints, not both/,
    ],
    [
      'expert_matmul device counts not a multiple of E',
      () => () => ops.expertMatmul(s, f([4, 3]), f([4, 5]), f([2, 3, 5]), f([3], 'i32'), 'dense'),
      /expert_matmul: segmentCounts must be \[S\] with S a positive multiple of E=2/,
    ],
    [
      'expert_matmul an unknown kernel code',
      () => call('expert_matmul', [f([1, 3]), f([1, 5]), f([1, 3, 5])], [3, 0], [1]),
      /expert_matmul: kernel must be one of grouped=0, dense=1, grouped_sm90=2; got 3/,
    ],
    [
      'expert_matmul an unknown kernel name (caught before the addon)',
      () => () => ops.expertMatmul(s, f([1, 3]), f([1, 5]), f([1, 3, 5]), [1], 'fast' as ops.ExpertKernel),
      /expert_matmul: kernel must be one of grouped, dense, grouped_sm90; got "fast"/,
    ],
    [
      'router renormalize neither 0 nor 1',
      () => call('router', [f([2, 1], 'i32'), f([2, 1]), f([2, 4])], [1, 2, 1, 0, 0, 1, 1]),
      /router: renormalize must be a boolean \(0 or 1\); got 2/,
    ],
    [
      'router groups not dividing E',
      () => call('router', [f([2, 1], 'i32'), f([2, 1]), f([2, 6])], [1, 0, 1, 0, 1, 4, 1]),
      /router: groups must divide E=6/,
    ],
    [
      'router kept groups holding fewer than k experts',
      () => call('router', [f([2, 3], 'i32'), f([2, 3]), f([2, 8])], [3, 0, 1, 1, 2, 4, 1]),
      /router: the topkGroup=1 kept groups of 2 experts hold fewer than k=3/,
    ],
    [
      'router expertGroup with a group too large',
      () => call('router', [f([2, 1], 'i32'), f([2, 1]), f([2, 4])], [1, 0, 1, 0, 1, 2, 1], [0, 0, 0, 1]),
      /router: expertGroup must give every group E\/groups=2 experts; group 0 has 3/,
    ],
    [
      'copy_cols past the end of out',
      () => call('copy_cols', [f([4, 3]), f([2, 5])], [], [1, 0, 3, 2]),
      /copy_cols: columns \[dstCol, dstCol\+width\) = \[1, 4\) of out/,
    ],
    [
      'attention out not [T,nq,hdv]',
      () => call('attention', [f([2, 1, 6]), f([2, 1, 6]), f([2, 1, 6]), f([2, 1, 4]), f([2], 'i32')], [0.5], [0, 2]),
      /attention: out must be \[T,nq,hdv\]/,
    ],
    ['ints given to an op that takes none', () => call('swiglu', [f([2, 2]), f([2, 4])], [], [1]), /swiglu: takes no ints; got 1/],
    [
      'swiglu gateUp of odd width',
      () => () => ops.swiglu(s, f([2, 2]), f([2, 5])),
      /swiglu: gateUp must be \[T,2I\] with an even last dimension/,
    ],
    [
      'moe_count bounds not ending at T',
      () => () => ops.moeCount(s, f([2, 4], 'i32'), f([5, 2], 'i32'), [0, 2, 4]),
      /moe_count: bounds must start at 0 and end at T=5/,
    ],
    [
      'moe_permute out not [T*k,H]',
      () => () => ops.moePermute(s, f([5, 4]), f([3, 2], 'i32'), f([4], 'i32'), f([3, 4]), f([3, 2], 'i32')),
      /moe_permute: out must be \[T\*k,H\] with T\*k=6, H=4/,
    ],
    [
      'moe_unpermute topkW unlike rowMap',
      () => () => ops.moeUnpermute(s, f([3, 4]), f([6, 4]), f([3, 2], 'i32'), f([3, 1]), false),
      /moe_unpermute: topkW must be \[T,k\] with T=3, k=2/,
    ],
    [
      'sigmoid_gate_add gate not [T,1]',
      () => () => ops.sigmoidGateAdd(s, f([3, 4]), f([3, 4]), f([3, 4])),
      /sigmoid_gate_add: gate must be \[T,1\] with T=3/,
    ],
    [
      'add of different sizes',
      () => () => ops.add(s, f([3, 4]), f([3, 4]), f([4, 4])),
      /add: b must have 12 elements \(out is \[3,4\]\); got \[4,4\]/,
    ],
    [
      'copy between float and i32',
      () => () => ops.copy(s, f([4], 'i32'), f([4])),
      /copy: dst and src must both be float or both i32; got dst i32, src f32/,
    ],
    ['gather_rows idx of floats', () => () => ops.gatherRows(s, f([2, 4]), f([3, 4]), f([2])), /gather_rows: idx must be i32; got f32/],
    [
      'embedding host ids out of range',
      () => () => ops.embedding(s, f([2, 4]), f([3, 4]), f([2], 'i32'), [0, 3]),
      /embedding: ids\[1\] = 3 is outside \[0, 3\)/,
    ],
    [
      'rope with more rotary dims than hd',
      () => () => ops.rope(s, f([2, 1, 4]), f([2], 'i32'), f([3]), 1),
      /rope: invFreq must be \[rd\/2\] with rd <= hd=4/,
    ],
    [
      'rope normWeight not [hd]',
      () => () => ops.rope(s, f([2, 1, 4]), f([2], 'i32'), f([2]), 1, { weight: f([3]), eps: 1e-6 }),
      /rope: normWeight must be \[hd\] with hd=4 .*got \[3\]/,
    ],
    [
      'rope normEps negative',
      () => () => ops.rope(s, f([2, 1, 4]), f([2], 'i32'), f([2]), 1, { weight: f([4]), eps: -1 }),
      /rope: normEps must be >= 0; got -1/,
    ],
    [
      'rmsnorm residual not x\'s shape',
      () => () => ops.rmsnorm(s, f([2, 4]), f([2, 4]), f([4]), 1e-6, f([4, 2])),
      /rmsnorm: residual must have x's shape \(x is \[2,4\]\); got \[4,2\]/,
    ],
    [
      'rmsnorm in place with a residual',
      () => {
        const x = f([2, 4]);
        return () => ops.rmsnorm(s, x, x, f([4]), 1e-6, f([2, 4]));
      },
      /rmsnorm: out must not be x when a residual is given/,
    ],
    [
      'rope invFreq in bf16',
      () => () => ops.rope(s, f([2, 1, 4]), f([2], 'i32'), f([2], 'bf16'), 1),
      /rope: invFreq must be f32; got bf16/,
    ],
    [
      'fill_random a fractional seed',
      () => () => ops.fillRandom(s, f([4]), 1.5, 1),
      /fill_random: seed must be an integer in \[0, 9007199254740992\]; got 1.5/,
    ],
  ])('%s', (_name, makeCall, message) => {
    const fn = makeCall();
    expect(fn).toThrow(message);
    try {
      fn();
    } catch (e) {
      expect((e as { code?: string }).code).toBe('EPS_INVALID_ARGUMENT');
    }
  });

  test('an output that overlaps an input, where the contract forbids it', () => {
    const x = f([4, 8]);
    const w = f([8, 8]);
    expect(() => ops.matmul(s, x, x, w)).toThrow(/matmul: out must not overlap a; they share memory/);
    // Rows 1-2 of x overlap rows 0-1 without being them: rmsnorm allows only exact aliasing.
    expect(() => ops.rmsnorm(s, x.rows(1, 2), x.rows(0, 2), f([8]), 1e-6)).toThrow(/rmsnorm: out may alias x only exactly/);
    // Disjoint views of one tensor are fine.
    expect(() => ops.add(s, x.rows(0, 2), x.rows(2, 2), x.rows(2, 2))).not.toThrow();
  });
});
