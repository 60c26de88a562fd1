// The planner's dedup-dispatch candidate (src/moe/plan/dedupPlan.ts): its all-to-all moves the distinct (token,
// rank) rows (plus the slots), its FFN sees one segment per local expert, and it is weighed only where
// the layer made the rank counts (one expert group, several ranks).
import { parseMoeSchedule } from '../src/moe/schedule';
import { planMoeLayer } from '../src/moe/plan/planner';
import { BYTES, H, inputFor, syntheticModel, uniform } from './helpers/planning';

const W = 2;
const M = 4;
const E = 8;
const K = 2;

// Every rank routes 16 rows to each of the 8 experts in each of 4 micro-chunks (512 pairs per rank); the
// dedup rows per destination are given as moe_rank_dispatch would have counted them.
const counts = uniform(W, M, E, 16);
const rankRows = [
  [200, 180],
  [170, 210],
];
/** The rows per (micro-chunk, destination) that sum to rows[q]: the first micro-chunk holds the rest. */
const perMicro = (rows: number[][]) =>
  rows.map((row) => {
    const micro = new Array<number>(M * W).fill(0);
    row.forEach((n, p) => {
      const each = Math.floor(n / M);
      for (let m = 0; m < M; m++) micro[m * W + p] = each + (m === 0 ? n - each * M : 0);
    });
    return micro;
  });

const bytesPerMs = 1000;
const model = syntheticModel({ world: W, bytesPerMs, densePerRow: 0.0001, groupedPerRow: 0.0001 });

function plan(rank: number, schedule: string, dedup?: { only: boolean }, expertGroups?: number) {
  const input = {
    ...inputFor(counts, rank, { topK: K, expertGroups }),
    dedup: dedup && { microRows: perMicro(rankRows), only: dedup.only },
  };
  return planMoeLayer(input, model, parseMoeSchedule(schedule));
}

test('the dedup candidate moves the distinct (token, rank) rows and their slots', () => {
  const p = plan(0, 'auto', { only: false });
  const dedup = p.candidates.find((c) => c.dispatch === 'dedup')!;
  const pairs = p.candidates.find((c) => c.dispatch === 'pairs' && c.degree === 1)!;
  // The busiest rank: rank 0 sends 180 away and receives 170; rank 1 sends 170 and receives 180.
  const rows = 180;
  const dispatchMs = (rows * H * BYTES + 2 * rows * K * 4) / bytesPerMs;
  const combineMs = (rows * H * BYTES) / bytesPerMs;
  expect(dedup.commMs).toBeCloseTo(dispatchMs + combineMs, 9);
  // Per pair: each rank sends half its 512 pairs (the other rank's experts) each way.
  expect(pairs.commMs).toBeCloseTo((2 * 256 * H * BYTES) / bytesPerMs, 9);
  expect(p.dispatch).toBe('dedup'); // the all-to-all dominates this model
  expect(p.chunks).toHaveLength(1);
  expect(p.chunks[0].sentRows).toEqual([200, 180]);
  expect(p.chunks[0].recvRows).toEqual([200, 170]);
  // One segment per local expert, every source's rows merged: 2 ranks x 4 micro-chunks x 16.
  expect(p.chunks[0].segments).toEqual([128, 128, 128, 128]);
  expect(p.explain()).toContain('dedup dispatch');
});

test('only: the dedup plan is the sole candidate, with the schedule kernel', () => {
  const p = plan(1, 'baseline', { only: true });
  expect(p.candidates.map((c) => c.dispatch)).toEqual(['dedup']);
  expect(p.dispatch).toBe('dedup');
  expect(p.overlap).toBe(false);
  expect(p.chunks[0].kernel).toBe('dense');
});

test('no dedup candidate without rank counts or with expert groups', () => {
  expect(plan(0, 'auto').candidates.every((c) => c.dispatch === 'pairs')).toBe(true);
  expect(plan(0, 'auto', { only: false }, 2).candidates.every((c) => c.dispatch === 'pairs')).toBe(true);
});

