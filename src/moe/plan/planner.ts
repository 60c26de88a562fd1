// The EPS scheduler's decision for one MoE layer: a pure function of every rank's per-micro-chunk
// expert counts (gathered, so every rank holds the same numbers) and the cost model. It cuts the layer
// into D chunks along one axis, tokens (unions of the M micro-chunks) or expert groups (unions of the
// layout's G groups, placement.ts), picks each chunk's expert kernel on this rank, and places the
// shared expert, by predicting the cluster's timeline (pipelineModel.ts) for every alternative.
//
// Why the expert axis: after the all-to-all from W ranks a chunk's rows come in W x local-experts
// segments and the dense kernel launches one GEMM per segment, so D token chunks launch D times the
// GEMMs, each 1/D the rows (DeepSeek-V2 on 4 H200s: D=2 19.1 ms, D=4 27.2 against 16.9 at D=1). D chunks
// of expert groups keep the layer's segments and their rows as at D = 1, and still overlap the
// dispatch of chunk i+1 with the GEMMs of chunk i.
//
// Ranks must agree on D and on the chunk boundaries (their all-to-alls pair up), so everything that
// decides them is computed from the gathered counts and the model alone, identically on every rank;
// this rank's own token bounds only name the token ranges of its chunks. The kernel is per rank: the
// one the model predicts fastest for the rows this rank's experts receive, among the kernels it has
// curves for (grouped and dense; grouped_sm90 where the profiler ran it: pickKernel).
import { EXPERT_KERNELS, type ExpertKernel } from '../../native/ops';
import type { CostModel } from '../cost/costModel';
import { layerCosts } from '../cost/layerCosts';
import { simulatePipeline, type RankCosts } from '../cost/pipelineModel';
import type { Candidate, MoePlanInput, PlanContext } from './candidate';
import { dedupCandidate, dedupRows } from './dedupPlan';
import { LayerCounts } from './layerCounts';
import { pairsCandidate } from './pairsPlan';
import { cachedDecision, loadSignature, rememberDecision, type PlanDecision } from './planCache';
import {
  type ChunkPlan,
  type ComputeStep,
  type KernelTimes,
  type MoePlan,
  type PlanCandidate,
  type PredictedOp,
  type SharedPlacement,
  commOrder,
  explainPlan,
} from './plan';
import { ExpertLayout, ExpertLayoutError } from '../placement';
import { formatMoeSchedule, scheduleAxis, scheduleNeedsCostModel, type MoeSchedule, type PlanAxis } from '../schedule';

export type { MoePlanInput };

export class PlanInputError extends Error {
  readonly code = 'EPS_PLAN_INPUT';
  constructor(message: string) {
    super(`planMoeLayer: ${message}`);
    this.name = 'PlanInputError';
  }
}

export class NoCostModelError extends Error {
  readonly code = 'EPS_NO_COST_MODEL';
  constructor(schedule: MoeSchedule) {
    super(
      `--moe-schedule ${formatMoeSchedule(schedule)} needs a cost model to choose; measure one (eps-moe profile) or fix D and the kernel`,
    );
    this.name = 'NoCostModelError';
  }
}

/**
 * auto takes the smallest D whose predicted time is within this fraction of the best: the model is
 * not exact (median prediction error 12% on 2 H200s, BENCHMARKS.md), and a deeper pipeline predicted
 * only a little faster mostly measured slower. On the recorded predictions of session 2's runs, 0.05
 * and 0.15 put auto within 5% of the best fixed plan equally often (20-22 of 24 points); 0 did worse.
 */
export const DEGREE_TOLERANCE = 0.15;

