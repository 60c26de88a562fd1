// What the EPS scheduler decides for one MoE layer on one rank (planner.ts makes it), and the order
// in which the executor must enqueue it so that the prediction holds:
//
//   compute stream: [shared if early], permute 0..D-1, [shared if overlap-dispatch], ffn 0..D-1,
//                   [shared if overlap-combine], unpermute 0..D-1 (each waits its combine)
//   comm stream:    dispatch 0, dispatch 1, combine 0, dispatch 2, combine 1, ..., combine D-1
//                   (dispatch i waits permute i; combine i waits ffn i)
//
// So while chunk i's expert FFN runs, the comm stream carries chunk i+1's dispatch and chunk i-1's
// combine. Without overlap (the baseline) everything runs in that order on one stream, with the
// shared expert last.
//
// A chunk is a range of tokens (micro-chunks) times a range of expert groups (placement.ts):
//   tokens axis:  chunk i = tokens of micro-chunks [a_i, b_i), every group. Permute i sorts its tokens,
//                 unpermute i adds them back.
//   experts axis: chunk i = every token, groups [g_i, h_i). Permute 0 sorts every token once and
//                 unpermute D-1 adds every token back once, after the last combine; the other permute
//                 and unpermute steps are empty (both axes share the orders above and the timeline model).
// A chunk's dispatch (and combine) is one all-to-all per group it holds (ChunkExchange): one group's
// rows are contiguous per peer in the permuted buffer, several groups' are not. With G = 1 every chunk
// is one all-to-all, as the plain token chunking always was.
import { EXPERT_KERNEL_FALLBACK, EXPERT_KERNELS, type ExpertKernel } from '../../native/ops';
import { formatMoeSchedule, type MoeSchedule, type PlanAxis } from '../schedule';

/**
 * Where the shared expert (Qwen2-MoE, DeepSeek) runs on the compute stream: early (enqueued before the
 * layer's host sync, so that the GPU runs it while the host reads the counts, gathers them and plans;
 * the executor does this for every overlapping plan), before the first FFN (in the shadow of the first
 * dispatch), after the last FFN (in the shadow of the last combine), after everything (no overlap), or
 * nowhere (the model has none).
 */
export type SharedPlacement = 'early' | 'overlap-dispatch' | 'overlap-combine' | 'serial' | 'none';

export type StreamName = 'compute' | 'comm';

/**
 * How a plan's dispatch sends rows: one per (token, slot) pair, or one per (token, destination rank)
 * (exec/dedupDispatcher.ts: the token axis, one expert group).
 */
export type DispatchKind = 'pairs' | 'dedup';

export type CommStep = { op: 'dispatch' | 'combine'; chunk: number };
export type ComputeStep = { op: 'permute' | 'ffn' | 'unpermute'; chunk: number } | { op: 'shared' };

/** A predicted op on this rank, in ms from the start of the layer (the router's start). */
export interface PredictedOp {
  stream: StreamName;
  name: string;
  startMs: number;
  endMs: number;
}

/**
 * A predicted time (ms) per expert kernel the choice weighed: grouped and dense always, grouped_sm90
 * where the cost model has its curves (LayerCosts.kernels).
 */
export type KernelTimes = { grouped: number; dense: number } & { [K in ExpertKernel]?: number };

/** A kernel's time; one not weighed is the time of the kernel it runs as (EXPERT_KERNEL_FALLBACK). */
export function kernelTime(times: KernelTimes, kernel: ExpertKernel): number {
  let k: ExpertKernel | undefined = kernel;
  while (k !== undefined) {
    const ms = times[k];
    if (ms !== undefined) return ms;
    k = EXPERT_KERNEL_FALLBACK[k];
  }
  return times.grouped;
}

/** The kernels a KernelTimes holds, in the op table's order. */
export function timedKernels(times: KernelTimes): ExpertKernel[] {
  return EXPERT_KERNELS.filter((k) => times[k] !== undefined);
}

