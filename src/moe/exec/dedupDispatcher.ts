// The deduplicated dispatch (DeepEP-style): a token crosses to each rank that holds one of its experts
// once, not once per (token, expert) pair. With top-6 of 160 experts on 2 ranks that sends at most 2
// rows per token instead of 6.
//
// Source: moe_rank_dispatch sorts one row per (token, rank) by rank, then token, and gives each row its
// slots for that rank (local expert index or -1, weight); moe_rank_count counts the rows per (micro-chunk,
// rank). Both run before the layer's host sync, so the counts ride along with moe_count's (one read, one
// allGather). The slots of every row go out in two all-to-alls; the rows in one per chunk (D chunks of
// micro-chunks: a chunk's rows to a peer are one range of that peer's block). Receiver: moe_permute over
// the received rows with the local indices as their top-k (the -1 slots drop), the expert FFN over local
// experts, and moe_unpermute with the local weights gives one row per received row; the combine sends
// those back, and once all are back the source sums each token's rows over ranks (moe_unpermute with
// rowMap [T,W] and weights 1).
//
// Scope: the token axis with one expert group (ranks' experts contiguous in the router's ids); other plans
// run the per-(token, expert) path. The planner weighs its candidates (dedupPlan.ts) when --dispatch is
// auto and the schedule is auto; --dispatch dedup makes them the only ones.
import type { Event, Stream, Tensor } from '../../native/device';
import * as ops from '../../native/ops';
import type { ExpertKernel } from '../../native/ops';
import { Signal } from './signal';
import type { MoeWeights } from './weights';
import type { MoePlan } from '../plan/plan';
import type { ExpertLayout } from '../placement';
import type { MoeSchedule } from '../schedule';
import type { MoeLayerContext } from './moeLayer';

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
  /** A dedup plan: D chunks of tokens, each with its rows to and from every rank and its local segments. */
  plan: MoePlan;
  dispatch: RankDispatch;
  /** Every rank's rows per destination rank, the whole layer, in rank order ([q][p]: rows q sends to p). */
  rankCounts: number[][];
  /** The experts' FFN over rows in segments (one per local expert) with a kernel. */
  expertFfn: (s: Stream, x: Tensor, segments: number[], kernel: ExpertKernel, out: Tensor) => void;
  /** The shared expert onto out: written first (overwrite) or added after. */
  sharedExpert: (s: Stream, writeFirst: boolean) => void;
  span: (s: Stream) => { end: (stream: 'compute' | 'comm', name: string, args: Record<string, string | number>) => void } | undefined;
}

/**
 * Runs a dedup plan. With D chunks, chunk i's rows to peer p are a contiguous range of p's block of the
 * rank-sorted rows (they are in token order there): each dispatch copies its ranges into one send buffer
 * (D = 1 sends the rows themselves), each combine copies the returned rows back to those ranges, and the
 * source sums every token's rows once the last combine is in. The slots of all rows go in the first
 * dispatch's shadow, two all-to-alls for the layer.
 */
export async function runDedupLayer(a: DedupRunInput): Promise<void> {
  const run = new DedupRun(a);
  try {
    await run.run();
  } finally {
    run.dispose();
  }
}

/** Per chunk: its buffers and the events that order them across the streams. */
interface DedupChunk {
  sent: number[];
  recv: number[];
  /** Where the chunk's rows to (from) each peer start in the rank-sorted rows (the received slots). */
  sendOffsets: number[];
  recvOffsets: number[];
  x?: Tensor;
  slotIdx?: Tensor;
  slotW?: Tensor;
  y?: Tensor;
  dispatched: Signal;
  ffnDone: Signal;
  combined: Signal;
}

class DedupRun {
  private readonly cs: Stream;
  /** The communication stream, or the compute stream itself when the plan does not overlap. */
  private readonly cm: Stream;
  private readonly W: number;
  private readonly H: number;
  private readonly k: number;
  private readonly chunks: DedupChunk[];
  private readonly sentTotal: number;
  private readonly recvTotal: number;
  /** The returned rows, in the rank-sorted layout of dispatch.rows. */
  private readonly back: Tensor;
  private slotIdx?: Tensor;
  private slotW?: Tensor;
  private readonly hasShared: boolean;
  /** The shared expert ran before the host sync (plan 'early'). */
  private readonly sharedDone: boolean;
  private sharedFirst: boolean;

