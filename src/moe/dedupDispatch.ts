// The deduplicated dispatch (DeepEP-style): a token crosses to each rank that holds one of its experts
// once, not once per (token, expert) pair. With top-6 of 160 experts on 2 ranks that sends at most 2
// rows per token instead of 6.
//
// Source: moe_rank_dispatch sorts one row per (token, rank) by rank and gives each row its slots for
// that rank (local expert index or -1, weight). It runs before the layer's host sync, so its per-rank
// row counts ride along with moe_count's (one read, one allGather). The rows, then the slot indices,
// then the slot weights go out in three all-to-alls. Receiver: moe_permute over the received rows with
// the local indices as their top-k (the -1 slots drop), the expert FFN over local experts, and
// moe_unpermute with the local weights gives one row per received row; the combine sends those back,
// and the source sums each token's rows over ranks (moe_unpermute with rowMap [T,W] and weights 1).
//
// Scope: the token axis at D = 1 with one expert group (ranks' experts contiguous in the router's ids).
// Other plans run the per-(token, expert) path (see dedupSchedule). The planner weighs it as one more
// candidate (scheduler.ts weighDedup) when --dispatch is auto and the schedule is auto; --dispatch dedup
// makes it the only one.
import type { Event, Stream, Tensor } from '../native/device';
import * as ops from '../native/ops';
import type { MoeWeights } from '../engine/weightTypes';
import type { MoePlan } from './plan';
import type { ExpertLayout } from './placement';
import type { MoeSchedule } from './schedule';
import type { MoeLayerContext } from './moeLayer';

/**
 * The schedule a layer with dedup dispatch plans with, or undefined where dedup does not apply and the
 * layer keeps the per-pair path: expert groups (G > 1, the ranks' experts are not contiguous in virtual
 * ids), the expert axis, or D > 1 (each chunk would need its own per-rank counts before the host sync).
 * auto becomes fixed:1 on the token axis, its kernel still the cost model's pick.
 */
export function dedupSchedule(schedule: MoeSchedule, layout: ExpertLayout): MoeSchedule | undefined {
  if (layout.groups !== 1) return undefined;
  if (schedule.kind === 'baseline') return schedule;
  if (schedule.kind === 'auto') return { kind: 'fixed', degree: 1, axis: 'tokens' };
  return schedule.degree === 1 && (schedule.axis ?? 'tokens') === 'tokens' ? schedule : undefined;
}

/** The W+1 expert offsets of the ranks: rank p holds experts [offsets[p], offsets[p+1]). */
export function rankOffsets(layout: ExpertLayout): number[] {
  return [...layout.ranges.map((r) => r.first), layout.numExperts];
}

/** The source side's tensors, made before the host sync. */
export interface RankDispatch {
  /** [T*min(k,W), H]: rows sorted by destination rank, then token. */
  rows: Tensor;
  /** [T, W]: the row of (t, p), or -1. */
  rowMap: Tensor;
  localIdx: Tensor;
  localW: Tensor;
  /**
   * Recorded on the compute stream right after moe_rank_dispatch: the dispatch waits for this, not for
   * what the compute stream has queued since (an early shared expert, which it should overlap).
   */
  ready: Event;
}

/** Enqueues moe_rank_dispatch over the layer's tokens; per-rank row counts go to `counts` [W]. */
export function enqueueRankDispatch(ctx: MoeLayerContext, h: Tensor, topkIdx: Tensor, topkW: Tensor, counts: Tensor): RankDispatch {
  const { scope, actDtype, routing, layout } = ctx;
  const T = h.shape[0];
  const W = layout.world;
  const k = routing.topK;
  const R = T * Math.min(k, W);
  const d = {
    rows: scope.tensor(actDtype, [R, h.shape[1]]),
    rowMap: scope.tensor('i32', [T, W]),
    localIdx: scope.tensor('i32', [R, k]),
    localW: scope.tensor('f32', [R, k]),
  };
  ops.moeRankDispatch(ctx.compute, d.rows, d.rowMap, counts, d.localIdx, d.localW, h, topkIdx, topkW, rankOffsets(layout));
  return { ...d, ready: ctx.compute.record() };
}

/** What the rest of the layer needs, once every rank's counts are on the host. */
export interface DedupRunInput {
  ctx: MoeLayerContext;
  w: MoeWeights;
  h: Tensor;
  out: Tensor;
  plan: MoePlan;
  dispatch: RankDispatch;
  /** Every rank's rows per destination rank, in rank order ([q][p]: rows q sends to p). */
  rankCounts: number[][];
  /** Rows this rank's experts get, per local expert, summed over every rank's tokens. */
  localSegments: number[];
  /** The experts' FFN over rows in segments (moeLayer's, with the plan's kernel). */
  expertFfn: (s: Stream, x: Tensor, segments: number[], out: Tensor) => void;
  /** The shared expert onto out: written first (overwrite) or added after. */
  sharedExpert: (s: Stream, writeFirst: boolean) => void;
  span: (s: Stream) => { end: (stream: 'compute' | 'comm', name: string, args: Record<string, string | number>) => void } | undefined;
}