/** "grouped 1.200 ms, dense 3.400 ms, grouped_sm90 0.900 ms" */
export function formatKernelTimes(times: KernelTimes, ms: (v: number) => string): string {
  return timedKernels(times)
    .map((k) => `${k} ${ms(times[k]!)} ms`)
    .join(', ');
}

export interface ChunkTimes {
  permuteMs: number;
  dispatchMs: number;
  /** This rank's expert FFN (two expert_matmul and the swiglu) with the chosen kernel. */
  ffnMs: number;
  /** The FFN with each kernel weighed, as the choice saw them. */
  kernelMs: KernelTimes;
  combineMs: number;
  unpermuteMs: number;
}

/** One all-to-all of a chunk: the rows of one expert group (contiguous per peer, in peer order). */
export interface ChunkExchange {
  group: number;
  /** First row of the group in the permuted buffer of the chunk's tokens (the layer's on the expert axis). */
  sendOffset: number;
  /** Rows this rank sends each peer (and receives back in the combine). */
  sentRows: number[];
  /** First row in the chunk's receive buffer (the exchanges of a chunk follow one another there). */
  recvOffset: number;
  /** Rows this rank receives from each peer (and sends back in the combine). */
  recvRows: number[];
  /** This rank's experts of the group: indices into its stacked weights [localFirst, localFirst + localCount). */
  localFirst: number;
  localCount: number;
  /** Rows per (source rank, local expert of the group), source-rank major: length world x localCount. */
  segments: number[];
}

export interface ChunkPlan {
  index: number;
  /** Micro-chunks [microStart, microEnd): the same on every rank (all of them on the expert axis). */
  microStart: number;
  microEnd: number;
  /** This rank's tokens [tokenStart, tokenEnd). */
  tokenStart: number;
  tokenEnd: number;
  /** Expert groups [groupStart, groupEnd) (all of them on the token axis). */
  groupStart: number;
  groupEnd: number;
  /** This rank's expert kernel for the chunk (ranks may differ). */
  kernel: ExpertKernel;
  /** The chunk's all-to-alls, one per group, in group order. */
  exchanges: ChunkExchange[];
  /** (token, slot) rows this rank sends to each peer in the dispatch, all exchanges together. */
  sentRows: number[];
  /** Rows this rank receives from each peer in the dispatch, all exchanges together. */
  recvRows: number[];
  /**
   * The expert_matmul segments of the chunk: the exchanges' segments one after the other (with G = 1,
   * rows per (source rank, local expert), source-rank major, length world x local experts).
   */
  segments: number[];
  /** Rows that cross the cluster in this chunk, all ranks together (0: every rank's all-to-all is empty). */
  globalRows: number;
  predicted: ChunkTimes;
}

/** What a chunk plan is made of: its span, this rank's rows and kernel, and its predicted times (every kernel's FFN). */
export type ChunkParts = Pick<ChunkPlan, 'index' | 'kernel' | 'exchanges' | 'sentRows' | 'recvRows' | 'segments' | 'globalRows'> & {
  span: Pick<ChunkPlan, 'microStart' | 'microEnd' | 'groupStart' | 'groupEnd'>;
  /** This rank's micro-chunk token offsets (M + 1 values). */
  microBounds: readonly number[];
  times: Omit<ChunkTimes, 'ffnMs'>;
};

/** A ChunkPlan from its parts: the span's tokens on this rank, and the FFN time of the chosen kernel. */
export function chunkPlanOf(p: ChunkParts): ChunkPlan {
  const { span, microBounds, times } = p;
  return {
    index: p.index,
    ...span,
    tokenStart: microBounds[span.microStart],
    tokenEnd: microBounds[span.microEnd],
    kernel: p.kernel,
    exchanges: p.exchanges,
    sentRows: p.sentRows,
    recvRows: p.recvRows,
    segments: p.segments,
    globalRows: p.globalRows,
    predicted: { ...times, ffnMs: kernelTime(times.kernelMs, p.kernel) },
  };
}

