// planMoeLayer on synthetic cost models whose predictions can be worked out by hand: GEMM curves
// proportional to rows (exact under log-log interpolation), all-to-all = latency + bytes / bandwidth,
// small ops free unless a test says otherwise. Rows per peer and per segment are recomputed here from
// the counts, independently of the planner.
import { type MoePlan } from '../src/moe/plan/plan';
import { expertRanges } from '../src/moe/placement';
import { NoCostModelError, PlanInputError, type MoePlanInput, autoDegrees, planMoeLayer } from '../src/moe/plan/planner';
import {
  flatStartDense,
  inputFor,
  microBounds,
  planAll,
  proportional,
  randomCounts,
  rowsTo,
  syntheticModel,
  uniform,
} from './helpers/planning';
import { parseMoeSchedule } from '../src/moe/schedule';

/** Checks every chunk's rows against the counts, and that the all-to-alls pair up across ranks. */
function expectConsistent(plans: MoePlan[], counts: number[][][]): void {
  const W = plans.length;
  const E = counts[0][0].length;
  const ranges = expertRanges(E, W);
  const first = plans[0];
  for (const p of plans) {
    expect(p.degree).toBe(first.degree);
    expect(p.chunks.map((c) => [c.microStart, c.microEnd])).toEqual(first.chunks.map((c) => [c.microStart, c.microEnd]));
    expect(p.commOrder).toEqual(first.commOrder);
  }
  expect(first.chunks[0].microStart).toBe(0);
  expect(first.chunks[first.chunks.length - 1].microEnd).toBe(counts[0].length);
  for (let i = 0; i < first.chunks.length; i++) {
    const { microStart: a, microEnd: b } = first.chunks[i];
    expect(b).toBeGreaterThan(a);
    if (i > 0) expect(a).toBe(first.chunks[i - 1].microEnd);
    let global = 0;
    for (let r = 0; r < W; r++) {
      const c = plans[r].chunks[i];
      expect(c.sentRows).toEqual(ranges.map((range) => rowsTo(counts, r, range, a, b)));
      expect(c.recvRows).toEqual(ranges.map((_, src) => rowsTo(counts, src, ranges[r], a, b)));
      const segments: number[] = [];
      for (let src = 0; src < W; src++) {
        for (let e = ranges[r].first; e < ranges[r].first + ranges[r].count; e++)
          segments.push(rowsTo(counts, src, { first: e, count: 1 }, a, b));
      }
      expect(c.segments).toEqual(segments);
      for (let q = 0; q < W; q++) expect(c.recvRows[q]).toBe(plans[q].chunks[i].sentRows[r]);
      global += c.sentRows.reduce((x, y) => x + y, 0);
    }
    for (const p of plans) expect(p.chunks[i].globalRows).toBe(global);
  }
}