export function planMoeLayer(input: MoePlanInput, model: CostModel | undefined, schedule: MoeSchedule): MoePlan {
  const layout = validate(input, schedule);
  if (!model && scheduleNeedsCostModel(schedule)) throw new NoCostModelError(schedule);

  const world = layout.world;
  const M = input.microChunks;
  const G = layout.groups;
  const layer = new LayerCounts(input, layout);
  const costs = model ? layerCosts(model, input, world) : undefined;
  const overlap = schedule.kind !== 'baseline';
  // One chunk and no shared expert leave nothing to overlap: such plans run on one stream, which measured
  // up to 14% faster than two on 2 H200s (Mixtral-8x7B and Qwen3-30B-A3B layers, BENCHMARKS.md session 2).
  const overlapOf = (degree: number) => overlap && (degree > 1 || input.sharedIntermediate > 0);
  const fixedKernel: ExpertKernel | undefined =
    schedule.kind === 'baseline' ? 'dense' : schedule.kind === 'fixed' ? schedule.kernel : undefined;

  // The candidates: (axis, D). D = 1 is the same plan on both axes: it is weighed once, on tokens.
  // auto with a load like an earlier layer's weighs only what was chosen then (planCache.ts).
  const dedupWeighed = input.dedup !== undefined && world > 1 && G === 1;
  const signature = model && schedule.kind === 'auto' && world > 1 ? searchSignature(input, layer, layout, dedupWeighed) : undefined;
  const known = signature !== undefined ? cachedDecision(model!, signature) : undefined;

  const ctx: PlanContext = {
    input,
    layout,
    layer,
    costs,
    rankBase: Array.from({ length: world }, (_, r) => ({
      routerMs: costs ? costs.routerMs(layer.rankPairs(r)) : 0,
      sharedMs: costs && input.sharedIntermediate > 0 ? costs.sharedMs(layer.rankPairs(r)) : 0,
    })),
    kernelFor: (times) => fixedKernel ?? pickKernel(times),
  };
  const candidates: Candidate[] = [];
  if (!(dedupWeighed && input.dedup!.only)) {
    if (schedule.kind === 'fixed') candidates.push(pairsCandidate(ctx, scheduleAxis(schedule)!, schedule.degree));
    else if (schedule.kind === 'baseline' || world === 1) candidates.push(pairsCandidate(ctx, 'tokens', 1));
    else if (known) {
      if (known.dispatch === 'pairs') candidates.push(pairsCandidate(ctx, known.axis, known.degree));
    } else {
      for (const degree of autoDegrees(M)) candidates.push(pairsCandidate(ctx, 'tokens', degree));
      if (G > 1) for (const degree of autoDegrees(G).filter((d) => d > 1)) candidates.push(pairsCandidate(ctx, 'experts', degree));
    }
  }
  if (dedupWeighed && (!known || known.dispatch === 'dedup')) {
    for (const degree of dedupDegrees(schedule, M, known)) candidates.push(dedupCandidate(ctx, degree));
  }

  const placements: SharedPlacement[] =
    input.sharedIntermediate === 0
      ? ['none']
      : !overlap
        ? ['serial']
        : input.sharedEarly
          ? ['early']
          : ['overlap-dispatch', 'overlap-combine'];

  /** A candidate's predicted layer time with its best shared-expert placement, and what the plan needs of it. */
  const weigh = (c: Candidate): Evaluated => {
    const D = c.what.degree;
    const ovl = overlapOf(D);
    // The counts' read follows the dedup path's moe_rank_dispatch (its permute 0); an early shared expert
    // was enqueued after the read, before the host sync.
    const readAfter = c.what.dispatch === 'dedup' ? 1 : 0;
    // A lone rank's early permute is the first step after an early shared expert; with everything enqueued before
    // the sync nothing waits for it (its read and plan run beside the GPU's work).
    const early = D === 1 && c.what.dispatch === 'pairs' ? input.enqueuedBeforeSync : undefined;
    const syncOf = (shared: SharedPlacement) =>
      costs && early !== 'all'
        ? {
            ms: costs.hostSyncMs(),
            afterSteps: readAfter,
            preSyncSteps: readAfter + (shared === 'early' ? 1 : 0) + (early === 'permute' ? 1 : 0),
          }
        : undefined;
    const simulate = (ranks: RankCosts[], shared: SharedPlacement, timelineRank?: number, timeline?: PredictedOp[]) =>
      simulatePipeline(
        {
          overlap: ovl,
          commOrder: commOrder(D, ovl),
          computeOrder: c.computeOrder(shared, ovl),
          ...c.comm,
          ranks,
          sync: syncOf(shared),
        },
        timelineRank,
        timeline,
      ).layerMs;
    const chosenRanks = c.ranksWith((i, r) => c.kernels[i][r]);
    let best = { shared: placements[0], ms: Infinity };
    for (const shared of placements) {
      const ms = simulate(chosenRanks, shared);
      if (ms < best.ms) best = { shared, ms };
    }
    const passes = c.comm.commMs.reduce((a, b) => a + b, 0) + (c.comm.combineMs ?? c.comm.commMs).reduce((a, b) => a + b, 0);
    return {
      candidate: { ...c.what, ms: best.ms, shared: best.shared, commMs: passes },
      chunkPlans: c.chunkPlans,
      overlap: ovl,
      computeOrder: c.computeOrder(best.shared, ovl),
      timeline: (t: PredictedOp[]) => simulate(chosenRanks, best.shared, input.rank, t),
      // For explain() only: what one kernel everywhere would have given, for each kernel weighed.
      alternatives: () => {
        const all: KernelTimes = { grouped: 0, dense: 0 };
        for (const kernel of costs?.kernels ?? ['grouped', 'dense'])
          all[kernel] = simulate(
            c.ranksWith(() => kernel),
            best.shared,
          );
        return all;
      },
    };
  };
  const evaluated = candidates.map(weigh);

  const bestMs = Math.min(...evaluated.map((e) => e.candidate.ms));
  // By D, the faster candidate first at equal D: the first within tolerance of the best is the smallest such D.
  const byDegree = [...evaluated].sort((x, y) => x.candidate.degree - y.candidate.degree || x.candidate.ms - y.candidate.ms);
  const chosen = byDegree.find((e) => e.candidate.ms <= bestMs * (1 + DEGREE_TOLERANCE)) ?? evaluated[0];
  const timeline: PredictedOp[] = [];
  if (costs) chosen.timeline(timeline);

  const { axis, degree, dispatch } = chosen.candidate;
  if (signature !== undefined && !known) rememberDecision(model!, signature, { axis, degree, dispatch });
  const rank = input.rank;
  const chunks = chosen.chunkPlans(rank);
  const shared = chosen.candidate.shared;
  const plan: MoePlan = {
    schedule,
    rank,
    world,
    microChunks: M,
    axis,
    groups: G,
    degree,
    dispatch,
    overlap: chosen.overlap,
    chunks,
    shared,
    commOrder: commOrder(degree, chosen.overlap),
    computeOrder: chosen.computeOrder,
    predicted: costs !== undefined,
    predictedMs: costs ? chosen.candidate.ms : 0,
    timeline,
    candidates: evaluated.map((e) => e.candidate),
    explain: () =>
      explainPlan(plan, {
        bestMs,
        tolerance: DEGREE_TOLERANCE,
        totalPairs: layer.totalPairs(),
        kernelAlternatives: (c) => evaluated.find((e) => e.candidate === c)!.alternatives(),
      }),
  };
  return plan;
}