/** One alternative the search weighed (cluster-wide predicted layer time: the slowest rank's end). */
export interface PlanCandidate {
  axis: PlanAxis;
  degree: number;
  dispatch: DispatchKind;
  /** With the kernels chosen per rank and chunk (or as the schedule fixes them). */
  ms: number;
  shared: SharedPlacement;
  /** The all-to-all time of the candidate's chunks, summed (dispatch + combine). */
  commMs: number;
}

export interface MoePlan {
  schedule: MoeSchedule;
  rank: number;
  world: number;
  /** Micro-chunks the counts came in (M). */
  microChunks: number;
  /** The axis the chunks cut: tokens (micro-chunks) or expert groups. */
  axis: PlanAxis;
  /** Expert groups of the layout (G; 1: the plain token chunking). */
  groups: number;
  /** Pipeline degree D: the number of chunks. */
  degree: number;
  dispatch: DispatchKind;
  /** Two streams (true) or one (the baseline). */
  overlap: boolean;
  chunks: ChunkPlan[];
  shared: SharedPlacement;
  commOrder: CommStep[];
  computeOrder: ComputeStep[];
  /** Whether the times come from a cost model (false: none was given and the schedule fixed everything). */
  predicted: boolean;
  /** Predicted layer time of the slowest rank (ms; 0 without a model). */
  predictedMs: number;
  /** This rank's predicted ops. */
  timeline: PredictedOp[];
  candidates: PlanCandidate[];
  /** Why this axis, D, kernel and shared placement: the alternatives with their predicted times. */
  explain(): string;
}

/** A plan in a few words, e.g. "D=2 dense" or "D=1 grouped serial" (metrics, tables). */
export function planLabel(plan: Pick<MoePlan, 'degree' | 'chunks' | 'overlap' | 'axis' | 'dispatch'>): string {
  const kernels = [...new Set(plan.chunks.map((c) => c.kernel))].join('+');
  const axis = plan.axis === 'experts' ? ' experts' : '';
  return `D=${plan.degree}${axis} ${kernels}${plan.dispatch === 'dedup' ? ' dedup' : ''}${plan.overlap ? '' : ' serial'}`;
}

/** The comm stream's order for D chunks: dispatch 0, then dispatch i+1 before combine i. */
export function commOrder(degree: number, overlap: boolean): CommStep[] {
  const steps: CommStep[] = [];
  if (!overlap) {
    for (let i = 0; i < degree; i++) steps.push({ op: 'dispatch', chunk: i }, { op: 'combine', chunk: i });
    return steps;
  }
  steps.push({ op: 'dispatch', chunk: 0 });
  for (let i = 0; i < degree; i++) {
    if (i + 1 < degree) steps.push({ op: 'dispatch', chunk: i + 1 });
    steps.push({ op: 'combine', chunk: i });
  }
  return steps;
}

/** The compute stream's order (see the top of this file). */
export function computeOrder(degree: number, overlap: boolean, shared: SharedPlacement): ComputeStep[] {
  const steps: ComputeStep[] = [];
  if (!overlap) {
    for (let i = 0; i < degree; i++) {
      steps.push({ op: 'permute', chunk: i }, { op: 'ffn', chunk: i }, { op: 'unpermute', chunk: i });
    }
    if (shared !== 'none') steps.push({ op: 'shared' });
    return steps;
  }
  if (shared === 'early') steps.push({ op: 'shared' });
  for (let i = 0; i < degree; i++) steps.push({ op: 'permute', chunk: i });
  if (shared === 'overlap-dispatch') steps.push({ op: 'shared' });
  for (let i = 0; i < degree; i++) steps.push({ op: 'ffn', chunk: i });
  if (shared === 'overlap-combine' || shared === 'serial') steps.push({ op: 'shared' });
  for (let i = 0; i < degree; i++) steps.push({ op: 'unpermute', chunk: i });
  return steps;
}

export interface ExplainContext {
  /** The best predicted time among the candidates. */
  bestMs: number;
  tolerance: number;
  /** (token, slot) rows of the whole cluster in this layer. */
  totalPairs: number;
  /** The candidate with one kernel on every rank and chunk, for each kernel weighed. */
  kernelAlternatives(candidate: PlanCandidate): KernelTimes;
}

