// One MoE layer on one rank, top to bottom, run the way the EPS planner planned it (plan/planner.ts).
//
//   1. router: logits = h @ router^T, top-k experts and weights per token (every token of this rank).
//   2. counts: moe_count counts (token, slot) pairs per micro-chunk and expert; with the dedup dispatch
//      weighed, prepareDedup also sorts the rows per destination rank and counts them.
//   3. host sync, the layer's only one: the counts come to the host (an early shared expert and, alone,
//      the permute are enqueued first, so the GPU computes them meanwhile), every rank gathers every rank's
//      counts, and every rank plans the same chunks from them.
//   4. the plan's steps, through a Dispatcher (pairs or dedup, dispatcher.ts):
//        compute stream: permute i, [shared], ffn i (the experts), unpermute i   (plan.computeOrder)
//        comm stream:    dispatch i, combine i                                   (plan.commOrder)
//      Two async chains issue them, one per stream; each waits for the other's events once the other has
//      recorded them, so a Communicator that blocks the host (the CPU data plane) still overlaps. The
//      baseline (D = 1, no overlap) runs permute, dispatch, ffn, combine, unpermute on one stream, then
//      the shared expert.
import type { Event, Stream, Tensor } from '../../native/device';
import { dtypeBytes } from '../../native/device';
import * as ops from '../../native/ops';
import type { MoePlan } from '../plan/plan';
import { dedupRows } from '../plan/dedupPlan';
import { planMoeLayer } from '../plan/planner';
import { microChunkCount } from '../schedule';
import type { MoeLayerContext } from './context';
import { dedupApplies, DedupDispatcher, prepareDedup, rankOffsets, type DedupSource } from './dedupDispatcher';
import type { Dispatcher, DispatchHandle } from './dispatcher';
import { expertFfn, swigluMlp } from './mlp';
import { PairsDispatcher, permuteEarly, type EarlyPermute } from './pairsDispatcher';
import { Signal } from './signal';
import { openSpan, traced, type OpenSpan } from './spans';
import type { MoeWeights } from './weights';

export type { MoeLayerContext, MoeRouting } from './context';