/**
 * What auto's search depends on beyond the cost model: its options (micro-chunks, groups, ranks, the
 * dedup candidate, the shared expert's placement, the layer's dimensions) and, per rank, the loads
 * (pairs sent and received, the busiest local expert, dedup rows sent and received), and the busiest
 * micro-chunk (how token chunks would split).
 */
function searchSignature(input: MoePlanInput, layer: LayerCounts, layout: ExpertLayout, dedupWeighed: boolean): string {
  const W = layout.world;
  const M = input.microChunks;
  const loads: number[] = [];
  for (let r = 0; r < W; r++) {
    const { first, count } = layout.ranges[r];
    let received = 0;
    let busiest = 0;
    for (let v = first; v < first + count; v++) {
      const n = layer.expertRows(layout.virtualOf(v));
      received += n;
      busiest = Math.max(busiest, n);
    }
    loads.push(layer.rankPairs(r), received, busiest);
    if (dedupWeighed) {
      const rows = dedupRows(input.dedup!.microRows, W, 0, M);
      let sent = 0;
      let got = 0;
      for (let p = 0; p < W; p++) {
        sent += rows[r][p];
        got += rows[p][r];
      }
      loads.push(sent, got);
    }
  }
  loads.push(...layer.microLoads());
  const fixed = [
    M,
    layout.groups,
    W,
    dedupWeighed ? (input.dedup!.only ? 2 : 1) : 0,
    input.sharedEarly ? 1 : 0,
    input.enqueuedBeforeSync === 'all' ? 2 : input.enqueuedBeforeSync === 'permute' ? 1 : 0,
  ];
  fixed.push(input.topK, input.hidden, input.expertIntermediate, input.sharedIntermediate, input.dtypeBytes);
  return loadSignature(fixed, loads);
}

