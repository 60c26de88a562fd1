// The MoE-layer benchmark on the CPU backend (in-process ranks, tiny shapes): every point has every
// schedule timed, the best fixed plan is the fastest fixed one, and the floor is its larger part.
import { runMoeBench, DEFAULT_SWEEP, formatMoeBench } from '../src/bench/moe/moeBench';
import { busiestCrossRows } from '../src/moe/plan/layerCounts';
import { makeRouting } from '../src/bench/moe/routing';

test('bench moe at 2 ranks on the CPU: every point, every schedule', async () => {
  const rows = await runMoeBench({ ranks: 2, backend: 'cpu', tokens: [8, 40], reps: 1 }, () => {});
  expect(rows).toHaveLength(2 * 2 * 2); // 2 tiny shapes x 2 token counts x 2 routings
  for (const r of rows) {
    expect(r.world).toBe(2);
    // With one expert group on 2 ranks, token-axis plans are also timed with the dedup dispatch.
    const dedup = ['baseline+dedup', 'fixed:1:grouped+dedup', 'fixed:1:dense+dedup', 'fixed:2:dense+dedup', 'fixed:4:dense+dedup'];
    expect(r.results.map((x) => x.schedule)).toEqual(['baseline', 'fixed:1:grouped', ...DEFAULT_SWEEP, 'auto', ...dedup]);
    for (const x of r.results) expect(x.ms).toBeGreaterThan(0);
    const fixed = r.results.filter((x) => x.schedule.startsWith('fixed:'));
    expect(r.best.ms).toBe(Math.min(...fixed.map((x) => x.ms)));
    expect(r.floorMs).toBe(Math.max(r.gemmFloorMs, r.commFloorMs));
    expect(r.auto.predictedMs).not.toBeNull();
  }
});

test('bench moe --expert-groups 8: the expert-axis plans join the sweep, per shape as far as its ranks hold experts', async () => {
  const rows = await runMoeBench(
    {
      ranks: 2,
      backend: 'cpu',
      tokens: [24],
      routings: ['balanced'],
      reps: 1,
      expertGroups: 8,
      shapes: ['deepseek-like-tiny', 'mixtral-like-tiny'],
    },
    () => {},
  );
  // deepseek-like-tiny: 16 experts, 8 per rank: 8 groups; mixtral-like-tiny: 8 experts, 4 per rank: 4 groups at most.
  expect(rows.map((r) => [r.shape, r.expertGroups])).toEqual([
    ['deepseek-like-tiny', 8],
    ['mixtral-like-tiny', 4],
  ]);
  const expertPlans: Record<number, string[]> = {
    8: ['fixed:2:dense:experts', 'fixed:4:dense:experts', 'fixed:8:dense:experts', 'fixed:8:grouped:experts'],
    4: ['fixed:2:dense:experts', 'fixed:4:dense:experts', 'fixed:4:grouped:experts'],
  };
  for (const r of rows) {
    expect(r.results.map((x) => x.schedule)).toEqual([
      'baseline',
      'fixed:1:grouped',
      ...DEFAULT_SWEEP,
      ...expertPlans[r.expertGroups],
      'auto',
    ]);
    for (const x of r.results.filter((y) => y.schedule.endsWith(':experts'))) expect(x.plan).toMatch(/^D=\d experts /);
  }
  expect(formatMoeBench(rows)).toMatch(/ W {2}G {2}tokens\/rank /);
});

test('routings: k distinct experts per token, weights summing to 1, skewed is skewed', () => {
  const E = 16;
  const k = 4;
  const T = 4000;
  for (const kind of ['balanced', 'skewed'] as const) {
    const { idx, weights } = makeRouting(kind, T, E, k, 3);
    const load = new Array(E).fill(0);
    for (let t = 0; t < T; t++) {
      const row = Array.from(idx.subarray(t * k, (t + 1) * k));
      expect(new Set(row).size).toBe(k);
      const sum = Array.from(weights.subarray(t * k, (t + 1) * k)).reduce((a, b) => a + b, 0);
      expect(sum).toBeCloseTo(1, 5);
      for (const e of row) load[e]++;
    }
    const ratio = Math.max(...load) / Math.min(...load);
    if (kind === 'balanced') expect(ratio).toBeLessThan(1.3);
    else expect(ratio).toBeGreaterThan(3);
  }
});

test('the floor counts the busiest rank’s rows to and from the others', () => {
  // rank 0 sends 5 away and receives 7; rank 1 sends 7 and receives 5; rank 2 sends 1 and receives 1.
  expect(
    busiestCrossRows([
      [9, 4, 1],
      [7, 2, 0],
      [0, 1, 3],
    ]),
  ).toBe(7);
  expect(busiestCrossRows([[12]])).toBe(0);
});
