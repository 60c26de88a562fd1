// One MoE layer on one rank, run the way the EPS scheduler planned it (scheduler.ts). The router runs
// over all tokens; moe_count counts (token, slot) pairs per micro-chunk per expert and those counts
// come to the host once (the layer's one host sync); every rank gathers every rank's counts, so all
// plan the same chunks. Then per chunk: permute (compute stream), dispatch (communication stream),
// expert FFN (compute), combine (communication), un-permute (compute). Two async chains, one per
// stream, issue the work in the plan's orders; each waits for the other's events only once the other
// has recorded them, so a Communicator that blocks the host (the CPU data plane) still overlaps.
//
// Expert ids are virtual (placement.ts): the router's rows are in that order, so the permuted buffer
// is sorted by expert group, then destination rank. A chunk of the token axis permutes its own tokens;
// on the expert axis the first chunk permutes every token once, each chunk sends its groups' slice of
// that buffer and combines back into the same rows, and the last chunk un-permutes every token.
import type { Communicator } from '../../comm/communicator';
import type { Event, Stream, Tensor } from '../../native/device';
import type { DType } from '../../native/addonTypes';
import { dtypeBytes } from '../../native/device';
import * as ops from '../../native/ops';
import type { TensorScope } from '../../native/scope';
import type { MlpWeights, MoeWeights } from './weights';
import { swigluMlp } from './mlp';
import type { CostModel } from '../cost/costModel';
import type { ChunkPlan, MoePlan } from '../plan/plan';
import type { ExpertLayout } from '../placement';
import { microChunkCount, type DispatchMode, type MoeSchedule } from '../schedule';
import { planMoeLayer } from '../plan/planner';
import type { OpSpan } from './spans';
import { Signal } from './signal';
import { dedupApplies, enqueueRankDispatch, rankOffsets, runDedupLayer, type RankDispatch } from './dedupDispatcher';
import { dedupRows } from '../plan/dedupPlan';

export interface MoeRouting {
  numExperts: number;
  topK: number;
  normTopkProb: boolean;
  routedScale: number;
  expertIntermediate: number;
  sharedIntermediate: number;
}

export interface MoeLayerContext {
  /** The compute stream: the layer's input is ready on it and its output will be. */
  compute: Stream;
  /** The communication stream (the compute stream itself when the plan does not overlap). */
  comm: Stream;
  scope: TensorScope;
  communicator: Communicator;
  actDtype: DType;
  routing: MoeRouting;
  /** Every rank's experts and their groups; expert ids (router rows, topkIdx) are its virtual ids. */
  layout: ExpertLayout;
  schedule: MoeSchedule;
  costModel?: CostModel;
  /** Called with spans (start/end events per op) when tracing. */
  onSpan?: (span: OpSpan) => void;
  /**
   * How the dispatch sends rows (dedupDispatch.ts): once per (token, expert) pair, once per (token,
   * destination rank), or (auto, the default) as the auto schedule's cost model predicts faster.
   */
  dispatch?: DispatchMode;
}

/** out[T,H] = MoE(h[T,H]). T may be 0: the rank still serves the other ranks' tokens. */
export async function moeLayer(ctx: MoeLayerContext, w: MoeWeights, h: Tensor, out: Tensor): Promise<MoePlan> {
  const { compute: cs, scope, routing } = ctx;
  const T = h.shape[0];
  const topkIdx = scope.tensor('i32', [T, routing.topK]);
  const topkW = scope.tensor('f32', [T, routing.topK]);
  if (T > 0) {
    const sp = span(ctx, cs);
    const logits = scope.tensor('f32', [T, routing.numExperts]);
    ops.matmul(cs, logits, h, w.router);
    ops.router(cs, topkIdx, topkW, logits, routing.topK, routing.normTopkProb, routing.routedScale);
    sp?.end('compute', 'router', { tokens: T });
  }
  return routedMoeLayer(ctx, w, h, out, topkIdx, topkW);
}

/**
 * The MoE layer after routing: topkIdx [T,k] (virtual expert ids: the checkpoint's with one expert
 * group) and topkW [T,k] f32 given. The benchmark enters here with routings it makes (balanced, skewed).
 */