/** One weighed candidate: its predicted time, and how to make its chunks, timeline and explanation. */
interface Evaluated {
  candidate: PlanCandidate;
  chunkPlans: (rank: number) => ChunkPlan[];
  /** Two streams (false: one, the baseline and plans with nothing to overlap). */
  overlap: boolean;
  /** The compute stream's order with the chosen shared-expert placement. */
  computeOrder: ComputeStep[];
  timeline: (t: PredictedOp[]) => number;
  alternatives: () => KernelTimes;
}

/** The pipeline degrees of the dedup candidates: the schedule's, auto's (or the one remembered). */
function dedupDegrees(schedule: MoeSchedule, M: number, known: PlanDecision | undefined): number[] {
  if (known) return [known.degree];
  if (schedule.kind === 'fixed') return [schedule.degree];
  if (schedule.kind === 'baseline') return [1];
  return autoDegrees(M);
}

/**
 * The D that auto weighs over n units (M micro-chunks, or G expert groups): powers of two up to n, and
 * n itself. Chunks of a power-of-two count split evenly loaded units evenly; the other D mostly add
 * uneven chunks at the price of planning time (the plan is on the critical path of every layer).
 */
export function autoDegrees(units: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= units; d *= 2) out.push(d);
  if (out[out.length - 1] !== units) out.push(units);
  return out;
}

/**
 * The grouped kernel must be predicted this much faster to be chosen: its per-segment curve is the less
 * exact of the two (cuBLAS's grouped GEMM runs its groups in parallel, so its time is not quite a sum
 * over segments). On the recorded predictions of session 2's runs, 0.9 and 1 chose alike and 0.8 missed
 * the grouped kernel where it won (Qwen3-30B-A3B at 4K tokens per rank: 1.39x the best plan).
 */
export const GROUPED_MARGIN = 0.9;

/**
 * Each kernel's predicted time is weighed against the others' divided by its margin: dense 1 (one
 * cuBLAS GEMM per segment: its per-segment curve is what runs), the grouped kernels GROUPED_MARGIN.
 * grouped_sm90 takes the grouped margin for the same reason (one persistent launch over every segment's
 * tiles, so its time is not quite a per-segment sum either); between the two grouped kernels the
 * margins cancel and the faster is chosen. Not yet re-measured on runs with grouped_sm90 (issue 12).
 */
export const KERNEL_MARGIN: Readonly<Record<ExpertKernel, number>> = { grouped: GROUPED_MARGIN, dense: 1, grouped_sm90: GROUPED_MARGIN };

/**
 * The kernel auto (and fixed:D without a kernel) runs a chunk with on a rank: among the kernels with a
 * time (those the cost model has curves for: never grouped_sm90 where it was not measured), the
 * least time / margin; on a tie the earlier of dense, then the op table's order.
 */
export function pickKernel(times: KernelTimes): ExpertKernel {
  let best: ExpertKernel = 'dense';
  for (const kernel of EXPERT_KERNELS) {
    const ms = times[kernel];
    if (kernel === 'dense' || ms === undefined) continue;
    // ms / margin < best / bestMargin, without the division (grouped vs dense reads as before:
    // grouped < GROUPED_MARGIN * dense).
    if (ms * KERNEL_MARGIN[best] < KERNEL_MARGIN[kernel] * times[best]!) best = kernel;
  }
  return best;
}