export async function runDedupLayer(a: DedupRunInput): Promise<void> {
  const { ctx, h, out, plan, dispatch } = a;
  const { communicator, scope, actDtype, routing } = ctx;
  const cs = ctx.compute;
  const me = communicator.rank;
  const W = communicator.world;
  const T = h.shape[0];
  const H = h.shape[1];
  const k = routing.topK;
  const sentRows = a.rankCounts[me];
  const recvRows = a.rankCounts.map((c) => c[me]);
  const sent = sum(sentRows);
  const received = sum(recvRows);
  // The dispatch and combine go on the communication stream when the plan overlaps (the shared expert
  // then runs in the dispatch's shadow, as the plan's 'overlap-dispatch' does).
  const cm = plan.overlap ? ctx.comm : cs;
  const hasShared = a.w.shared !== undefined && plan.shared !== 'none';
  // Early (moeLayer.ts) it has run already, onto out; else it runs in the dispatch's shadow when there is one.
  const sharedDone = plan.shared === 'early';
  const sharedFirst = hasShared && (sharedDone || cm !== cs);
  const handOver = (from: Stream, to: Stream) => {
    if (from === to) return;
    const ev = from.record();
    to.wait(ev);
    ev.dispose();
  };

  // Dispatch: rows, slot indices, slot weights.
  if (cm !== cs) cm.wait(dispatch.ready);
  if (sharedFirst && !sharedDone) a.sharedExpert(cs, true);
  let x = dispatch.rows.rows(0, sent);
  let localIdx = dispatch.localIdx.rows(0, sent);
  let localW = dispatch.localW.rows(0, sent);
  if (W > 1) {
    const sp = a.span(cm);
    const rx = scope.tensor(actDtype, [received, H]);
    const ri = scope.tensor('i32', [received, k]);
    const rw = scope.tensor('f32', [received, k]);
    await communicator.allToAll(cm, x, sentRows, rx, recvRows);
    await communicator.allToAll(cm, localIdx, sentRows, ri, recvRows);
    await communicator.allToAll(cm, localW, sentRows, rw, recvRows);
    sp?.end(cm === cs ? 'compute' : 'comm', 'dispatch 0', { sent, received, dedup: 1 });
    [x, localIdx, localW] = [rx, ri, rw];
  }
  handOver(cm, cs);

  // Receiver: expand each row to its local experts, run them, fold back to one row per received row.
  const y = scope.tensor(actDtype, [received, H]);
  const localExperts = a.w.local.count;
  if (received > 0 && localExperts > 0) {
    const sp = a.span(cs);
    const permuted = scope.tensor(actDtype, [received * k, H]);
    const rowMap = scope.tensor('i32', [received, k]);
    ops.moePermute(cs, permuted, rowMap, scope.tensor('i32', [localExperts]), x, localIdx);
    const pairs = sum(a.localSegments);
    const expertOut = scope.tensor(actDtype, [pairs, H]);
    if (pairs > 0) a.expertFfn(cs, permuted.rows(0, pairs), a.localSegments, expertOut);
    ops.moeUnpermute(cs, y, expertOut, rowMap, localW, false);
    sp?.end('compute', 'ffn 0', { rows: received, pairs, kernel: plan.chunks[0].kernel });
  }

  // Combine: each received row back to its source; the source sums a token's rows over ranks.
  let back = y;
  if (W > 1) {
    handOver(cs, cm);
    const sp = a.span(cm);
    back = scope.tensor(actDtype, [sent, H]);
    await communicator.allToAll(cm, y, recvRows, back, sentRows);
    sp?.end(cm === cs ? 'compute' : 'comm', 'combine 0', { rows: received });
    handOver(cm, cs);
  }
  if (T > 0) {
    const sp = a.span(cs);
    const ones = scope.tensor('f32', [T, W]);
    ones.upload(cs, new Float32Array(T * W).fill(1));
    ops.moeUnpermute(cs, out, back, dispatch.rowMap, ones, sharedFirst);
    sp?.end('compute', 'unpermute 0', { tokens: T });
  }
  if (hasShared && !sharedFirst) a.sharedExpert(cs, false);
}

function sum(xs: readonly number[]): number {
  return xs.reduce((acc, v) => acc + v, 0);
}