export async function routedMoeLayer(
  ctx: MoeLayerContext,
  w: MoeWeights,
  h: Tensor,
  out: Tensor,
  topkIdx: Tensor,
  topkW: Tensor,
): Promise<MoePlan> {
  const { compute: cs, scope, routing } = ctx;
  const T = h.shape[0];
  const E = routing.numExperts;
  const k = routing.topK;
  // The dedup dispatch: forced (--dispatch dedup, where it applies), or weighed by auto against the
  // per-pair plans (one expert group, several ranks).
  const mode = ctx.dispatch ?? 'auto';
  const world = ctx.layout.world;
  const schedule = ctx.schedule;
  const forced = mode === 'dedup' && dedupApplies(schedule, ctx.layout);
  const weighed = mode === 'auto' && schedule.kind === 'auto' && world > 1 && ctx.layout.groups === 1;
  const W = forced || weighed ? world : 0;
  const M = microChunkCount(schedule);
  const microBounds = Array.from({ length: M + 1 }, (_, m) => Math.round((m * T) / M));
  // [M][E] expert counts, then (dedup) [M][W] rows per micro-chunk and destination rank and moe_rank_dispatch's
  // own [W] (their sums must agree): one read, one allGather.
  const countsLength = M * E + (W > 0 ? M * W + W : 0);
  let counts: Int32Array = new Int32Array(countsLength);
  let dispatch: RankDispatch | undefined;
  // Every plan but the baseline runs the shared expert early: enqueued after the counts' read, the GPU
  // runs it while the host waits for the counts, gathers them and plans (plan.ts 'early').
  const sharedEarly = w.shared !== undefined && schedule.kind !== 'baseline' && T > 0;
  if (T > 0) {
    const countsDev = scope.tensor('i32', [countsLength]);
    ops.moeCount(cs, countsDev.rows(0, M * E).reshape([M, E]), topkIdx, microBounds);
    if (W > 0) {
      ops.moeRankCount(cs, countsDev.rows(M * E, M * W).reshape([M, W]), topkIdx, rankOffsets(ctx.layout), microBounds);
      dispatch = enqueueRankDispatch(ctx, h, topkIdx, topkW, countsDev.rows(M * E + M * W, W));
    }
    const read = countsDev.read(cs);
    if (sharedEarly) sharedExpertOnto(ctx, w.shared!, w.sharedGate, h, out, cs, true);
    counts = (await read) as Int32Array; // the layer's one host sync
  } else if (W > 0) {
    dispatch = enqueueRankDispatch(ctx, h, topkIdx, topkW, scope.tensor('i32', [W]));
  }
  const gathered = ctx.communicator.world > 1 ? await ctx.communicator.allGather(counts) : [counts];
  const all = gathered.map((c) => c.subarray(0, M * E));
  const microRows = gathered.map((c) => c.subarray(M * E, M * E + M * W));
  const rankCounts = gathered.map((c) => Array.from(c.subarray(M * E + M * W)));
  if (W > 0) checkRankCounts(microRows, rankCounts, M, W);
  const plan = planMoeLayer(
    {
      counts: all,
      microChunks: M,
      numExperts: E,
      topK: k,
      microBounds,
      rank: ctx.communicator.rank,
      ranges: ctx.layout.ranges,
      expertGroups: ctx.layout.groups,
      hidden: h.shape[1],
      expertIntermediate: routing.expertIntermediate,
      dtypeBytes: dtypeBytes[ctx.actDtype],
      sharedIntermediate: w.shared ? routing.sharedIntermediate : 0,
      dedup: W > 0 ? { microRows, only: forced } : undefined,
      sharedEarly,
    },
    ctx.costModel,
    schedule,
  );
  try {
    if (plan.dispatch === 'dedup')
      await runDedupLayer({
        ctx,
        w,
        h,
        out,
        plan,
        dispatch: dispatch!,
        rankCounts,
        expertFfn: (s, x, segments, kernel, y) => expertFfn(s, scope, ctx.actDtype, w.experts, x, segments, kernel, y),
        sharedExpert: (s, writeFirst) => {
          if (w.shared) sharedExpertOnto(ctx, w.shared, w.sharedGate, h, out, s, writeFirst);
        },
        span: (s) => span(ctx, s),
      });
    else await new LayerRun(ctx, w, h, out, topkIdx, topkW, plan).run();
  } finally {
    dispatch?.ready.dispose();
  }
  return plan;
}