/** Checks the input; returns the expert layout it describes. */
function validate(input: MoePlanInput, schedule: MoeSchedule): ExpertLayout {
  const { counts, microChunks: M, numExperts: E, ranges, rank, microBounds } = input;
  const world = ranges.length;
  const posInt = (v: number, name: string) => {
    if (!Number.isInteger(v) || v < 1) throw new PlanInputError(`${name} must be a positive integer, got ${v}`);
  };
  posInt(M, 'microChunks');
  posInt(E, 'numExperts');
  posInt(input.topK, 'topK');
  posInt(input.hidden, 'hidden');
  posInt(input.expertIntermediate, 'expertIntermediate');
  posInt(input.dtypeBytes, 'dtypeBytes');
  if (!Number.isInteger(input.sharedIntermediate) || input.sharedIntermediate < 0) {
    throw new PlanInputError(`sharedIntermediate must be a non-negative integer, got ${input.sharedIntermediate}`);
  }
  if (world < 1) throw new PlanInputError('ranges is empty');
  if (!Number.isInteger(rank) || rank < 0 || rank >= world) throw new PlanInputError(`rank ${rank} is outside a world of ${world}`);
  if (input.enqueuedBeforeSync !== undefined && world !== 1) {
    throw new PlanInputError(`enqueuedBeforeSync (${input.enqueuedBeforeSync}) is a lone rank's; this world has ${world} ranks`);
  }
  let nextExpert = 0;
  ranges.forEach(({ first, count }, r) => {
    if (first !== nextExpert || !Number.isInteger(count) || count < 0) {
      throw new PlanInputError(`ranges[${r}] = {first: ${first}, count: ${count}} does not continue from expert ${nextExpert}`);
    }
    nextExpert += count;
  });
  if (nextExpert !== E) throw new PlanInputError(`ranges cover ${nextExpert} experts, not ${E}`);
  if (counts.length !== world) throw new PlanInputError(`counts has ${counts.length} ranks, ranges ${world}`);
  counts.forEach((c, r) => {
    if (c.length !== M * E) throw new PlanInputError(`counts[${r}] has ${c.length} values, expected M x E = ${M} x ${E}`);
    for (let i = 0; i < c.length; i++) {
      if (!Number.isInteger(c[i]) || c[i] < 0)
        throw new PlanInputError(`counts[${r}][${Math.floor(i / E)}][${i % E}] = ${c[i]} is not a count`);
    }
  });
  if (microBounds.length !== M + 1 || microBounds[0] !== 0) {
    throw new PlanInputError(`microBounds must hold M + 1 = ${M + 1} offsets starting at 0, got [${microBounds.join(', ')}]`);
  }
  for (let m = 0; m < M; m++) {
    if (!Number.isInteger(microBounds[m + 1]) || microBounds[m + 1] < microBounds[m]) {
      throw new PlanInputError(`microBounds must be non-decreasing integers, got [${microBounds.join(', ')}]`);
    }
  }
  let layout: ExpertLayout;
  try {
    layout = new ExpertLayout(ranges, input.expertGroups ?? 1);
  } catch (e) {
    if (e instanceof ExpertLayoutError) throw new PlanInputError(e.message);
    throw e;
  }
  if (schedule.kind === 'fixed') {
    const axis = scheduleAxis(schedule);
    if (axis === 'tokens' && schedule.degree > M) {
      throw new PlanInputError(
        `fixed:${schedule.degree} needs at least ${schedule.degree} micro-chunks, the counts have ${M} (count microChunkCount(schedule) of them)`,
      );
    }
    if (axis === 'experts' && schedule.degree > layout.groups) {
      throw new PlanInputError(
        `${formatMoeSchedule(schedule)} needs at least ${schedule.degree} expert groups, the layout has ${layout.groups}`,
      );
    }
  }
  return layout;
}
