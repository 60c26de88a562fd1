// The pipeline model on small hand-made inputs whose timelines are worked out by hand in the comments.
import { commOrder, computeOrder, type PredictedOp } from '../src/moe/plan/plan';
import { simulatePipeline, type RankCosts } from '../src/moe/cost/pipelineModel';

const rank0: RankCosts = { routerMs: 1, sharedMs: 2, permuteMs: [1, 1], ffnMs: [3, 1], unpermuteMs: [1, 1] };
const rank1: RankCosts = { routerMs: 0, sharedMs: 0, permuteMs: [2, 2], ffnMs: [1, 4], unpermuteMs: [0.5, 0.5] };

test('step orders: dispatch i+1 goes before combine i; the shared expert where placed', () => {
  expect(commOrder(3, true)).toEqual([
    { op: 'dispatch', chunk: 0 },
    { op: 'dispatch', chunk: 1 },
    { op: 'combine', chunk: 0 },
    { op: 'dispatch', chunk: 2 },
    { op: 'combine', chunk: 1 },
    { op: 'combine', chunk: 2 },
  ]);
  expect(commOrder(1, false)).toEqual([
    { op: 'dispatch', chunk: 0 },
    { op: 'combine', chunk: 0 },
  ]);
  expect(computeOrder(2, true, 'overlap-dispatch').map((s) => ('chunk' in s ? `${s.op} ${s.chunk}` : s.op))).toEqual([
    'permute 0',
    'permute 1',
    'shared',
    'ffn 0',
    'ffn 1',
    'unpermute 0',
    'unpermute 1',
  ]);
  expect(computeOrder(2, true, 'overlap-combine').map((s) => ('chunk' in s ? `${s.op} ${s.chunk}` : s.op))).toEqual([
    'permute 0',
    'permute 1',
    'ffn 0',
    'ffn 1',
    'shared',
    'unpermute 0',
    'unpermute 1',
  ]);
  expect(computeOrder(1, false, 'serial').map((s) => ('chunk' in s ? `${s.op} ${s.chunk}` : s.op))).toEqual([
    'permute 0',
    'ffn 0',
    'unpermute 0',
    'shared',
  ]);
});

test('two ranks, two chunks, overlapped', () => {
  // rank 0: router [0,1] permute0 [1,2] permute1 [2,3] shared [3,5]; rank 1: permute0 [0,2] permute1 [2,4]
  // dispatch0 waits both permute0: [2,4]; dispatch1 waits the comm stream and permute1: [4,5]
  // ffn0: rank 0 [5,8] (after shared), rank 1 [4,5]; ffn1: rank 0 [8,9], rank 1 [5,9]
  // combine0 waits both ffn0: [8,10]; combine1 [10,11]
  // unpermute: rank 0 [10,11] [11,12]; rank 1 [10,10.5] [11,11.5]
  const timeline: PredictedOp[] = [];
  const result = simulatePipeline(
    {
      overlap: true,
      commOrder: commOrder(2, true),
      computeOrder: computeOrder(2, true, 'overlap-dispatch'),
      commMs: [2, 1],
      ranks: [rank0, rank1],
    },
    0,
    timeline,
  );
  expect(result.layerMs).toBe(12);
  expect(result.rankEndMs).toEqual([12, 11.5]);
  const byName = Object.fromEntries(timeline.map((o) => [o.name, [o.stream, o.startMs, o.endMs]]));
  expect(byName).toEqual({
    router: ['compute', 0, 1],
    'permute 0': ['compute', 1, 2],
    'permute 1': ['compute', 2, 3],
    shared: ['compute', 3, 5],
    'dispatch 0': ['comm', 2, 4],
    'dispatch 1': ['comm', 4, 5],
    'ffn 0': ['compute', 5, 8],
    'ffn 1': ['compute', 8, 9],
    'combine 0': ['comm', 8, 10],
    'combine 1': ['comm', 10, 11],
    'unpermute 0': ['compute', 10, 11],
    'unpermute 1': ['compute', 11, 12],
  });
});

test('one stream: the all-to-alls wait for everything before them', () => {
  // permute0 ends at 2 on both; dispatch0 [2,4]; ffn0 rank 0 [4,7], rank 1 [4,5];
  // combine0 waits rank 0: [7,9]; unpermute0 rank 0 [9,10], shared [10,12]; rank 1 ends at 9.5
  const one = (r: RankCosts): RankCosts => ({ ...r, permuteMs: [r.permuteMs[0]], ffnMs: [r.ffnMs[0]], unpermuteMs: [r.unpermuteMs[0]] });
  const timeline: PredictedOp[] = [];
  const result = simulatePipeline(
    {
      overlap: false,
      commOrder: commOrder(1, false),
      computeOrder: computeOrder(1, false, 'serial'),
      commMs: [2],
      ranks: [one(rank0), one(rank1)],
    },
    1,
    timeline,
  );
  expect(result.rankEndMs).toEqual([12, 9.5]);
  expect(result.layerMs).toBe(12);
  expect(timeline.every((o) => o.stream === 'compute')).toBe(true);
  expect(timeline.map((o) => [o.name, o.startMs, o.endMs])).toEqual([
    ['router', 0, 0],
    ['permute 0', 0, 2],
    ['dispatch 0', 2, 4],
    ['ffn 0', 4, 5],
    ['combine 0', 7, 9],
    ['unpermute 0', 9, 9.5],
    ['shared', 9.5, 9.5],
  ]);
});

test('the host sync: queued work runs through it, everything enqueued after it waits for the slowest rank', () => {
  const a: RankCosts = { routerMs: 1, sharedMs: 3, permuteMs: [1], ffnMs: [2], unpermuteMs: [1] };
  const b: RankCosts = { routerMs: 2, sharedMs: 0, permuteMs: [1], ffnMs: [2], unpermuteMs: [1] };
  const order = computeOrder(1, true, 'early');
  expect(order.map((s) => s.op)).toEqual(['shared', 'permute', 'ffn', 'unpermute']);
  const timeline: PredictedOp[] = [];
  // Reads done at 1 (a) and 2 (b): the hosts enqueue again at 2 + 5 = 7. a's shared expert, queued
  // before, runs [1,4]; permute [7,8] on both; dispatch [8,9]; ffn [9,11]; combine [11,12]; unpermute [12,13].
  const r = simulatePipeline(
    {
      overlap: true,
      commOrder: commOrder(1, true),
      computeOrder: order,
      commMs: [1],
      ranks: [a, b],
      sync: { ms: 5, afterSteps: 0, preSyncSteps: 1 },
    },
    0,
    timeline,
  );
  expect(r.layerMs).toBe(13);
  expect(timeline.map((op) => [op.name, op.startMs, op.endMs])).toEqual([
    ['router', 0, 1],
    ['shared', 1, 4],
    ['permute 0', 7, 8],
    ['dispatch 0', 8, 9],
    ['ffn 0', 9, 11],
    ['combine 0', 11, 12],
    ['unpermute 0', 12, 13],
  ]);
  // The dedup path's permute (moe_rank_dispatch) runs before the read: the read is done at 2 (a) and 3 (b).
  const dedup = simulatePipeline({
    overlap: true,
    commOrder: commOrder(1, true),
    computeOrder: computeOrder(1, true, 'overlap-dispatch'),
    commMs: [1],
    ranks: [a, b],
    sync: { ms: 5, afterSteps: 1, preSyncSteps: 2 },
  });
  // sync ends 3 + 5 = 8: dispatch [8,9], ffn [9,11] (a's shared [2,5] is done), combine [11,12], unpermute [12,13].
  expect(dedup.layerMs).toBe(13);
});
