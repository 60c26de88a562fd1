// moe_rank_dispatch (the deduplicated dispatch) on the CPU backend against an independent reference
// (test/reference/rankDispatch.ts): exact rows, maps, counts and slots, for f32 and bf16 rows, with
// k > W, tokens whose experts all sit on one rank, ranks that get nothing, ranks with no experts,
// and slots naming no expert; plus the contract checks.
import type { Tensor } from '../src/native/device';
import { cpuTestDevice } from './helpers/cpuDevice';
import * as ops from '../src/native/ops';
import { Rng, encodeFloats, roundTo, type FloatStorage } from './reference/numeric';
import { rankDispatchRef } from './reference/rankDispatch';

const { device, stream: s, keep } = cpuTestDevice();

function tensor(dtype: FloatStorage | 'i32', shape: number[]): Tensor {
  const t = device.tensor(dtype, shape);
  keep(t);
  return t;
}

async function read(t: Tensor): Promise<number[]> {
  return Array.from(await t.read(s));
}

interface Case {
  name: string;
  T: number;
  k: number;
  offsets: number[];
  /** topkIdx [T,k]; random over [0, offsets[W]) when absent. */
  topk?: number[];
}

const cases: Case[] = [
  { name: 'random, 2 ranks, top-6 of 16', T: 23, k: 6, offsets: [0, 8, 16] },
  { name: 'k > W: top-4 on 3 ranks', T: 11, k: 4, offsets: [0, 3, 6, 9] },
  { name: 'k < W: top-2 on 4 ranks', T: 9, k: 2, offsets: [0, 2, 4, 6, 8] },
  // Every token's experts on rank 1 only; rank 0 gets no rows.
  {
    name: 'all experts of each token on one rank, an empty rank',
    T: 5,
    k: 3,
    offsets: [0, 4, 8],
    topk: [4, 5, 6, 7, 6, 5, 4, 4, 7, 5, 6, 4, 7, 6, 5],
  },
  // Rank 1 holds no experts; -1 and 9 (= offsets[W]) name no expert, token 2 goes nowhere.
  { name: 'a rank with no experts, slots naming no expert', T: 4, k: 2, offsets: [0, 5, 5, 9], topk: [0, 8, -1, 3, -1, 9, 6, 7] },
  { name: 'one rank', T: 6, k: 3, offsets: [0, 6] },
  { name: 'no tokens', T: 0, k: 2, offsets: [0, 2, 4] },
];

describe.each<FloatStorage>(['f32', 'bf16'])('moe_rank_dispatch on %s rows', (dtype) => {
  test.each(cases)('$name', async ({ T, k, offsets, topk }) => {
    const W = offsets.length - 1;
    const H = 9;
    const rng = new Rng(T * 31 + k);
    const topkIdx = topk ?? rng.ints(T * k, 0, offsets[W] - 1);
    const topkW = Float32Array.from(rng.array(T * k, 0, 1));
    const xv = Float64Array.from(rng.array(T * H), (v) => roundTo(dtype, v));
    const R = T * Math.min(k, W);
    const x = tensor(dtype, [T, H]);
    x.upload(s, encodeFloats(dtype, xv));
    const idx = tensor('i32', [T, k]);
    idx.upload(s, Int32Array.from(topkIdx));
    const w = tensor('f32', [T, k]);
    w.upload(s, topkW);
    // Sentinels in every output show what the op leaves unwritten.
    const sentinel = 512;
    const out = tensor(dtype, [R, H]);
    out.upload(s, encodeFloats(dtype, new Float64Array(R * H).fill(sentinel)));
    const localIdx = tensor('i32', [R, k]);
    localIdx.upload(s, new Int32Array(R * k).fill(-7));
    const localW = tensor('f32', [R, k]);
    localW.upload(s, new Float32Array(R * k).fill(sentinel));
    const rowMap = tensor('i32', [T, W]);
    const counts = tensor('i32', [W]);
    ops.moeRankDispatch(s, out, rowMap, counts, localIdx, localW, x, idx, w, offsets);

    const ref = rankDispatchRef(topkIdx, topkW, T, k, offsets);
    const rows = ref.pairs.length;
    expect(await read(counts)).toEqual(ref.counts);
    expect(await read(rowMap)).toEqual(ref.rowMap);
    const gotIdx = await read(localIdx);
    expect(gotIdx.slice(0, rows * k)).toEqual(ref.localIdx);
    expect(gotIdx.slice(rows * k)).toEqual(new Array(R * k - rows * k).fill(-7));
    const gotW = await read(localW);
    expect(gotW.slice(0, rows * k)).toEqual(ref.localW.map((v) => Math.fround(v)));
    const expected = new Array<number>(R * H).fill(sentinel);
    ref.pairs.forEach(({ token }, row) => {
      for (let h = 0; h < H; h++) expected[row * H + h] = xv[token * H + h];
    });
    expect(await read(out)).toEqual(expected);
  });
});