  constructor(private readonly a: DedupRunInput) {
    const { ctx, plan, rankCounts, h } = a;
    const me = ctx.communicator.rank;
    this.cs = ctx.compute;
    this.cm = plan.overlap ? ctx.comm : ctx.compute;
    this.W = ctx.communicator.world;
    this.H = h.shape[1];
    this.k = ctx.routing.topK;
    const sentWhole = rankCounts[me];
    const recvWhole = rankCounts.map((row) => row[me]);
    this.sentTotal = sum(sentWhole);
    this.recvTotal = sum(recvWhole);
    const sendAt = prefix(sentWhole);
    const recvAt = prefix(recvWhole);
    this.chunks = plan.chunks.map((c) => {
      const chunk: DedupChunk = {
        sent: c.sentRows,
        recv: c.recvRows,
        sendOffsets: [...sendAt],
        recvOffsets: [...recvAt],
        dispatched: new Signal(),
        ffnDone: new Signal(),
        combined: new Signal(),
      };
      c.sentRows.forEach((n, p) => (sendAt[p] += n));
      c.recvRows.forEach((n, q) => (recvAt[q] += n));
      return chunk;
    });
    this.back = ctx.scope.tensor(ctx.actDtype, [this.sentTotal, this.H]);
    this.hasShared = a.w.shared !== undefined && plan.shared !== 'none';
    this.sharedDone = plan.shared === 'early';
    // The shared expert writes out first when it runs before the final unpermute.
    this.sharedFirst = this.hasShared && plan.shared !== 'serial';
  }

  async run(): Promise<void> {
    const { plan } = this.a;
    if (this.cm === this.cs) {
      // One stream: each chunk start to end, then the sum over ranks, then the shared expert.
      await this.sendSlots();
      for (let i = 0; i < this.chunks.length; i++) {
        await this.dispatch(i);
        this.ffn(i);
        await this.combine(i);
      }
      this.unpermute();
      if (this.hasShared && !this.sharedDone) this.a.sharedExpert(this.cs, false);
      return;
    }
    const comm = async () => {
      this.cm.wait(this.a.dispatch.ready); // not what the compute stream queued after it (an early shared expert)
      await this.sendSlots();
      for (const step of plan.commOrder) {
        const c = this.chunks[step.chunk];
        if (step.op === 'dispatch') {
          await this.dispatch(step.chunk);
          c.dispatched.record(this.cm);
        } else {
          await c.ffnDone.waitOn(this.cm);
          await this.combine(step.chunk);
          c.combined.record(this.cm);
        }
      }
    };
    const compute = async () => {
      for (const step of plan.computeOrder) {
        if (step.op === 'shared') {
          if (this.hasShared && !this.sharedDone) this.a.sharedExpert(this.cs, this.sharedFirst);
        } else if (step.op === 'ffn') {
          const c = this.chunks[step.chunk];
          await c.dispatched.waitOn(this.cs);
          this.ffn(step.chunk);
          c.ffnDone.record(this.cs);
        } else if (step.op === 'unpermute' && step.chunk === this.chunks.length - 1) {
          await this.chunks[step.chunk].combined.waitOn(this.cs); // the comm stream runs in order: every combine is in
          this.unpermute();
        }
        // permute 0 (moe_rank_dispatch) ran before the host sync; the other permutes and unpermutes are empty.
      }
    };
    await Promise.all([comm(), compute()]);
  }

  /** Every row's slots (local expert indices and weights), the whole layer, in two all-to-alls. */
  private async sendSlots(): Promise<void> {
    const { ctx, dispatch, rankCounts } = this.a;
    const me = ctx.communicator.rank;
    const sent = rankCounts[me];
    const recv = rankCounts.map((row) => row[me]);
    this.slotIdx = ctx.scope.tensor('i32', [this.recvTotal, this.k]);
    this.slotW = ctx.scope.tensor('f32', [this.recvTotal, this.k]);
    await ctx.communicator.allToAll(this.cm, dispatch.localIdx.rows(0, this.sentTotal), sent, this.slotIdx, recv);
    await ctx.communicator.allToAll(this.cm, dispatch.localW.rows(0, this.sentTotal), sent, this.slotW, recv);
  }