/** The per-micro-chunk rows (moe_rank_count) must add up to moe_rank_dispatch's: the chunks' all-to-alls pair up on them. */
function checkRankCounts(microRows: readonly ArrayLike<number>[], rankCounts: readonly number[][], M: number, W: number): void {
  const sums = dedupRows(microRows, W, 0, M);
  sums.forEach((row, q) =>
    row.forEach((n, p) => {
      if (n !== rankCounts[q][p])
        throw new Error(
          `moe_rank_count and moe_rank_dispatch disagree: rank ${q} sends rank ${p} ${n} rows by one, ${rankCounts[q][p]} by the other`,
        );
    }),
  );
}

/**
 * The tokens one permute sorts and one unpermute adds back: a chunk's own (token axis) or every token
 * of the layer, shared by all chunks (expert axis).
 */
interface PermuteUnit {
  tokenStart: number;
  tokens: number;
  /** The chunk that permutes (the unit's first) and the one that un-permutes (its last). */
  firstChunk: number;
  lastChunk: number;
  /** Rows sorted by virtual expert, and where each (token, slot) went. */
  permuted?: Tensor;
  rowMap?: Tensor;
  /** The expert outputs back from the combines, in the permuted rows' order. */
  combined?: Tensor;
}

/** Per chunk: the tensors it makes and the events that order its steps across the two streams. */
interface ChunkState {
  plan: ChunkPlan;
  unit: PermuteUnit;
  /** The chunk's rows in the unit's permuted buffer (its exchanges follow one another there). */
  rowStart: number;
  rows: number;
  received?: Tensor;
  expertOut?: Tensor;
  permutedEv: Signal;
  dispatchedEv: Signal;
  ffnEv: Signal;
  combinedEv: Signal;
}

class LayerRun {
  private readonly chunks: ChunkState[];
  /** The shared expert runs before the un-permutes, so they accumulate onto its output. */
  private sharedFirst = false;

  constructor(
    private readonly ctx: MoeLayerContext,
    private readonly w: MoeWeights,
    private readonly h: Tensor,
    private readonly out: Tensor,
    private readonly topkIdx: Tensor,
    private readonly topkW: Tensor,
    private readonly plan: MoePlan,
  ) {
    const unitOf = (i: number): PermuteUnit => ({
      tokenStart: plan.chunks[i].tokenStart,
      tokens: plan.chunks[i].tokenEnd - plan.chunks[i].tokenStart,
      firstChunk: i,
      lastChunk: i,
    });
    // The expert axis: one unit of every token (each chunk's token range is the whole layer's).
    const shared = plan.axis === 'experts' ? { ...unitOf(0), lastChunk: plan.chunks.length - 1 } : undefined;
    this.chunks = plan.chunks.map((c, i) => ({
      plan: c,
      unit: shared ?? unitOf(i),
      rowStart: c.exchanges.length > 0 ? c.exchanges[0].sendOffset : 0,
      rows: sum(c.sentRows),
      permutedEv: new Signal(),
      dispatchedEv: new Signal(),
      ffnEv: new Signal(),
      combinedEv: new Signal(),
    }));
  }

  async run(): Promise<void> {
    const { ctx, plan } = this;
    try {
      if (!plan.overlap || ctx.comm === ctx.compute) {
        await this.serial();
      } else {
        const sharedAt = plan.computeOrder.findIndex((s) => s.op === 'shared');
        const firstUnpermute = plan.computeOrder.findIndex((s) => s.op === 'unpermute');
        // (An early shared expert has run already: its step is skipped, and it wrote first.)
        this.sharedFirst = sharedAt >= 0 && sharedAt < firstUnpermute;
        await Promise.all([this.commChain(), this.computeChain()]);
      }
    } finally {
      for (const c of this.chunks) for (const sig of [c.permutedEv, c.dispatchedEv, c.ffnEv, c.combinedEv]) sig.dispose();
    }
  }

  /** The baseline order on one stream: each chunk start to end, the shared expert last. */
  private async serial(): Promise<void> {
    const s = this.ctx.compute;
    for (const c of this.chunks) {
      this.permute(c, s);
      await this.dispatch(c, s);
      this.ffn(c, s);
      await this.combine(c, s);
      this.unpermute(c, s);
    }
    if (this.w.shared && this.plan.shared !== 'none') this.sharedExpert(s);
  }

