// The deduplicated dispatch (DeepEP-style): a token crosses to each rank that holds one of its experts
// once, not once per (token, expert) pair. With top-6 of 160 experts on 2 ranks that sends at most 2
// rows per token instead of 6.
//
// Source, before the layer's host sync (prepareDedup, DeepEP's dispatch layout): moe_rank_dispatch sorts
// one row per (token, rank) by rank, then token, and gives each row its slots for that rank (local expert
// index or -1, weight); moe_rank_count counts the rows per (micro-chunk, rank), so the counts ride along
// with moe_count's (one read, one allGather). After the plan: the slots of every row go out in two
// all-to-alls with the first dispatch; the rows in one per chunk (D chunks of micro-chunks: a chunk's rows
// to a peer are one range of that peer's block). Receiver: moe_permute over the received rows with the
// local indices as their top-k (the -1 slots drop), the experts' FFN, and moe_unpermute with the local
// weights gives one row per received row; the combine sends those back, and once all are back the source
// sums each token's rows over ranks (moe_unpermute with rowMap [T,W] and weights 1).
//
// Scope: the token axis with one expert group (ranks' experts contiguous in the router's ids); other plans
// use the per-pair dispatcher. The planner weighs its candidates (plan/dedupPlan.ts).
import type { Event, Stream, Tensor } from '../../native/device';
import * as ops from '../../native/ops';
import { prefixStarts, sum } from '../../util/arrays';
import type { MoePlan } from '../plan/plan';
import type { ExpertLayout } from '../placement';
import type { MoeSchedule } from '../schedule';
import type { MoeLayerContext } from './context';
import { checkHandle, type Dispatcher, type DispatchHandle, type ExpertFfn } from './dispatcher';
import { openSpan } from './spans';
import type { MoeWeights } from './weights';

/**
 * Whether a layer with --dispatch dedup runs the schedule with the dedup dispatch: on the token axis with
 * one expert group (the ranks' experts contiguous in the router's ids). Expert groups and the expert
 * axis keep the per-pair path.
 */
export function dedupApplies(schedule: MoeSchedule, layout: ExpertLayout): boolean {
  if (layout.groups !== 1) return false;
  return schedule.kind !== 'fixed' || (schedule.axis ?? 'tokens') === 'tokens';
}

/** The W+1 expert offsets of the ranks: rank p holds experts [offsets[p], offsets[p+1]). */
export function rankOffsets(layout: ExpertLayout): number[] {
  return [...layout.ranges.map((r) => r.first), layout.numExperts];
}