  private async dispatch(i: number): Promise<void> {
    const { ctx, dispatch } = this.a;
    const c = this.chunks[i];
    const one = this.chunks.length === 1;
    const sp = this.a.span(this.cm);
    const send = one ? dispatch.rows.rows(0, this.sentTotal) : this.gather(dispatch.rows, c.sendOffsets, c.sent);
    c.x = ctx.scope.tensor(ctx.actDtype, [sum(c.recv), this.H]);
    await ctx.communicator.allToAll(this.cm, send, c.sent, c.x, c.recv);
    c.slotIdx = one ? this.slotIdx! : this.gather(this.slotIdx!, c.recvOffsets, c.recv);
    c.slotW = one ? this.slotW! : this.gather(this.slotW!, c.recvOffsets, c.recv);
    sp?.end(this.cm === this.cs ? 'compute' : 'comm', `dispatch ${i}`, { sent: sum(c.sent), received: sum(c.recv), dedup: 1 });
  }

  /** Receiver: each row expanded to its local experts, the FFN, folded back to one row per received row. */
  private ffn(i: number): void {
    const { ctx, plan, w } = this.a;
    const { scope, actDtype } = ctx;
    const c = this.chunks[i];
    const received = sum(c.recv);
    c.y = scope.tensor(actDtype, [received, this.H]);
    const localExperts = w.local.count;
    if (received === 0 || localExperts === 0) return;
    const sp = this.a.span(this.cs);
    const permuted = scope.tensor(actDtype, [received * this.k, this.H]);
    const rowMap = scope.tensor('i32', [received, this.k]);
    ops.moePermute(this.cs, permuted, rowMap, scope.tensor('i32', [localExperts]), c.x!, c.slotIdx!);
    const segments = plan.chunks[i].segments;
    const pairs = sum(segments);
    const expertOut = scope.tensor(actDtype, [pairs, this.H]);
    if (pairs > 0) this.a.expertFfn(this.cs, permuted.rows(0, pairs), segments, plan.chunks[i].kernel, expertOut);
    ops.moeUnpermute(this.cs, c.y, expertOut, rowMap, c.slotW!, false);
    sp?.end('compute', `ffn ${i}`, { rows: received, pairs, kernel: plan.chunks[i].kernel });
  }

  /** Each received row back to its source, into the rank-sorted layout. */
  private async combine(i: number): Promise<void> {
    const { ctx } = this.a;
    const c = this.chunks[i];
    const one = this.chunks.length === 1;
    const sp = this.a.span(this.cm);
    const back = one ? this.back : ctx.scope.tensor(ctx.actDtype, [sum(c.sent), this.H]);
    await ctx.communicator.allToAll(this.cm, c.y!, c.recv, back, c.sent);
    if (!one) this.scatter(back, this.back, c.sendOffsets, c.sent);
    sp?.end(this.cm === this.cs ? 'compute' : 'comm', `combine ${i}`, { rows: sum(c.recv) });
  }

  /** The source sums each token's rows over ranks (weights 1), onto the shared expert's output if it wrote first. */
  private unpermute(): void {
    const { ctx, h, out, dispatch } = this.a;
    const T = h.shape[0];
    if (T === 0) return;
    const sp = this.a.span(this.cs);
    const ones = ctx.scope.tensor('f32', [T, this.W]);
    ones.upload(this.cs, new Float32Array(T * this.W).fill(1));
    ops.moeUnpermute(this.cs, out, this.back, dispatch.rowMap, ones, this.sharedFirst);
    sp?.end('compute', 'unpermute', { tokens: T });
  }

  /** The ranges [offsets[p], offsets[p] + counts[p]) of `from`, one after the other, in a new tensor (on the comm stream). */
  private gather(from: Tensor, offsets: number[], counts: number[]): Tensor {
    const to = this.a.ctx.scope.tensor(from.dtype, [sum(counts), ...from.shape.slice(1)]);
    let at = 0;
    counts.forEach((n, p) => {
      if (n > 0) ops.copy(this.cm, to.rows(at, n), from.rows(offsets[p], n));
      at += n;
    });
    return to;
  }

  /** gather's inverse: the rows of `from`, in order, to the ranges of `to`. */
  private scatter(from: Tensor, to: Tensor, offsets: number[], counts: number[]): void {
    let at = 0;
    counts.forEach((n, p) => {
      if (n > 0) ops.copy(this.cm, to.rows(offsets[p], n), from.rows(at, n));
      at += n;
    });
  }

  dispose(): void {
    for (const c of this.chunks) for (const sig of [c.dispatched, c.ffnDone, c.combined]) sig.dispose();
  }
}

/** The starts of consecutive ranges of these lengths. */
function prefix(counts: readonly number[]): number[] {
  let at = 0;
  return counts.map((n) => {
    const start = at;
    at += n;
    return start;
  });
}

function sum(xs: readonly number[]): number {
  return xs.reduce((acc, v) => acc + v, 0);
}