describe('auto', () => {
  test('free communication: D = 1 and the faster kernel', () => {
    const counts = uniform(2, 8, 4, 4);
    const groupedFaster = syntheticModel({
      world: 2,
      groupedPerRow: 0.001,
      densePerRow: 0.002,
      groupedOverhead: 0.01,
      denseOverhead: 0.01,
    });
    for (const p of planAll(counts, groupedFaster, 'auto')) {
      expect(p.degree).toBe(1);
      expect(p.chunks[0].kernel).toBe('grouped');
      // Each rank computes 128 rows: two GEMMs of 0.01 + 128 x 0.001.
      expect(p.predictedMs).toBeCloseTo(2 * (0.01 + 0.128), 9);
    }
    const denseFaster = syntheticModel({ world: 2, groupedPerRow: 0.003, densePerRow: 0.002, groupedOverhead: 0.01, denseOverhead: 0.01 });
    for (const p of planAll(counts, denseFaster, 'auto')) {
      expect(p.degree).toBe(1);
      expect(p.chunks[0].kernel).toBe('dense');
      expect(p.predictedMs).toBeCloseTo(2 * (0.01 + 0.256), 9);
    }
  });

  test('all-to-all as long as the GEMMs: D > 1 is predicted faster', () => {
    // Per rank: 128 rows sent, 64 of them to the other rank (8 KiB); 128 rows computed.
    // G = 2 GEMMs x 128 rows x 0.00025 = 0.064 ms; C = 8192 B / 128000 B/ms = 0.064 ms.
    const counts = uniform(2, 8, 4, 4);
    const model = syntheticModel({ world: 2, groupedPerRow: 0.00025, densePerRow: 0.0005, bytesPerMs: 128000 });
    const plans = planAll(counts, model, 'auto');
    expectConsistent(plans, counts);
    const [p] = plans;
    const C = 0.064;
    // D = 1: dispatch, FFN, combine in sequence.
    expect(p.candidates[0].degree).toBe(1);
    expect(p.candidates[0].ms).toBeCloseTo(3 * C, 9);
    // D = 2: the comm stream is busy all along: 4 all-to-alls of C / 2 (see the timeline in plan.ts's order).
    expect(p.candidates[1].ms).toBeCloseTo(2 * C, 9);
    // No D beats the comm stream's own 2C; the smallest D that reaches it wins.
    for (const c of p.candidates) expect(c.ms).toBeGreaterThanOrEqual(2 * C - 1e-9);
    expect(p.degree).toBe(2);
    expect(p.predictedMs).toBeCloseTo(2 * C, 9);
    expect(p.chunks.map((c) => [c.microStart, c.microEnd, c.tokenStart, c.tokenEnd])).toEqual([
      [0, 4, 0, 32],
      [4, 8, 32, 64],
    ]);
    // The predicted timeline of this rank: both streams busy at once.
    const at = (name: string) => p.timeline.find((o) => o.name === name)!;
    expect(at('dispatch 1').startMs).toBeCloseTo(C / 2, 9);
    expect(at('ffn 0').startMs).toBeCloseTo(C / 2, 9);
    expect(at('combine 1').endMs).toBeCloseTo(2 * C, 9);
  });

  test('the kernel is chosen per rank: few rows per expert grouped, many dense', () => {
    // grouped: 0.01 ms per row; dense: 0.1 ms per GEMM up to 64 rows, then 0.1 / 64 per row.
    const model = syntheticModel({
      world: 2,
      grouped: proportional(0.01),
      dense: flatStartDense,
    });
    // Experts 0,1 (rank 0) get 16 rows per micro-chunk from each rank; experts 2,3 (rank 1) get 1.
    const counts = Array.from({ length: 2 }, () => Array.from({ length: 2 }, () => [16, 16, 1, 1]));
    const plans = planAll(counts, model, 'auto');
    expectConsistent(plans, counts);
    expect(plans[0].degree).toBe(1);
    // Rank 0: 4 segments of 32 rows: grouped 4 x 0.32, dense 4 x 0.1.
    expect(plans[0].chunks[0].kernel).toBe('dense');
    expect(plans[0].chunks[0].predicted.kernelMs.grouped).toBeCloseTo(2 * 4 * 0.32, 9);
    expect(plans[0].chunks[0].predicted.kernelMs.dense).toBeCloseTo(2 * 4 * 0.1, 9);
    // Rank 1: 4 segments of 2 rows: grouped 4 x 0.02, dense 4 x 0.1.
    expect(plans[1].chunks[0].kernel).toBe('grouped');
    expect(plans[1].chunks[0].predicted.kernelMs.grouped).toBeCloseTo(2 * 4 * 0.02, 9);
  });

  test('random loads on 4 ranks: every rank plans the same chunks, and the rows pair up', () => {
    const counts = randomCounts(4, 8, 16, 2, [300, 17, 0, 120], 7);
    const model = syntheticModel({
      world: 4,
      groupedPerRow: 0.0004,
      densePerRow: 0.0003,
      denseOverhead: 0.002,
      latencyMs: 0.005,
      bytesPerMs: 200000,
    });
    const plans = planAll(counts, model, 'auto');
    expectConsistent(plans, counts);
    // Rank 0 searches; the others find its decision under the same load signature (planCache.ts).
    expect(plans[0].candidates.map((c) => c.degree)).toEqual([1, 2, 4, 8]);
    for (const p of plans.slice(1)) expect(p.candidates.map((c) => c.degree)).toEqual([plans[0].degree]);
    for (const p of plans) {
      expect(p.predictedMs).toBe(plans[0].predictedMs);
      // The chosen D is within tolerance of the best and no larger D was needed.
      const best = Math.min(...p.candidates.map((c) => c.ms));
      expect(p.predictedMs).toBeLessThanOrEqual(best * 1.02 + 1e-12);
      for (const c of p.candidates) if (c.degree < p.degree) expect(c.ms).toBeGreaterThan(best * 1.02);
    }
    // Rank 2 has no tokens: empty token ranges, nothing sent, but it still receives and computes.
    for (const c of plans[2].chunks) {
      expect([c.tokenStart, c.tokenEnd]).toEqual([0, 0]);
      expect(c.sentRows).toEqual([0, 0, 0, 0]);
    }
    expect(plans[2].chunks.reduce((a, c) => a + c.recvRows.reduce((x, y) => x + y, 0), 0)).toBeGreaterThan(0);
  });

  test('a world of one: D = 1 whatever the model says', () => {
    const counts = uniform(1, 8, 4, 3);
    const [p] = planAll(counts, syntheticModel({ world: 1 }), 'auto');
    expect(p.degree).toBe(1);
    expect(p.candidates.map((c) => c.degree)).toEqual([1]);
    expect(p.chunks[0].sentRows).toEqual([96]);
    expect(p.chunks[0].recvRows).toEqual([96]);
    expect(p.chunks[0].segments).toEqual([24, 24, 24, 24]);
    expect(p.explain()).toMatch(/a world of one has no all-to-all to hide/);
  });

  test('a lone rank: what was enqueued before the host sync does not wait for it (timeline by hand)', () => {
    // One rank, 4 experts x 24 rows, grouped at 0.001 ms a row: FFN = 2 GEMMs x 96 rows = 0.192 ms; router, permute and
    // unpermute free; the host sync 1 ms after the read (right after the router, at 0).
    const counts = uniform(1, 1, 4, 24);
    const base = syntheticModel({ world: 1 });
    const model = { ...base, smallOps: { ...base.smallOps, hostSyncMs: 1 } };
    const plan = (enqueuedBeforeSync?: 'permute' | 'all') =>
      planMoeLayer({ ...inputFor(counts, 0), enqueuedBeforeSync }, model, parseMoeSchedule('fixed:1:grouped'));
    const at = (p: ReturnType<typeof plan>, name: string) => p.timeline.find((o) => o.name === name)!;
    // Nothing early: the permute and the experts wait for the plan.
    const late = plan();
    expect(at(late, 'permute 0').startMs).toBeCloseTo(1, 9);
    expect(late.predictedMs).toBeCloseTo(1.192, 9);
    // The permute went out before the sync: it runs at once, the experts still after the plan.
    const permuted = plan('permute');
    expect(at(permuted, 'permute 0').startMs).toBeCloseTo(0, 9);
    expect(at(permuted, 'ffn 0').startMs).toBeCloseTo(1, 9);
    // Everything went out before it (device counts): the layer is its GPU work alone.
    const all = plan('all');
    expect(at(all, 'ffn 0').startMs).toBeCloseTo(0, 9);
    expect(all.predictedMs).toBeCloseTo(0.192, 9);
    // Only a lone rank enqueues before its plan.
    expect(() =>
      planMoeLayer({ ...inputFor(uniform(2, 1, 4, 24), 0), enqueuedBeforeSync: 'all' }, model, parseMoeSchedule('fixed:1:grouped')),
    ).toThrow(/enqueuedBeforeSync \(all\) is a lone rank's; this world has 2 ranks/);
  });

  test('no tokens anywhere: one chunk of empty all-to-alls', () => {
    const counts = uniform(2, 8, 4, 0);
    const plans = planAll(counts, syntheticModel({ world: 2, latencyMs: 0.01 }), 'auto');
    expectConsistent(plans, counts);
    expect(plans[0].degree).toBe(1);
    expect(plans[0].chunks[0].globalRows).toBe(0);
    // Both all-to-alls still run (every rank must call them): their latency is the whole layer.
    expect(plans[0].predictedMs).toBeCloseTo(0.02, 12);
  });

  test('all tokens on one expert', () => {
    const counts = uniform(4, 8, 8, 0);
    for (const rank of counts) for (const micro of rank) micro[5] = 6;
    const model = syntheticModel({ world: 4, groupedPerRow: 0.001, densePerRow: 0.0005, latencyMs: 0.001, bytesPerMs: 50000 });
    const plans = planAll(counts, model, 'auto');
    expectConsistent(plans, counts);
    // Expert 5 lives on rank 2, which receives every row; the others receive nothing.
    expect(plans[2].chunks.reduce((a, c) => a + c.recvRows.reduce((x, y) => x + y, 0), 0)).toBe(4 * 8 * 6);
    for (const r of [0, 1, 3]) for (const c of plans[r].chunks) expect(c.recvRows).toEqual([0, 0, 0, 0]);
  });

  test('more ranks than experts: ranks without experts receive nothing and compute nothing', () => {
    const counts = randomCounts(4, 4, 2, 1, [10, 20, 0, 5], 11);
    const plans = planAll(counts, syntheticModel({ world: 4, latencyMs: 0.01, bytesPerMs: 1e5 }), 'auto', { topK: 1 });
    expectConsistent(plans, counts);
    for (const r of [2, 3]) {
      for (const c of plans[r].chunks) {
        expect(c.segments).toEqual([]);
        expect(c.recvRows).toEqual([0, 0, 0, 0]);
        expect(c.predicted.ffnMs).toBe(0);
      }
    }
  });

  test('without a cost model auto cannot choose', () => {
    expect(() => planAll(uniform(2, 8, 4, 1), undefined, 'auto')).toThrow(NoCostModelError);
    expect(() => planAll(uniform(2, 8, 4, 1), undefined, 'fixed:2')).toThrow(/needs a cost model/);
  });
});

test('auto weighs D = powers of two up to M, and M', () => {
  expect(autoDegrees(1)).toEqual([1]);
  expect(autoDegrees(8)).toEqual([1, 2, 4, 8]);
  expect(autoDegrees(12)).toEqual([1, 2, 4, 8, 12]);
});

describe('baseline', () => {
  test('always D = 1, dense, one stream, even when overlap and grouped would win', () => {
    const counts = uniform(2, 8, 4, 4);
    const model = syntheticModel({
      world: 2,
      groupedPerRow: 0.0001,
      densePerRow: 0.0005,
      bytesPerMs: 128000,
      sharedIntermediate: 16,
      sharedPerRow: 0.001,
    });
    const plans = planAll(counts, model, 'baseline', { sharedIntermediate: 16 });
    expectConsistent(plans, counts);
    for (const p of plans) {
      expect(p.degree).toBe(1);
      expect(p.overlap).toBe(false);
      expect(p.chunks[0].kernel).toBe('dense');
      expect(p.shared).toBe('serial');
      expect(p.computeOrder.map((s) => s.op)).toEqual(['permute', 'ffn', 'unpermute', 'shared']);
      // dispatch C + dense FFN + combine C + shared expert (64 tokens x 2 GEMMs x 0.001)
      const C = 8192 / 128000;
      expect(p.predictedMs).toBeCloseTo(C + 2 * 128 * 0.0005 + C + 2 * 64 * 0.001, 9);
    }
  });

  test('works without a cost model (nothing to choose)', () => {
    const [p] = planAll(uniform(2, 4, 4, 1), undefined, 'baseline');
    expect(p.predicted).toBe(false);
    expect(p.predictedMs).toBe(0);
    expect(p.timeline).toEqual([]);
    expect(p.explain()).toMatch(/no cost model/);
  });
});

describe('fixed', () => {
  test('fixed:D:kernel takes D and the kernel as given, without a model too', () => {
    const counts = uniform(2, 8, 4, 2);
    for (const model of [syntheticModel({ world: 2, groupedPerRow: 0.0001, densePerRow: 0.1 }), undefined]) {
      const plans = planAll(counts, model, 'fixed:4:dense');
      expectConsistent(plans, counts);
      expect(plans[0].degree).toBe(4);
      expect(plans[0].chunks.map((c) => c.kernel)).toEqual(['dense', 'dense', 'dense', 'dense']);
      expect(plans[0].predicted).toBe(model !== undefined);
    }
  });

  test('fixed:D picks the kernel by the model', () => {
    const plans = planAll(uniform(2, 8, 4, 2), syntheticModel({ world: 2, groupedPerRow: 0.1, densePerRow: 0.01 }), 'fixed:2');
    expect(plans[0].chunks.map((c) => c.kernel)).toEqual(['dense', 'dense']);
  });

  test('more chunks than tokens: empty chunks still pair up', () => {
    // 3 tokens on rank 0 and 2 on rank 1, 8 micro-chunks: most micro-chunks are empty.
    const T = [3, 2];
    const M = 8;
    const E = 4;
    const counts = T.map((t, r) => {
      const b = microBounds(t, M);
      return Array.from({ length: M }, (_, m) => {
        const c = new Array(E).fill(0);
        for (let tok = b[m]; tok < b[m + 1]; tok++) {
          c[(tok + r) % E]++;
          c[(tok + r + 1) % E]++;
        }
        return c;
      });
    });
    const plans = planAll(counts, syntheticModel({ world: 2, latencyMs: 0.01, bytesPerMs: 1e5 }), 'fixed:8');
    expectConsistent(plans, counts);
    expect(plans[0].chunks.map((c) => [c.tokenStart, c.tokenEnd])).toEqual(
      microBounds(3, M)
        .slice(0, -1)
        .map((s, m) => [s, microBounds(3, M)[m + 1]]),
    );
    expect(plans[0].chunks.filter((c) => c.globalRows === 0).length).toBeGreaterThan(0);
    // Every chunk has its dispatch and its combine, empty or not.
    expect(plans[0].commOrder.length).toBe(16);
  });

  test('chunk boundaries follow the cluster load', () => {
    // Micro-chunk loads 30, 10, 10, 10 (all ranks together): two chunks cut after the first.
    const counts = [
      [
        [20, 0],
        [5, 0],
        [5, 0],
        [5, 0],
      ],
      [
        [10, 0],
        [5, 0],
        [5, 0],
        [5, 0],
      ],
    ];
    const plans = planAll(counts, syntheticModel({ world: 2 }), 'fixed:2', { topK: 1 });
    expectConsistent(plans, counts);
    expect(plans[0].chunks.map((c) => [c.microStart, c.microEnd])).toEqual([
      [0, 1],
      [1, 4],
    ]);
  });

  test('D larger than the micro-chunks is refused', () => {
    expect(() => planAll(uniform(2, 4, 4, 1), syntheticModel({ world: 2 }), 'fixed:5')).toThrow(PlanInputError);
    expect(() => planAll(uniform(2, 4, 4, 1), syntheticModel({ world: 2 }), 'fixed:5')).toThrow(/needs at least 5 micro-chunks/);
  });
});

describe('shared expert', () => {
  test('runs in the shadow of the first dispatch', () => {
    // D = 1: shared S on compute while dispatch C runs; then FFN G; then combine C.
    const counts = uniform(2, 8, 4, 4);
    const model = syntheticModel({
      world: 2,
      groupedPerRow: 0.00025,
      densePerRow: 0.0005,
      bytesPerMs: 128000,
      sharedIntermediate: 16,
      sharedPerRow: 0.0002,
    });
    const [p] = planAll(counts, model, 'fixed:1', { sharedIntermediate: 16 });
    const C = 0.064;
    const G = 0.064;
    const S = 2 * 64 * 0.0002; // 64 tokens, two GEMMs
    expect(p.shared).toBe('overlap-dispatch');
    expect(p.computeOrder.map((s) => s.op)).toEqual(['permute', 'shared', 'ffn', 'unpermute']);
    expect(p.predictedMs).toBeCloseTo(Math.max(S, C) + G + C, 9);
    const shared = p.timeline.find((o) => o.name === 'shared')!;
    expect([shared.startMs, shared.endMs]).toEqual([0, expect.closeTo(S, 9)]);
  });
});

test('explain() names the choice, the alternatives and the chunks', () => {
  const counts = uniform(2, 8, 4, 4);
  const [p] = planAll(counts, syntheticModel({ world: 2, groupedPerRow: 0.00025, densePerRow: 0.0005, bytesPerMs: 128000 }), 'auto');
  const text = p.explain();
  expect(text).toMatch(/^MoE plan, rank 0 of 2, schedule auto: D = 2, grouped kernel on this rank/);
  for (const d of [1, 2, 4, 8]) expect(text).toMatch(new RegExp(`D=${d} +\\d+\\.\\d{3} \\| +\\d+\\.\\d{3} \\| +\\d+\\.\\d{3}`));
  expect(text).not.toMatch(/D=3 /);
  expect(text).toMatch(/chose D = 2: the smallest D within 15% of the best \(0\.128 ms\)/);
  expect(text).toMatch(/chunk 0: micro \[0, 4\) tokens \[0, 32\), kernel grouped \(grouped 0\.032 ms, dense 0\.064 ms\)/);
  expect(text).toMatch(/sends \[32, 32\], receives \[32, 32\]/);
});

test('bad input is refused with a message naming it', () => {
  const good = inputFor(uniform(2, 4, 4, 1), 0);
  const plan = (over: Partial<MoePlanInput>) => () => planMoeLayer({ ...good, ...over }, undefined, { kind: 'baseline' });
  expect(plan({ counts: [good.counts[0]] })).toThrow(/counts has 1 ranks, ranges 2/);
  expect(plan({ counts: [good.counts[0], new Int32Array(3)] })).toThrow(/counts\[1\] has 3 values, expected M x E = 4 x 4/);
  expect(plan({ counts: [good.counts[0], Int32Array.from({ length: 16 }, (_, i) => (i === 5 ? -1 : 0))] })).toThrow(
    /counts\[1\]\[1\]\[1\] = -1/,
  );
  expect(plan({ microBounds: [0, 1, 2] })).toThrow(/microBounds must hold M \+ 1 = 5/);
  expect(plan({ microBounds: [0, 2, 1, 3, 4] })).toThrow(/non-decreasing/);
  expect(plan({ rank: 2 })).toThrow(/rank 2 is outside a world of 2/);
  expect(
    plan({
      ranges: [
        { first: 0, count: 2 },
        { first: 3, count: 1 },
      ],
    }),
  ).toThrow(/ranges\[1\]/);
});

test('planning a large layer is quick (8 ranks, 128 experts, 8 micro-chunks)', () => {
  const counts = randomCounts(8, 8, 128, 8, new Array(8).fill(2048), 3);
  const model = syntheticModel({
    world: 8,
    groupedPerRow: 0.00001,
    densePerRow: 0.00002,
    denseOverhead: 0.01,
    latencyMs: 0.02,
    bytesPerMs: 5e7,
  });
  const input = inputFor(counts, 3, { topK: 8 });
  planMoeLayer(input, model, { kind: 'auto' }); // warm the JIT
  const t0 = performance.now();
  const p = planMoeLayer(input, structuredClone(model), { kind: 'auto' }); // a new model: no remembered decision
  const ms = performance.now() - t0;
  expect(p.candidates.length).toBe(4);
  // A budget far above what it takes (a few ms), so a slow CI host does not fail it.
  expect(ms).toBeLessThan(200);
});