/** The text of plan.explain(): the choice, the alternatives and their predicted times, the chunks. */
export function explainPlan(plan: MoePlan, ctx: ExplainContext): string {
  const ms = (v: number) => v.toFixed(3);
  // With one group there is one axis: the text stays as it was before expert groups.
  const grouped = plan.groups > 1;
  const kernels = [...new Set(plan.chunks.map((c) => c.kernel))].join('+');
  const lines: string[] = [];
  lines.push(
    `MoE plan, rank ${plan.rank} of ${plan.world}, schedule ${formatMoeSchedule(plan.schedule)}: D = ${plan.degree}` +
      (grouped ? ` along ${plan.axis} (${plan.groups} expert groups)` : '') +
      (plan.dispatch === 'dedup' ? ', dedup dispatch (a row per token and destination rank)' : '') +
      `, ${kernels} kernel on this rank, ` +
      `${plan.overlap ? 'comm overlapped' : 'no overlap'}, shared expert ${plan.shared}` +
      (plan.predicted ? `; predicted ${ms(plan.predictedMs)} ms (slowest rank)` : '; no cost model, times not predicted'),
  );
  const sent = plan.chunks.reduce((a, c) => a + c.sentRows.reduce((x, y) => x + y, 0), 0);
  const recv = plan.chunks.reduce((a, c) => a + c.recvRows.reduce((x, y) => x + y, 0), 0);
  lines.push(
    `  ${ctx.totalPairs} (token, slot) rows in the cluster, M = ${plan.microChunks} micro-chunks; this rank sends ${sent} rows and receives ${recv}`,
  );
  if (plan.predicted) {
    const alternatives = plan.candidates.map((c) => ctx.kernelAlternatives(c));
    const weighed: ExpertKernel[] = alternatives.length > 0 ? timedKernels(alternatives[0]) : ['grouped', 'dense'];
    lines.push(
      `  candidates (predicted layer ms: chosen kernels | ${weighed.map((k) => `all ${k}`).join(' | ')}; all-to-all total; shared expert):`,
    );
    plan.candidates.forEach((c, i) => {
      const all = weighed.map((k) => ms(kernelTime(alternatives[i], k)).padStart(9)).join(' | ');
      const mark = c.degree === plan.degree && c.axis === plan.axis && c.dispatch === plan.dispatch ? ' <-' : '';
      lines.push(
        `    ${grouped ? `${c.axis.padEnd(7)} ` : ''}D=${String(c.degree).padEnd(3)}${c.dispatch === 'dedup' ? ' dedup' : ''} ${ms(c.ms).padStart(9)} | ${all}; ` +
          `comm ${ms(c.commMs)}; shared ${c.shared}${mark}`,
      );
    });
    if (plan.schedule.kind === 'auto') {
      lines.push(
        plan.world === 1
          ? '  chose D = 1: a world of one has no all-to-all to hide'
          : `  chose D = ${plan.degree}${grouped ? ` along ${plan.axis}` : ''}: the smallest D within ${(ctx.tolerance * 100).toFixed(0)}% of the best (${ms(ctx.bestMs)} ms)`,
      );
    } else {
      lines.push(`  D = ${plan.degree}${grouped ? ` along ${plan.axis}` : ''} fixed by the schedule`);
    }
  }
  for (const c of plan.chunks) {
    const p = c.predicted;
    const why = plan.predicted ? ` (${formatKernelTimes(p.kernelMs, ms)})` : '';
    const times = plan.predicted ? `; dispatch ${ms(p.dispatchMs)}, ffn ${ms(p.ffnMs)}, combine ${ms(p.combineMs)} ms` : '';
    const groups = grouped ? ` groups [${c.groupStart}, ${c.groupEnd})` : '';
    lines.push(
      `  chunk ${c.index}: micro [${c.microStart}, ${c.microEnd}) tokens [${c.tokenStart}, ${c.tokenEnd})${groups}, kernel ${c.kernel}${why}; ` +
        `sends [${c.sentRows.join(', ')}], receives [${c.recvRows.join(', ')}]${times}`,
    );
  }
  return lines.join('\n');
}
