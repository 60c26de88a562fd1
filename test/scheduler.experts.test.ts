// The scheduler's expert axis: chunks of expert groups (moe/placement.ts). The counts here are per
// virtual expert; the virtual order and every rank's rows are recomputed from the counts with the
// layout's definition written out below, independently of the planner.
import { PlanInputError, planMoeLayer } from '../src/moe/plan/planner';
import type { MoePlan } from '../src/moe/plan/plan';
import { inputFor, planAll, randomCounts, syntheticModel, uniform } from './helpers/planning';

/** The virtual order by definition: group-major, rank-major, local order; returns per virtual id its rank and local index. */
function virtualOrder(E: number, W: number, G: number): { rank: number; group: number; local: number }[] {
  const split = (n: number, parts: number, i: number) => {
    const base = Math.floor(n / parts);
    const extra = n % parts;
    return { first: i * base + Math.min(i, extra), count: base + (i < extra ? 1 : 0) };
  };
  const order: { rank: number; group: number; local: number }[] = [];
  for (let g = 0; g < G; g++)
    for (let p = 0; p < W; p++) {
      const part = split(split(E, W, p).count, G, g);
      for (let j = 0; j < part.count; j++) order.push({ rank: p, group: g, local: part.first + j });
    }
  return order;
}

/** Rows rank `src` routes to virtual expert v over all micro-chunks. */
function rowsOf(counts: number[][][], src: number, v: number): number {
  return counts[src].reduce((a, micro) => a + micro[v], 0);
}

/** Rows rank `src` routes to virtual expert v in micro-chunks [a, b). */
function sumMicro(counts: number[][][], src: number, v: number, a: number, b: number): number {
  let n = 0;
  for (let m = a; m < b; m++) n += counts[src][m][v];
  return n;
}

/** Every rank's expert segments as (source rank, rank, local expert) -> rows, for the whole layer. */
function segmentRows(plans: MoePlan[]): Map<string, number> {
  const out = new Map<string, number>();
  plans.forEach((p, r) => {
    for (const c of p.chunks)
      for (const x of c.exchanges) {
        const W = p.world;
        x.segments.forEach((rows, i) => {
          const src = Math.floor(i / x.localCount);
          const key = `${src}->${r}.${x.localFirst + (i % x.localCount)}`;
          expect(out.has(key)).toBe(false); // every segment once
          out.set(key, rows);
          expect(src).toBeLessThan(W);
        });
      }
  });
  return out;
}

/** Checks the exchanges of expert-axis plans against the counts, and that they pair up across ranks. */
function expectExpertChunks(plans: MoePlan[], counts: number[][][], G: number): void {
  const W = plans.length;
  const E = counts[0][0].length;
  const order = virtualOrder(E, W, G);
  const first = plans[0];
  for (const p of plans) {
    expect(p.axis).toBe('experts');
    expect(p.chunks.map((c) => [c.groupStart, c.groupEnd])).toEqual(first.chunks.map((c) => [c.groupStart, c.groupEnd]));
  }
  expect(first.chunks[0].groupStart).toBe(0);
  expect(first.chunks[first.chunks.length - 1].groupEnd).toBe(G);
  plans.forEach((p, r) => {
    const T = counts[r].flat().reduce((a, b) => a + b, 0) / 2;
    let sendOffset = 0; // the permuted buffer of all tokens, sorted by virtual id
    for (const c of p.chunks) {
      expect([c.microStart, c.microEnd, c.tokenStart, c.tokenEnd]).toEqual([0, counts[0].length, 0, T]);
      expect(c.exchanges.map((x) => x.group)).toEqual(Array.from({ length: c.groupEnd - c.groupStart }, (_, i) => c.groupStart + i));
      let recvOffset = 0;
      for (const x of c.exchanges) {
        const inGroup = order.map((o, v) => ({ ...o, v })).filter((o) => o.group === x.group);
        expect(x.sendOffset).toBe(sendOffset);
        expect(x.recvOffset).toBe(recvOffset);
        const sent = Array.from({ length: W }, (_, q) =>
          inGroup.filter((o) => o.rank === q).reduce((a, o) => a + rowsOf(counts, r, o.v), 0),
        );
        expect(x.sentRows).toEqual(sent);
        const own = inGroup.filter((o) => o.rank === r);
        expect([x.localFirst, x.localCount]).toEqual([own.length ? own[0].local : x.localFirst, own.length]);
        expect(x.segments).toEqual(Array.from({ length: W }, (_, src) => own.map((o) => rowsOf(counts, src, o.v))).flat());
        for (let q = 0; q < W; q++) {
          const peer = plans[q].chunks[c.index].exchanges.find((y) => y.group === x.group)!;
          expect(x.recvRows[q]).toBe(peer.sentRows[r]);
        }
        sendOffset += sent.reduce((a, b) => a + b, 0);
        recvOffset += x.recvRows.reduce((a, b) => a + b, 0);
      }
    }
    expect(sendOffset).toBe(2 * T); // every (token, slot) row sent once
  });
}