/** out[T,H] = MoE(h[T,H]). T may be 0: the rank still serves the other ranks' tokens. */
export async function moeLayer(ctx: MoeLayerContext, w: MoeWeights, h: Tensor, out: Tensor): Promise<MoePlan> {
  const { compute: cs, scope, routing } = ctx;
  const T = h.shape[0];
  const topkIdx = scope.tensor('i32', [T, routing.topK]);
  const topkW = scope.tensor('f32', [T, routing.topK]);
  if (T > 0) {
    // Traced: the router, and inside it its GEMM and its top-k kernel apart.
    const sp = openSpan(ctx.onSpan, cs);
    const logits = scope.tensor('f32', [T, routing.numExperts]);
    traced(ctx.onSpan, cs, 'router_gemm', { tokens: T }, () => ops.matmul(cs, logits, h, w.router));
    const sel = routing.selection ? { ...routing.selection, bias: w.routerBias } : undefined;
    traced(ctx.onSpan, cs, 'router_topk', { tokens: T }, () =>
      ops.router(cs, topkIdx, topkW, logits, routing.topK, routing.normTopkProb, routing.routedScale, sel),
    );
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
  const { compute: cs, scope, routing, schedule } = ctx;
  const T = h.shape[0];
  const E = routing.numExperts;
  // The dedup dispatch: forced (--dispatch dedup, where it applies), or weighed by auto against the
  // per-pair plans (one expert group, several ranks). Its rows and counts are made before the sync.
  const mode = ctx.dispatch ?? 'auto';
  const forced = mode === 'dedup' && dedupApplies(schedule, ctx.layout);
  const weighed = mode === 'auto' && schedule.kind === 'auto' && ctx.layout.world > 1 && ctx.layout.groups === 1;
  const W = forced || weighed ? ctx.layout.world : 0;
  const M = microChunkCount(schedule);
  const microBounds = Array.from({ length: M + 1 }, (_, m) => Math.round((m * T) / M));
  // One read, one allGather: [M][E] expert counts, then (dedup) [M][W] rows per micro-chunk and destination
  // rank and moe_rank_dispatch's own [W] (their sums must agree).
  const countsLength = M * E + (W > 0 ? M * W + W : 0);
  const countsDev = scope.tensor('i32', [countsLength]);
  let source: DedupSource | undefined;
  if (T > 0) ops.moeCount(cs, countsDev.rows(0, M * E).reshape([M, E]), topkIdx, microBounds);
  if (W > 0) {
    if (T > 0) ops.moeRankCount(cs, countsDev.rows(M * E, M * W).reshape([M, W]), topkIdx, rankOffsets(ctx.layout), microBounds);
    source = prepareDedup(ctx, h, topkIdx, topkW, countsDev.rows(M * E + M * W, W));
  }
  // Every plan but the baseline runs the shared expert early: enqueued after the counts' read, the GPU
  // runs it while the host waits for the counts, gathers them and plans (plan.ts 'early').
  const sharedEarly = w.shared !== undefined && schedule.kind !== 'baseline' && T > 0;
  // Alone, the permute too runs before the plan (pairsDispatcher.ts permuteEarly). EPS_MOE_PERMUTE_EARLY=0
  // keeps it after the plan, for before/after measurements in one run.
  const oneChunk = schedule.kind !== 'fixed' || schedule.degree === 1;
  const permuteFirst = ctx.communicator.world === 1 && W === 0 && oneChunk && T > 0 && process.env.EPS_MOE_PERMUTE_EARLY !== '0';
  // And with the kernel fixed to grouped_sm90, which reads the rows per expert on the device, the whole layer
  // is enqueued before the host reads the counts (for the plan it reports and the stats only): the GPU never
  // waits for the host (+4-5% on a Qwen3-30B-A3B prefill, BENCHMARKS.md session 6). EPS_MOE_DEVICE_COUNTS=0
  // waits as before, for measurements.
  const planFree =
    permuteFirst && schedule.kind === 'fixed' && schedule.kernel === 'grouped_sm90' && process.env.EPS_MOE_DEVICE_COUNTS !== '0';
  let early: EarlyPermute | undefined;
  // Traced: on the compute stream, from after the work enqueued before the counts' read (early permute, shared
  // expert, a lone rank's experts) to the first op after the plan. Its end is recorded once the host has read the
  // counts, gathered every rank's and planned, so the span holds the GPU's idle wait on the host, and no more.
  let syncSpan: OpenSpan | undefined;
  let counts: Int32Array = new Int32Array(countsLength);
  const syncStart = performance.now();
  if (T > 0) {
    const read = countsDev.read(cs);
    if (permuteFirst) early = permuteEarly(ctx, h, topkIdx, cs);
    if (sharedEarly) sharedExpert(ctx, w, h, out, cs, true);
    if (planFree) expertsOnDeviceCounts(ctx, w, early!, out, topkW, sharedEarly);
    syncSpan = openSpan(ctx.onSpan, cs);
    counts = (await read) as Int32Array; // the layer's one host sync
  }
  syncSpan ??= openSpan(ctx.onSpan, cs);
  const gathered = ctx.communicator.world > 1 ? await ctx.communicator.allGather(counts) : [counts];
  const microRows = gathered.map((c) => c.subarray(M * E, M * E + M * W));
  const rankCounts = gathered.map((c) => Array.from(c.subarray(M * E + M * W)));
  if (W > 0) checkRankCounts(microRows, rankCounts, M, W);
  const plan = planMoeLayer(
    {
      counts: gathered.map((c) => c.subarray(0, M * E)),
      microChunks: M,
      numExperts: E,
      topK: routing.topK,
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
      enqueuedBeforeSync: planFree ? 'all' : early ? 'permute' : undefined,
    },
    ctx.costModel,
    schedule,
  );
  if (ctx.onStats) ctx.onStats({ hostSyncMs: performance.now() - syncStart, expertTokens: expertTotals(gathered, M, E) });
  syncSpan?.end('compute', 'count_sync', { tokens: T });
  if (planFree) return plan; // (enqueued before the sync: expertsOnDeviceCounts)
  const dispatcher: Dispatcher =
    plan.dispatch === 'dedup'
      ? new DedupDispatcher(ctx, plan, { h, out }, w, source!, rankCounts)
      : new PairsDispatcher(ctx, plan, { h, out, topkIdx, topkW }, w, early);
  try {
    await runSteps(ctx, plan, dispatcher, (s, writeFirst) => sharedExpert(ctx, w, h, out, s, writeFirst));
  } finally {
    source?.ready.dispose();
  }
  return plan;
}

/**
 * A lone rank's experts and unpermute after permuteEarly, with the rows per expert left on the device (the
 * plan of one chunk, grouped_sm90, needs nothing else): out += or = the experts' weighted outputs.
 */
function expertsOnDeviceCounts(
  ctx: MoeLayerContext,
  w: MoeWeights,
  early: EarlyPermute,
  out: Tensor,
  topkW: Tensor,
  accumulate: boolean,
): void {
  const cs = ctx.compute;
  const rows = early.permuted.shape[0];
  const expertOut = ctx.scope.tensor(ctx.actDtype, [rows, out.shape[1]]);
  traced(ctx.onSpan, cs, 'ffn 0', { rows, kernel: 'grouped_sm90' }, () => {
    if (w.local.count > 0) expertFfn(ctx.scope, ctx.actDtype)(cs, early.permuted, w.experts, early.counts, 'grouped_sm90', expertOut);
  });
  traced(ctx.onSpan, cs, 'unpermute 0', { tokens: early.tokens }, () =>
    ops.moeUnpermute(cs, out, expertOut, early.rowMap, topkW, accumulate),
  );
}

/** The plan's steps through the dispatcher: on one stream in chunk order, or as two chains (see the top of the file). */
async function runSteps(
  ctx: MoeLayerContext,
  plan: MoePlan,
  d: Dispatcher,
  shared: (s: Stream, writeFirst: boolean) => void,
): Promise<void> {
  const cs = ctx.compute;
  const ffn = expertFfn(ctx.scope, ctx.actDtype);
  // Whether the shared expert writes the output before the unpermutes add onto it, and whether it ran already.
  const sharedFirst = plan.shared === 'early' || plan.shared === 'overlap-dispatch' || plan.shared === 'overlap-combine';
  const sharedLeft = plan.shared !== 'early' && plan.shared !== 'none';
  if (!plan.overlap || ctx.comm === cs) {
    for (const c of plan.chunks) {
      d.permute(c.index, cs);
      const handle = await d.dispatch(c.index, cs);
      d.experts(handle, cs, ffn);
      await d.combine(handle, cs);
      d.unpermute(c.index, cs, sharedFirst);
    }
    if (sharedLeft) shared(cs, sharedFirst);
    return;
  }
  const cm = ctx.comm;
  const signals = plan.chunks.map(() => ({
    permuted: new Signal(),
    dispatched: new Signal(),
    ffnDone: new Signal(),
    combined: new Signal(),
  }));
  const handles: DispatchHandle[] = [];
  const commChain = async () => {
    for (const { op, chunk } of plan.commOrder) {
      const sig = signals[chunk];
      if (op === 'dispatch') {
        await sig.permuted.waitOn(cm);
        handles[chunk] = await d.dispatch(chunk, cm);
        sig.dispatched.record(cm);
      } else {
        await sig.ffnDone.waitOn(cm);
        await d.combine(handles[chunk], cm);
        sig.combined.record(cm);
      }
    }
  };
  const computeChain = async () => {
    for (const step of plan.computeOrder) {
      if (step.op === 'shared') {
        if (sharedLeft) shared(cs, sharedFirst);
        continue;
      }
      const sig = signals[step.chunk];
      if (step.op === 'permute') {
        const ready: Event | undefined = d.permute(step.chunk, cs);
        if (ready) sig.permuted.set(ready);
        else sig.permuted.record(cs);
      } else if (step.op === 'ffn') {
        await sig.dispatched.waitOn(cs);
        d.experts(handles[step.chunk], cs, ffn);
        sig.ffnDone.record(cs);
      } else {
        await sig.combined.waitOn(cs);
        d.unpermute(step.chunk, cs, sharedFirst);
      }
    }
  };
  try {
    await Promise.all([commChain(), computeChain()]);
  } finally {
    for (const sig of signals) for (const s of Object.values(sig)) s.dispose();
  }
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
 * The shared expert (Qwen2-MoE's, DeepSeek's): sigmoid(h @ gate^T) * SwiGLU(h) (no gate: SwiGLU(h)),
 * written onto out (writeFirst: out is overwritten) or added to it.
 */
function sharedExpert(ctx: MoeLayerContext, w: MoeWeights, h: Tensor, out: Tensor, s: Stream, writeFirst: boolean): void {
  const { scope, actDtype } = ctx;
  const T = h.shape[0];
  if (!w.shared || T === 0) return;
  const sp = openSpan(ctx.onSpan, s);
  if (writeFirst && !w.sharedGate && out.dtype === actDtype) {
    // Nothing under it to add onto and no gate: the MLP writes out itself, the same bits as zeros + y without the
    // zero fill's and the add's passes over [T, H] (DeepSeek's shared experts: ~0.27 GB a layer at 16K tokens).
    swigluMlp(s, scope, actDtype, w.shared, h, out);
  } else {
    const y = scope.tensor(actDtype, [T, h.shape[1]]);
    swigluMlp(s, scope, actDtype, w.shared, h, y);
    if (writeFirst) ops.fillRandom(s, out, 0, 0); // std 0: zeros, so that the gate below writes
    if (w.sharedGate) {
      const g = scope.tensor('f32', [T, 1]);
      ops.matmul(s, g, h, w.sharedGate);
      ops.sigmoidGateAdd(s, out, y, g);
    } else {
      ops.add(s, out, out, y);
    }
  }
  sp?.end('compute', 'shared expert', { tokens: T });
}

/** Tokens per expert, summed over ranks and micro-chunks ([M][E] at the head of every rank's counts). */
function expertTotals(gathered: readonly Int32Array[], M: number, E: number): number[] {
  const total = new Array<number>(E).fill(0);
  for (const c of gathered) for (let m = 0; m < M; m++) for (let e = 0; e < E; e++) total[e] += c[m * E + e];
  return total;
}
