// Group-limited routing meets expert parallelism (issue 11, item 5): with DeepSeek's routers and the experts
// placed so that each expert group lives on one rank, a token reaches at most topk_group ranks. The router
// op (CPU) routes random logits, moe_count / moe_rank_count count what the layer would send, and the
// planner's dedup candidate predicts the all-to-all from those counts: fewer rows cross than under greedy
// routing of the same logits, and never more than topk_group per token.
import { expertRanges } from '../src/moe/placement';
import { planMoeLayer } from '../src/moe/plan/planner';
import { parseMoeSchedule } from '../src/moe/schedule';
import * as ops from '../src/native/ops';
import { tensorFromFloat32 } from '../src/native/device';
import { cpuTestDevice } from './helpers/cpuDevice';
import { BYTES, H, I, syntheticModel } from './helpers/planning';
import { Rng } from './reference/numeric';

const { device, stream: s, keep } = cpuTestDevice();

const W = 4; // ranks
const E = 16; // experts: 4 groups of 4, group g on rank g
const GROUPS = 4;
const TOPK_GROUP = 2;
const K = 6;
const T = 64; // tokens per rank

/** Per rank: expert counts [E] and dedup rows per destination [W], from the router op on that rank's logits. */
async function route(sel: ops.RouterSelection, seed: number): Promise<{ counts: Int32Array[]; rows: Int32Array[]; ranksPerToken: number[] }> {
  const counts: Int32Array[] = [];
  const rows: Int32Array[] = [];
  const ranksPerToken: number[] = [];
  const offsets = [0, 4, 8, 12, 16];
  for (let r = 0; r < W; r++) {
    const rng = new Rng(seed + r);
    const logits = keep(tensorFromFloat32(device, s, 'f32', [T, E], Float32Array.from(rng.array(T * E, -3, 3))));
    const idx = keep(device.tensor('i32', [T, K]));
    const w = keep(device.tensor('f32', [T, K]));
    ops.router(s, idx, w, logits, K, true, 1, sel);
    const c = keep(device.tensor('i32', [1, E]));
    ops.moeCount(s, c, idx, [0, T]);
    const rc = keep(device.tensor('i32', [1, W]));
    ops.moeRankCount(s, rc, idx, offsets, [0, T]);
    counts.push((await c.read(s)) as Int32Array);
    rows.push((await rc.read(s)) as Int32Array);
    const ids = (await idx.read(s)) as Int32Array;
    for (let t = 0; t < T; t++) ranksPerToken.push(new Set(Array.from(ids.subarray(t * K, (t + 1) * K), (e) => Math.floor(e / 4))).size);
  }
  return { counts, rows, ranksPerToken };
}

function dedupPlan(counts: Int32Array[], rows: Int32Array[], rank: number) {
  const model = syntheticModel({ world: W, bytesPerMs: 1000, densePerRow: 0.0001, groupedPerRow: 0.0001 });
  return planMoeLayer(
    {
      counts,
      microChunks: 1,
      numExperts: E,
      topK: K,
      microBounds: [0, T],
      rank,
      ranges: expertRanges(E, W),
      hidden: H,
      expertIntermediate: I,
      dtypeBytes: BYTES,
      sharedIntermediate: 0,
      dedup: { microRows: rows, only: true },
    },
    model,
    parseMoeSchedule('fixed:1:grouped'),
  );
}

test('a token reaches at most topk_group ranks, and the planner predicts fewer dedup rows than greedy routing', async () => {
  const grouped = await route({ scoring: 'sigmoid', method: 'noaux_tc', groups: GROUPS, topkGroup: TOPK_GROUP }, 11);
  const limited = await route({ scoring: 'softmax', method: 'group_limited_greedy', groups: GROUPS, topkGroup: TOPK_GROUP }, 11);
  const greedy = await route(ops.SOFTMAX_GREEDY, 11);
  for (const g of [grouped, limited]) {
    expect(Math.max(...g.ranksPerToken)).toBeLessThanOrEqual(TOPK_GROUP);
    // The rows moe_rank_count counted are the (token, rank) pairs: at most topk_group per token.
    expect(g.rows.reduce((a, r) => a + r.reduce((x, y) => x + y, 0), 0)).toBe(g.ranksPerToken.reduce((a, b) => a + b, 0));
  }
  // Greedy top-6 of 16 spreads most tokens over 3 or 4 ranks.
  expect(greedy.ranksPerToken.reduce((a, b) => a + b, 0) / greedy.ranksPerToken.length).toBeGreaterThan(TOPK_GROUP + 0.5);

  for (let rank = 0; rank < W; rank++) {
    const pl = dedupPlan(limited.counts, limited.rows, rank);
    const pg = dedupPlan(greedy.counts, greedy.rows, rank);
    expect(pl.dispatch).toBe('dedup');
    expect(pg.dispatch).toBe('dedup');
    const sent = (p: typeof pl) => p.chunks.reduce((a, c) => a + c.sentRows.reduce((x, y) => x + y, 0), 0);
    // Rows this rank sends: its tokens times the ranks each reaches, at most T * topk_group.
    expect(sent(pl)).toBe(limited.rows[rank].reduce((x, y) => x + y, 0));
    expect(sent(pl)).toBeLessThanOrEqual(T * TOPK_GROUP);
    expect(sent(pl)).toBeLessThan(sent(pg));
    const comm = (p: typeof pl) => p.candidates.find((c) => c.dispatch === 'dedup')!.commMs;
    expect(comm(pl)).toBeLessThan(comm(pg));
  }
});