describe('the expert axis', () => {
  test('keeps the segments and their rows of D = 1, where the token axis multiplies them', () => {
    // 4 ranks, 16 experts (4 each), 4 groups of one expert per rank.
    const counts = randomCounts(4, 8, 16, 2, [300, 17, 0, 120], 5);
    const model = syntheticModel({ world: 4, latencyMs: 0.005, bytesPerMs: 2e5 });
    const one = planAll(counts, model, 'fixed:1:dense', { expertGroups: 4 });
    const experts = planAll(counts, model, 'fixed:4:dense:experts', { expertGroups: 4 });
    const tokens = planAll(counts, model, 'fixed:4:dense', { expertGroups: 4 });
    expectExpertChunks(experts, counts, 4);
    const reference = segmentRows(one);
    expect(reference.size).toBe(4 * 4 * 4); // source ranks x ranks x local experts
    expect(segmentRows(experts)).toEqual(reference);
    const nonEmpty = (plans: MoePlan[]) =>
      plans.reduce((a, p) => a + p.chunks.reduce((b, c) => b + c.segments.filter((n) => n > 0).length, 0), 0);
    expect(nonEmpty(experts)).toBe(nonEmpty(one));
    // Cutting tokens: 4 chunks of every segment, each smaller.
    expect(tokens.reduce((a, p) => a + p.chunks.reduce((b, c) => b + c.segments.length, 0), 0)).toBe(4 * reference.size);
    expect(nonEmpty(tokens)).toBeGreaterThan(nonEmpty(one));
  });

  test('one group per chunk: dispatch of group 1 under the FFN of group 0 (timeline by hand)', () => {
    // As scheduler.plan.test's D > 1 case: per rank 128 rows, 64 to the other rank; C = 8192 B /
    // 128000 B/ms = 0.064 ms per all-to-all of everything, F = 2 GEMMs x 128 rows x 0.00025 = 0.064 ms.
    // Two groups halve both: dispatch 0 [0, C/2], FFN 0 and dispatch 1 [C/2, C], combine 0 and FFN 1
    // [C, 3C/2], combine 1 [3C/2, 2C].
    const counts = uniform(2, 8, 4, 4);
    const model = syntheticModel({ world: 2, groupedPerRow: 0.00025, densePerRow: 0.0005, bytesPerMs: 128000 });
    const plans = planAll(counts, model, 'fixed:2:grouped:experts', { expertGroups: 2 });
    expectExpertChunks(plans, counts, 2);
    const C = 0.064;
    const [p] = plans;
    expect(p.predictedMs).toBeCloseTo(2 * C, 9);
    const at = (name: string) => p.timeline.find((o) => o.name === name)!;
    expect([at('ffn 0').startMs, at('ffn 0').endMs]).toEqual([expect.closeTo(C / 2, 9), expect.closeTo(C, 9)]);
    expect([at('dispatch 1').startMs, at('dispatch 1').endMs]).toEqual([expect.closeTo(C / 2, 9), expect.closeTo(C, 9)]);
    expect(at('combine 1').endMs).toBeCloseTo(2 * C, 9);
    // One permute and one unpermute for the layer: the other steps are empty.
    expect(at('permute 1').endMs - at('permute 1').startMs).toBe(0);
    expect(at('unpermute 0').endMs - at('unpermute 0').startMs).toBe(0);
  });

  test('chunks of several groups (uneven, empty groups on one rank) have one all-to-all per group', () => {
    // 8 experts on 3 ranks (3, 3, 2) in 3 groups: rank 2's last group is empty. D = 2: groups [0, 2) and [2, 3), or as the load cuts.
    const counts = randomCounts(3, 4, 8, 2, [40, 0, 25], 9);
    const model = syntheticModel({ world: 3, latencyMs: 0.01, bytesPerMs: 1e5 });
    const plans = planAll(counts, model, 'fixed:2:dense:experts', { expertGroups: 3 });
    expectExpertChunks(plans, counts, 3);
    expect(plans[0].chunks.length).toBe(2);
    const c = plans[0].chunks.find((x) => x.groupEnd - x.groupStart === 2)!;
    expect(c.exchanges.length).toBe(2);
    // The chunk's all-to-all time is its groups' one after the other: latency twice at least.
    expect(c.predicted.dispatchMs).toBeGreaterThanOrEqual(0.02);
    const empty = plans[2].chunks.flatMap((x) => x.exchanges).find((x) => x.group === 2)!;
    expect([empty.localCount, empty.segments, empty.recvRows]).toEqual([0, [], [0, 0, 0]]);
  });

  test('the token axis with groups: every chunk carries one all-to-all per group', () => {
    const counts = randomCounts(2, 8, 8, 2, [50, 30], 3);
    const order = virtualOrder(8, 2, 2);
    const model = syntheticModel({ world: 2, latencyMs: 0.01, bytesPerMs: 1e5 });
    const plans = planAll(counts, model, 'fixed:2:dense', { expertGroups: 2 });
    plans.forEach((p, r) => {
      expect(p.axis).toBe('tokens');
      for (const c of p.chunks) {
        expect([c.groupStart, c.groupEnd]).toEqual([0, 2]);
        // Each chunk's tokens are permuted on their own: offsets start at 0.
        expect(c.exchanges.map((x) => [x.group, x.sendOffset])).toEqual([
          [0, 0],
          [1, c.exchanges[0].sentRows.reduce((a, b) => a + b, 0)],
        ]);
        for (const x of c.exchanges) {
          const rows = (src: number, q: number) =>
            order.reduce(
              (a, o, v) => (o.group === x.group && o.rank === q ? a + sumMicro(counts, src, v, c.microStart, c.microEnd) : a),
              0,
            );
          expect(x.sentRows).toEqual([0, 1].map((q) => rows(r, q)));
          expect(x.recvRows).toEqual([0, 1].map((src) => rows(src, r)));
        }
      }
    });
  });

  test('auto weighs both axes and takes the expert axis when token chunks multiply launch-bound GEMMs', () => {
    // Dense GEMMs cost 0.1 ms up to 64 rows: launch-bound at these loads.
    const flat = {
      overheadMs: 0,
      points: [
        { rows: 1, ms: 0.1 },
        { rows: 64, ms: 0.1 },
        { rows: 1 << 20, ms: (0.1 * (1 << 20)) / 64 },
      ],
    };
    const model = syntheticModel({ world: 2, grouped: flat, dense: flat, bytesPerMs: 8192 / 1.6 });
    const counts = uniform(2, 8, 8, 2);
    const plans = planAll(counts, model, 'auto', { expertGroups: 4 });
    const [p] = plans;
    expect(p.candidates.map((c) => `${c.axis}:${c.degree}`)).toEqual([
      'tokens:1',
      'tokens:2',
      'tokens:4',
      'tokens:8',
      'experts:2',
      'experts:4',
    ]);
    const ms = (axis: string, d: number) => p.candidates.find((c) => c.axis === axis && c.degree === d)!.ms;
    expect(ms('experts', 2)).toBeLessThan(ms('tokens', 2));
    expect(p.axis).toBe('experts');
    expectExpertChunks(plans, counts, 4);
    expect(p.explain()).toMatch(/D = \d along experts \(4 expert groups\)/);
    expect(p.explain()).toMatch(/^ {4}experts D=2 /m);
    expect(p.explain()).toMatch(/chunk 0: micro \[0, 8\) tokens \[0, 64\) groups \[0, \d\)/);
  });

  test('auto with one group weighs the token axis only; a world of one never chunks', () => {
    const counts = uniform(2, 8, 8, 2);
    const model = syntheticModel({ world: 2 });
    expect(planAll(counts, model, 'auto')[0].candidates.every((c) => c.axis === 'tokens')).toBe(true);
    const [alone] = planAll(uniform(1, 8, 8, 2), syntheticModel({ world: 1 }), 'auto', { expertGroups: 4 });
    expect(alone.candidates.map((c) => [c.axis, c.degree])).toEqual([['tokens', 1]]);
  });

  test('bad layouts and expert-axis degrees are refused', () => {
    const counts = uniform(2, 4, 8, 1);
    expect(() => planAll(counts, undefined, 'fixed:4:dense:experts', { expertGroups: 2 })).toThrow(PlanInputError);
    expect(() => planAll(counts, undefined, 'fixed:4:dense:experts', { expertGroups: 2 })).toThrow(
      /needs at least 4 expert groups, the layout has 2/,
    );
    expect(() => planAll(counts, undefined, 'baseline', { expertGroups: 5 })).toThrow(/expert groups must be an integer from 1 to 4/);
    // The expert axis does not cut micro-chunks: D may exceed M.
    expect(planAll(uniform(2, 2, 8, 1), undefined, 'fixed:4:dense:experts', { expertGroups: 4 })[0].degree).toBe(4);
  });
});

test('planning a large layer on both axes is quick (8 ranks, 128 experts in 8 groups, 8 micro-chunks)', () => {
  const counts = randomCounts(8, 8, 128, 8, new Array(8).fill(2048), 3);
  const model = syntheticModel({
    world: 8,
    groupedPerRow: 0.00001,
    densePerRow: 0.00002,
    denseOverhead: 0.01,
    latencyMs: 0.02,
    bytesPerMs: 5e7,
  });
  const input = inputFor(counts, 3, { topK: 8, expertGroups: 8 });
  planMoeLayer(input, model, { kind: 'auto' }); // warm the JIT
  const t0 = performance.now();
  const p = planMoeLayer(input, structuredClone(model), { kind: 'auto' }); // a new model: no remembered decision
  const ms = performance.now() - t0;
  expect(p.candidates.map((c) => `${c.axis}:${c.degree}`)).toEqual([
    'tokens:1',
    'tokens:2',
    'tokens:4',
    'tokens:8',
    'experts:2',
    'experts:4',
    'experts:8',
  ]);
  // A budget far above what it takes (a few ms), so a slow CI host does not fail it.
  expect(ms).toBeLessThan(200);
});
