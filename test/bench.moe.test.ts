// The MoE-layer benchmark on the CPU backend (in-process ranks, tiny shapes): every point has every
// schedule timed, the best fixed plan is the fastest fixed one, and the floor is its larger part.
import { runMoeBench, DEFAULT_SWEEP } from '../src/bench/moe/moeBench';
import { makeRouting } from '../src/bench/moe/routing';

test('bench moe at 2 ranks on the CPU: every point, every schedule', async () => {
  const rows = await runMoeBench({ ranks: 2, backend: 'cpu', tokens: [8, 40], reps: 1 }, () => {});
  expect(rows).toHaveLength(2 * 2 * 2); // 2 tiny shapes x 2 token counts x 2 routings
  for (const r of rows) {
    expect(r.world).toBe(2);
    expect(r.results.map((x) => x.schedule)).toEqual(['baseline', 'fixed:1:grouped', ...DEFAULT_SWEEP, 'auto']);
    for (const x of r.results) expect(x.ms).toBeGreaterThan(0);
    const fixed = r.results.filter((x) => x.schedule.startsWith('fixed:'));
    expect(r.best.ms).toBe(Math.min(...fixed.map((x) => x.ms)));
    expect(r.floorMs).toBe(Math.max(r.gemmFloorMs, r.commFloorMs));
    expect(r.auto.predictedMs).not.toBeNull();
  }
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