test('the rows equal the distinct (token, rank) pairs: top-6 of 160 experts on 2 ranks sends far fewer than T*k', async () => {
  const T = 64;
  const k = 6;
  const offsets = [0, 80, 160];
  const rng = new Rng(99);
  const topkIdx: number[] = [];
  for (let t = 0; t < T; t++) {
    // k distinct experts per token, as the router picks them.
    const picked = new Set<number>();
    while (picked.size < k) picked.add(rng.ints(1, 0, 159)[0]);
    topkIdx.push(...picked);
  }
  let distinct = 0;
  for (let t = 0; t < T; t++) distinct += new Set(topkIdx.slice(t * k, t * k + k).map((e) => (e < 80 ? 0 : 1))).size;
  const R = T * 2;
  const counts = tensor('i32', [2]);
  const idx = tensor('i32', [T, k]);
  idx.upload(s, Int32Array.from(topkIdx));
  const w = tensor('f32', [T, k]);
  w.upload(s, new Float32Array(T * k).fill(1));
  const x = tensor('f32', [T, 4]);
  x.upload(s, new Float32Array(T * 4));
  ops.moeRankDispatch(
    s,
    tensor('f32', [R, 4]),
    tensor('i32', [T, 2]),
    counts,
    tensor('i32', [R, k]),
    tensor('f32', [R, k]),
    x,
    idx,
    w,
    offsets,
  );
  const c = await read(counts);
  expect(c[0] + c[1]).toBe(distinct);
  expect(distinct).toBeLessThanOrEqual(2 * T);
  expect(distinct).toBeLessThan(T * k);
});

describe('moe_rank_count: the rows moe_rank_dispatch sends each rank, per micro-chunk', () => {
  test.each(cases)('$name', async ({ T, k, offsets, topk }) => {
    const W = offsets.length - 1;
    const rng = new Rng(T * 17 + k);
    const topkIdx = topk ?? rng.ints(T * k, 0, offsets[W] - 1);
    const bounds = [0, Math.floor(T / 3), Math.floor(T / 3), T]; // an empty micro-chunk in the middle
    const M = bounds.length - 1;
    const idx = tensor('i32', [T, k]);
    idx.upload(s, Int32Array.from(topkIdx));
    const counts = tensor('i32', [M, W]);
    ops.moeRankCount(s, counts, idx, offsets, bounds);
    // Independent count: the distinct owners of each token's experts, per micro-chunk.
    const owner = (e: number) => (e < 0 || e >= offsets[W] ? -1 : offsets.reduce((last, o, p) => (o <= e ? p : last), -1));
    const expected = new Array<number>(M * W).fill(0);
    for (let m = 0; m < M; m++)
      for (let t = bounds[m]; t < bounds[m + 1]; t++)
        for (const p of new Set(topkIdx.slice(t * k, t * k + k).map(owner))) if (p >= 0) expected[m * W + p]++;
    expect(await read(counts)).toEqual(expected);
    // Summed over micro-chunks: moe_rank_dispatch's counts.
    const ref = rankDispatchRef(topkIdx, new Array(T * k).fill(1), T, k, offsets);
    expect(Array.from({ length: W }, (_, p) => expected.filter((_, i) => i % W === p).reduce((a, b) => a + b, 0))).toEqual(ref.counts);
  });

  test('contract: ints hold offsets then bounds', () => {
    const idx = tensor('i32', [4, 2]);
    expect(() => ops.moeRankCount(s, tensor('i32', [2, 2]), idx, [0, 2, 4], [0, 4])).toThrow(/offsets\[W\+1\] then bounds\[M\+1\]/);
    expect(() => ops.moeRankCount(s, tensor('i32', [1, 2]), idx, [0, 2, 4], [0, 3])).toThrow(/bounds must start at 0 and end at T=4/);
    expect(() => ops.moeRankCount(s, tensor('i32', [1, 2]), idx, [0, 3, 2], [0, 4])).toThrow(/offsets must not decrease/);
  });
});

describe('checkOp rejects moe_rank_dispatch calls that break the contract', () => {
  const call =
    (R: number, W: number, offsets: number[], rowMapW = W) =>
    () =>
      ops.moeRankDispatch(
        s,
        tensor('f32', [R, 4]),
        tensor('i32', [3, rowMapW]),
        tensor('i32', [W]),
        tensor('i32', [R, 2]),
        tensor('f32', [R, 2]),
        tensor('f32', [3, 4]),
        tensor('i32', [3, 2]),
        tensor('f32', [3, 2]),
        offsets,
      );
  test.each([
    ['out rows not T*min(k,W)', call(9, 3, [0, 1, 2, 3]), /moe_rank_dispatch: out must be \[R,H\] with R=T\*min\(k,W\)=6/],
    ['rowMap not [T,W]', call(6, 3, [0, 1, 2, 3], 2), /moe_rank_dispatch: rowMap must be \[T,W\] with T=3, W=3/],
    ['offsets count', call(6, 3, [0, 1, 2]), /moe_rank_dispatch: ints must hold offsets\[W\+1\] with W=3/],
    ['offsets decreasing', call(6, 3, [0, 2, 1, 3]), /moe_rank_dispatch: offsets must not decrease/],
    ['offsets not from 0', call(6, 3, [1, 2, 3, 4]), /moe_rank_dispatch: offsets must start at 0/],
  ])('%s', (_name, f, message) => {
    expect(f).toThrow(message);
  });
});