  private async commChain(): Promise<void> {
    const s = this.ctx.comm;
    for (const step of this.plan.commOrder) {
      const c = this.chunks[step.chunk];
      if (step.op === 'dispatch') {
        await c.permutedEv.waitOn(s);
        await this.dispatch(c, s);
        c.dispatchedEv.record(s);
      } else {
        await c.ffnEv.waitOn(s);
        await this.combine(c, s);
        c.combinedEv.record(s);
      }
    }
  }

  private async computeChain(): Promise<void> {
    const s = this.ctx.compute;
    for (const step of this.plan.computeOrder) {
      if (step.op === 'shared') {
        if (this.w.shared && this.plan.shared !== 'early') this.sharedExpert(s);
        continue;
      }
      const c = this.chunks[step.chunk];
      if (step.op === 'permute') {
        this.permute(c, s);
        c.permutedEv.record(s);
      } else if (step.op === 'ffn') {
        await c.dispatchedEv.waitOn(s);
        this.ffn(c, s);
        c.ffnEv.record(s);
      } else {
        await c.combinedEv.waitOn(s);
        this.unpermute(c, s);
      }
    }
  }

  /** The unit's permute, by its first chunk (later chunks of the unit have nothing to sort). */
  private permute(c: ChunkState, s: Stream): void {
    const { unit } = c;
    if (c.plan.index !== unit.firstChunk) return;
    const { scope, actDtype, routing } = this.ctx;
    const k = routing.topK;
    const H = this.h.shape[1];
    unit.permuted = scope.tensor(actDtype, [unit.tokens * k, H]);
    unit.rowMap = scope.tensor('i32', [unit.tokens, k]);
    unit.combined = scope.tensor(actDtype, [unit.tokens * k, H]);
    if (unit.tokens === 0) return;
    const sp = span(this.ctx, s);
    const counts = scope.tensor('i32', [routing.numExperts]);
    const t0 = unit.tokenStart;
    ops.moePermute(s, unit.permuted, unit.rowMap, counts, this.h.rows(t0, unit.tokens), this.topkIdx.rows(t0, unit.tokens));
    sp?.end('compute', `permute ${c.plan.index}`, { tokens: unit.tokens });
  }

  /** One all-to-all per exchange (group): its slice of the permuted rows to the peers owning its experts. */
  private async dispatch(c: ChunkState, s: Stream): Promise<void> {
    const { communicator, scope, actDtype } = this.ctx;
    const permuted = c.unit.permuted!;
    if (communicator.world === 1) {
      // The rows stay here, in the order the FFN takes them: the chunk's slice itself.
      c.received = permuted.rows(c.rowStart, c.rows);
      return;
    }
    const rows = sum(c.plan.recvRows);
    c.received = scope.tensor(actDtype, [rows, this.h.shape[1]]);
    const sp = span(this.ctx, s);
    for (const x of c.plan.exchanges) {
      const send = permuted.rows(x.sendOffset, sum(x.sentRows));
      await communicator.allToAll(s, send, x.sentRows, c.received.rows(x.recvOffset, sum(x.recvRows)), x.recvRows);
    }
    sp?.end(s === this.ctx.compute ? 'compute' : 'comm', `dispatch ${c.plan.index}`, { sent: c.rows, received: rows });
  }

  /** The experts' FFN over each exchange's rows, with the weights of the group's local experts (a view). */
  private ffn(c: ChunkState, s: Stream): void {
    const { scope, actDtype, communicator } = this.ctx;
    const x = c.received!;
    // Alone, the outputs go straight where the combine would put them.
    c.expertOut =
      communicator.world === 1 ? c.unit.combined!.rows(c.rowStart, c.rows) : scope.tensor(actDtype, [x.shape[0], this.h.shape[1]]);
    if (x.shape[0] === 0 || this.w.local.count === 0) return;
    const sp = span(this.ctx, s);
    const { gateUp, down } = this.w.experts;
    const whole = c.plan.exchanges.length === 1 && c.plan.exchanges[0].localCount === this.w.local.count;
    for (const ex of c.plan.exchanges) {
      const n = sum(ex.recvRows);
      if (n === 0 || ex.localCount === 0) continue;
      // One group holding every local expert (G = 1) uses the stacks themselves, not views of them.
      const experts = whole
        ? this.w.experts
        : { gateUp: gateUp.rows(ex.localFirst, ex.localCount), down: down.rows(ex.localFirst, ex.localCount) };
      expertFfn(s, scope, actDtype, experts, x.rows(ex.recvOffset, n), ex.segments, c.plan.kernel, c.expertOut.rows(ex.recvOffset, n));
    }
    sp?.end('compute', `ffn ${c.plan.index}`, { rows: x.shape[0], kernel: c.plan.kernel });
  }