/** The source side's rows, made before the host sync. */
export interface DedupSource {
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
export function prepareDedup(ctx: MoeLayerContext, h: Tensor, topkIdx: Tensor, topkW: Tensor, counts: Tensor): DedupSource {
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

export interface DedupHandle extends DispatchHandle {
  readonly owner: DedupDispatcher;
  combined: boolean;
  /** Rows this rank sent each peer, and received from each. */
  readonly sent: number[];
  readonly recv: number[];
  readonly x: Tensor;
  readonly slotIdx: Tensor;
  readonly slotW: Tensor;
  /** One row per received row, after the experts. */
  y?: Tensor;
}

/** Per chunk: where its rows to (from) each peer start in the rank-sorted rows (the received slots). */
interface ChunkRanges {
  sent: number[];
  recv: number[];
  sendOffsets: number[];
  recvOffsets: number[];
}

export class DedupDispatcher implements Dispatcher<DedupHandle> {
  private readonly W: number;
  private readonly H: number;
  private readonly k: number;
  private readonly chunks: ChunkRanges[];
  private readonly sentTotal: number;
  private readonly recvTotal: number;
  private readonly sentWhole: number[];
  private readonly recvWhole: number[];
  /** The returned rows, in the rank-sorted layout of source.rows. */
  private readonly back: Tensor;
  private slots?: { idx: Tensor; w: Tensor };

  /** `rankCounts[q][p]`: rows rank q sends rank p, the whole layer (every rank's moe_rank_dispatch counts). */
  constructor(
    private readonly ctx: MoeLayerContext,
    private readonly plan: MoePlan,
    private readonly io: { h: Tensor; out: Tensor },
    private readonly w: MoeWeights,
    private readonly source: DedupSource,
    rankCounts: readonly number[][],
  ) {
    const me = ctx.communicator.rank;
    this.W = ctx.communicator.world;
    this.H = io.h.shape[1];
    this.k = ctx.routing.topK;
    this.sentWhole = [...rankCounts[me]];
    this.recvWhole = rankCounts.map((row) => row[me]);
    this.sentTotal = sum(this.sentWhole);
    this.recvTotal = sum(this.recvWhole);
    const sendAt = prefixStarts(this.sentWhole);
    const recvAt = prefixStarts(this.recvWhole);
    this.chunks = plan.chunks.map((c) => {
      const ranges = { sent: c.sentRows, recv: c.recvRows, sendOffsets: [...sendAt], recvOffsets: [...recvAt] };
      c.sentRows.forEach((n, p) => (sendAt[p] += n));
      c.recvRows.forEach((n, q) => (recvAt[q] += n));
      return ranges;
    });
    this.back = ctx.scope.tensor(ctx.actDtype, [this.sentTotal, this.H]);
  }

  /** The rows were made before the host sync (prepareDedup): every chunk's dispatch waits for them only. */
  permute(): Event {
    return this.source.ready;
  }

  async dispatch(chunk: number, s: Stream): Promise<DedupHandle> {
    const { ctx, source } = this;
    const c = this.chunks[chunk];
    const one = this.chunks.length === 1;
    const slots = this.slots ?? (await this.sendSlots(s));
    const sp = openSpan(ctx.onSpan, s);
    const send = one ? source.rows.rows(0, this.sentTotal) : this.gather(s, source.rows, c.sendOffsets, c.sent);
    const x = ctx.scope.tensor(ctx.actDtype, [sum(c.recv), this.H]);
    await ctx.communicator.allToAll(s, send, c.sent, x, c.recv);
    const handle: DedupHandle = {
      owner: this,
      combined: false,
      chunk,
      sent: c.sent,
      recv: c.recv,
      x,
      slotIdx: one ? slots.idx : this.gather(s, slots.idx, c.recvOffsets, c.recv),
      slotW: one ? slots.w : this.gather(s, slots.w, c.recvOffsets, c.recv),
    };
    sp?.end(this.streamName(s), `dispatch ${chunk}`, { sent: sum(c.sent), received: sum(c.recv), dedup: 1 });
    return handle;
  }

  /** Receiver: each row expanded to its local experts, the FFN, folded back to one row per received row. */
  experts(handle: DedupHandle, s: Stream, ffn: ExpertFfn): void {
    const { scope, actDtype } = this.ctx;
    const received = handle.x.shape[0];
    handle.y = scope.tensor(actDtype, [received, this.H]);
    const localExperts = this.w.local.count;
    if (received === 0 || localExperts === 0) return;
    const sp = openSpan(this.ctx.onSpan, s);
    const permuted = scope.tensor(actDtype, [received * this.k, this.H]);
    const rowMap = scope.tensor('i32', [received, this.k]);
    ops.moePermute(s, permuted, rowMap, scope.tensor('i32', [localExperts]), handle.x, handle.slotIdx);
    const { segments, kernel } = this.plan.chunks[handle.chunk];
    const pairs = sum(segments);
    const expertOut = scope.tensor(actDtype, [pairs, this.H]);
    if (pairs > 0) ffn(s, permuted.rows(0, pairs), this.w.experts, segments, kernel, expertOut);
    ops.moeUnpermute(s, handle.y, expertOut, rowMap, handle.slotW, false);
    sp?.end('compute', `ffn ${handle.chunk}`, { rows: received, pairs, kernel });
  }

  /** Each received row back to its source, into the rank-sorted layout. */
  async combine(handle: DedupHandle, s: Stream): Promise<void> {
    checkHandle(handle, this);
    const { ctx } = this;
    const c = this.chunks[handle.chunk];
    const one = this.chunks.length === 1;
    const sp = openSpan(ctx.onSpan, s);
    const back = one ? this.back : ctx.scope.tensor(ctx.actDtype, [sum(handle.sent), this.H]);
    await ctx.communicator.allToAll(s, handle.y!, handle.recv, back, handle.sent);
    if (!one) this.scatter(s, back, this.back, c.sendOffsets, c.sent);
    sp?.end(this.streamName(s), `combine ${handle.chunk}`, { rows: sum(handle.recv) });
  }

  /** After the last combine, the source sums each token's rows over ranks (weights 1). */
  unpermute(chunk: number, s: Stream, accumulate: boolean): void {
    const T = this.io.h.shape[0];
    if (chunk !== this.chunks.length - 1 || T === 0) return;
    const sp = openSpan(this.ctx.onSpan, s);
    const ones = this.ctx.scope.tensor('f32', [T, this.W]);
    ones.upload(s, new Float32Array(T * this.W).fill(1));
    ops.moeUnpermute(s, this.io.out, this.back, this.source.rowMap, ones, accumulate);
    sp?.end('compute', 'unpermute', { tokens: T });
  }

  /** Every row's slots (local expert indices and weights), the whole layer, in two all-to-alls (with the first dispatch). */
  private async sendSlots(s: Stream): Promise<{ idx: Tensor; w: Tensor }> {
    const { ctx, source } = this;
    const idx = ctx.scope.tensor('i32', [this.recvTotal, this.k]);
    const w = ctx.scope.tensor('f32', [this.recvTotal, this.k]);
    await ctx.communicator.allToAll(s, source.localIdx.rows(0, this.sentTotal), this.sentWhole, idx, this.recvWhole);
    await ctx.communicator.allToAll(s, source.localW.rows(0, this.sentTotal), this.sentWhole, w, this.recvWhole);
    this.slots = { idx, w };
    return this.slots;
  }

  /** The ranges [offsets[p], offsets[p] + counts[p]) of `from`, one after the other, in a new tensor. */
  private gather(s: Stream, from: Tensor, offsets: readonly number[], counts: readonly number[]): Tensor {
    const to = this.ctx.scope.tensor(from.dtype, [sum(counts), ...from.shape.slice(1)]);
    let at = 0;
    counts.forEach((n, p) => {
      if (n > 0) ops.copy(s, to.rows(at, n), from.rows(offsets[p], n));
      at += n;
    });
    return to;
  }

  /** gather's inverse: the rows of `from`, in order, to the ranges of `to`. */
  private scatter(s: Stream, from: Tensor, to: Tensor, offsets: readonly number[], counts: readonly number[]): void {
    let at = 0;
    counts.forEach((n, p) => {
      if (n > 0) ops.copy(s, to.rows(offsets[p], n), from.rows(at, n));
      at += n;
    });
  }

  private streamName(s: Stream): 'compute' | 'comm' {
    return s === this.ctx.compute ? 'compute' : 'comm';
  }
}