test('auto remembers its decision by load signature: a like load weighs one candidate, another load searches', () => {
  const fresh = syntheticModel({ world: W, bytesPerMs, densePerRow: 0.0001, groupedPerRow: 0.0001 });
  const auto = (rows: number[][], c = counts) =>
    planMoeLayer({ ...inputFor(c, 0, { topK: K }), dedup: { microRows: perMicro(rows), only: false } }, fresh, parseMoeSchedule('auto'));
  const first = auto(rankRows);
  expect(first.candidates.length).toBeGreaterThan(1);
  // Within the signature's 10% buckets: the same decision, from one candidate.
  const again = auto([
    [201, 181],
    [171, 211],
  ]);
  expect(again.candidates).toHaveLength(1);
  expect([again.dispatch, again.degree, again.axis]).toEqual([first.dispatch, first.degree, first.axis]);
  // Twice the load: a new search.
  const heavier = auto(rankRows, uniform(W, M, E, 32));
  expect(heavier.candidates.length).toBeGreaterThan(1);
});

test('dedup chunks: each chunk moves its micro-chunks’ rows, the slots go with the first, and the chunks add up', () => {
  const model4 = syntheticModel({ world: W, bytesPerMs, densePerRow: 0.0001, groupedPerRow: 0.0001 });
  // Micro-chunk m of rank q sends rank p (m + 1) * (q + p + 1) rows.
  const micro = [0, 1].map((q) => Array.from({ length: M * W }, (_, i) => (Math.floor(i / W) + 1) * (q + (i % W) + 1)));
  const input = { ...inputFor(counts, 1, { topK: K }), dedup: { microRows: micro, only: true } };
  const p = planMoeLayer(input, model4, parseMoeSchedule('fixed:2:dense'));
  expect([p.dispatch, p.degree]).toEqual(['dedup', 2]);
  // Two chunks of two micro-chunks each (the loads are even): rank 1 sends rank p (1+2)(p+2) then (3+4)(p+2).
  expect(p.chunks.map((c) => c.sentRows)).toEqual([
    [6, 9],
    [14, 21],
  ]);
  expect(p.chunks.map((c) => c.recvRows)).toEqual([
    [6, 9],
    [14, 21],
  ]);
  // Each chunk's local segments: its tokens' rows to rank 1's experts from both ranks (16 per micro-chunk each).
  expect(p.chunks.map((c) => c.segments)).toEqual([
    [64, 64, 64, 64],
    [64, 64, 64, 64],
  ]);
  // The first dispatch also carries the slots of the layer's rows: two all-to-alls of rows x k x 4 bytes.
  const rowBytes = H * BYTES;
  const busiest = (rows: number[][]) => Math.max(...rows.map((row, r) => Math.max(row[1 - r], rows[1 - r][r])));
  const whole = [0, 1].map((q) => [0, 1].map((d) => [0, 1, 2, 3].reduce((a, m) => a + micro[q][m * W + d], 0)));
  const chunk0 = [0, 1].map((q) => [0, 1].map((d) => micro[q][d] + micro[q][W + d]));
  expect(p.chunks[0].predicted.dispatchMs).toBeCloseTo((busiest(chunk0) * rowBytes + 2 * busiest(whole) * K * 4) / bytesPerMs, 9);
  expect(p.chunks[0].predicted.combineMs).toBeCloseTo((busiest(chunk0) * rowBytes) / bytesPerMs, 9);
  // The first chunk permutes (moe_rank_dispatch), the last unpermutes; the others do neither.
  expect(p.computeOrder.map((s) => ('chunk' in s ? `${s.op} ${s.chunk}` : s.op))).toEqual([
    'permute 0',
    'permute 1',
    'ffn 0',
    'ffn 1',
    'unpermute 0',
    'unpermute 1',
  ]);
});

test('one chunk and no shared expert: one stream (nothing to overlap); a shared expert or a second chunk: two', () => {
  const plan1 = (schedule: string, sharedIntermediate: number) =>
    planMoeLayer(
      inputFor(counts, 0, { topK: K, sharedIntermediate }),
      syntheticModel({ world: W, bytesPerMs, sharedIntermediate: sharedIntermediate || undefined, sharedPerRow: 1e-4 }),
      parseMoeSchedule(schedule),
    );
  expect(plan1('fixed:1:dense', 0).overlap).toBe(false);
  expect(plan1('fixed:1:dense', 0).commOrder).toEqual([
    { op: 'dispatch', chunk: 0 },
    { op: 'combine', chunk: 0 },
  ]);
  expect(plan1('fixed:2:dense', 0).overlap).toBe(true);
  expect(plan1('fixed:1:dense', 16).overlap).toBe(true);
  expect(plan1('baseline', 16).overlap).toBe(false);
});