  /** The dispatch reversed: each exchange's outputs back to the rows its inputs came from. */
  private async combine(c: ChunkState, s: Stream): Promise<void> {
    const { communicator } = this.ctx;
    if (communicator.world === 1) return; // the FFN wrote them in place
    const combined = c.unit.combined!;
    const sp = span(this.ctx, s);
    for (const x of c.plan.exchanges) {
      const back = combined.rows(x.sendOffset, sum(x.sentRows));
      await communicator.allToAll(s, c.expertOut!.rows(x.recvOffset, sum(x.recvRows)), x.recvRows, back, x.sentRows);
    }
    sp?.end(s === this.ctx.compute ? 'compute' : 'comm', `combine ${c.plan.index}`, { rows: sum(c.plan.recvRows) });
  }

  /** The unit's unpermute, by its last chunk: after its combine, so after every combine of the unit (one comm stream, in order). */
  private unpermute(c: ChunkState, s: Stream): void {
    const { unit } = c;
    if (c.plan.index !== unit.lastChunk || unit.tokens === 0) return;
    const t0 = unit.tokenStart;
    const sp = span(this.ctx, s);
    ops.moeUnpermute(s, this.out.rows(t0, unit.tokens), unit.combined!, unit.rowMap!, this.topkW.rows(t0, unit.tokens), this.sharedFirst);
    sp?.end('compute', `unpermute ${c.plan.index}`, { tokens: unit.tokens });
  }

  private sharedExpert(s: Stream): void {
    if (this.w.shared) sharedExpertOnto(this.ctx, this.w.shared, this.w.sharedGate, this.h, this.out, s, this.sharedFirst);
  }
}

/**
 * The shared expert (Qwen2-MoE's, DeepSeek's): sigmoid(h @ gate^T) * SwiGLU(h) (no gate: SwiGLU(h)),
 * written onto out (writeFirst: out is overwritten) or added to it.
 */
function sharedExpertOnto(
  ctx: MoeLayerContext,
  shared: MlpWeights,
  sharedGate: Tensor | undefined,
  h: Tensor,
  out: Tensor,
  s: Stream,
  writeFirst: boolean,
): void {
  const { scope, actDtype } = ctx;
  const T = h.shape[0];
  if (T === 0) return;
  const sp = span(ctx, s);
  const y = scope.tensor(actDtype, [T, h.shape[1]]);
  swigluMlp(s, scope, actDtype, shared, h, y);
  if (writeFirst) ops.fillRandom(s, out, 0, 0); // std 0: zeros, so that the gate below writes
  if (sharedGate) {
    const g = scope.tensor('f32', [T, 1]);
    ops.matmul(s, g, h, sharedGate);
    ops.sigmoidGateAdd(s, out, y, g);
  } else {
    ops.add(s, out, out, y);
  }
  sp?.end('compute', 'shared expert', { tokens: T });
}

/** The experts' SwiGLU FFN over rows in segments (segment i uses local expert i % Elocal). */
function expertFfn(
  s: Stream,
  scope: TensorScope,
  actDtype: DType,
  experts: MlpWeights,
  x: Tensor,
  segments: number[],
  kernel: ops.ExpertKernel,
  out: Tensor,
): void {
  const R = x.shape[0];
  const I2 = experts.gateUp.shape[1];
  const gateUp = scope.tensor(actDtype, [R, I2]);
  ops.expertMatmul(s, gateUp, x, experts.gateUp, segments, kernel);
  const act = scope.tensor(actDtype, [R, I2 / 2]);
  ops.swiglu(s, act, gateUp);
  ops.expertMatmul(s, out, act, experts.down, segments, kernel);
}

function span(ctx: MoeLayerContext, s: Stream) {
  if (!ctx.onSpan) return undefined;
  const start = s.record();
  return {
    end: (stream: 'compute' | 'comm', name: string, args: Record<string, string | number>) =>
      ctx.onSpan!({ stream, name, start, end: s.record(), args }),
  };
}

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}
