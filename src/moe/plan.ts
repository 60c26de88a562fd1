// What the EPS scheduler decides for one MoE layer on one rank (scheduler.ts makes it), and the order
// in which the executor must enqueue it so that the prediction holds:
//
//   compute stream: permute 0..D-1, [shared if overlap-dispatch], ffn 0..D-1,
//                   [shared if overlap-combine], unpermute 0..D-1 (each waits its combine)
//   comm stream:    dispatch 0, dispatch 1, combine 0, dispatch 2, combine 1, ..., combine D-1
//                   (dispatch i waits permute i; combine i waits ffn i)
//
// So while chunk i's expert FFN runs, the comm stream carries chunk i+1's dispatch and chunk i-1's
// combine. Without overlap (the baseline) everything runs in that order on one stream, with the
// shared expert last.
import type { ExpertKernel } from '../native/ops';
import type { MoeSchedule } from './schedule';

/**
 * Where the shared expert (Qwen2-MoE) runs on the compute stream: before the first FFN (in the
 * shadow of the first dispatch), after the last FFN (in the shadow of the last combine), after
 * everything (no overlap), or nowhere (the model has none).
 */
export type SharedPlacement = 'overlap-dispatch' | 'overlap-combine' | 'serial' | 'none';

export type StreamName = 'compute' | 'comm';

export type CommStep = { op: 'dispatch' | 'combine'; chunk: number };
export type ComputeStep = { op: 'permute' | 'ffn' | 'unpermute'; chunk: number } | { op: 'shared' };

/** A predicted op on this rank, in ms from the start of the layer (the router's start). */
export interface PredictedOp {
  stream: StreamName;
  name: string;
  startMs: number;
  endMs: number;
}

export interface ChunkTimes {
  permuteMs: number;
  dispatchMs: number;
  /** This rank's expert FFN (two expert_matmul and the swiglu) with the chosen kernel. */
  ffnMs: number;
  /** The FFN with each kernel, as the choice saw them. */
  groupedMs: number;
  denseMs: number;
  combineMs: number;
  unpermuteMs: number;
}

export interface ChunkPlan {
  index: number;
  /** Micro-chunks [microStart, microEnd): the same on every rank. */
  microStart: number;
  microEnd: number;
  /** This rank's tokens [tokenStart, tokenEnd). */
  tokenStart: number;
  tokenEnd: number;
  /** This rank's expert kernel for the chunk (ranks may differ). */
  kernel: ExpertKernel;
  /** (token, slot) rows this rank sends to each peer in the dispatch (and receives back in the combine). */
  sentRows: number[];
  /** Rows this rank receives from each peer in the dispatch (and sends back in the combine). */
  recvRows: number[];
  /** Rows per (source rank, local expert), source-rank major: the expert_matmul counts, length world x local experts. */
  segments: number[];
  /** Rows that cross the cluster in this chunk, all ranks together (0: every rank's all-to-all is empty). */
  globalRows: number;
  predicted: ChunkTimes;
}

/** One alternative the search weighed (cluster-wide predicted layer time: the slowest rank's end). */
export interface PlanCandidate {
  degree: number;
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
  /** Pipeline degree D: the number of chunks. */
  degree: number;
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
  /** Why this D, kernel and shared placement: the alternatives with their predicted times. */
  explain(): string;
}

/** A plan in a few words, e.g. "D=2 dense" or "D=1 grouped serial" (metrics, tables). */
export function planLabel(plan: Pick<MoePlan, 'degree' | 'chunks' | 'overlap'>): string {
  const kernels = [...new Set(plan.chunks.map((c) => c.kernel))].join('+');
  return `D=${plan.degree} ${kernels}${plan.overlap ? '' : ' serial'}`;
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
  /** The candidate of degree D with one kernel on every rank and chunk. */
  kernelAlternatives(degree: number): { allGroupedMs: number; allDenseMs: number };
}

/** The text of plan.explain(): the choice, the alternatives and their predicted times, the chunks. */
export function explainPlan(plan: MoePlan, ctx: ExplainContext): string {
  const ms = (v: number) => v.toFixed(3);
  const schedule =
    plan.schedule.kind === 'fixed'
      ? `fixed:${plan.schedule.degree}${plan.schedule.kernel ? `:${plan.schedule.kernel}` : ''}`
      : plan.schedule.kind;
  const kernels = [...new Set(plan.chunks.map((c) => c.kernel))].join('+');
  const lines: string[] = [];
  lines.push(
    `MoE plan, rank ${plan.rank} of ${plan.world}, schedule ${schedule}: D = ${plan.degree}, ${kernels} kernel on this rank, ` +
      `${plan.overlap ? 'comm overlapped' : 'no overlap'}, shared expert ${plan.shared}` +
      (plan.predicted ? `; predicted ${ms(plan.predictedMs)} ms (slowest rank)` : '; no cost model, times not predicted'),
  );
  const sent = plan.chunks.reduce((a, c) => a + c.sentRows.reduce((x, y) => x + y, 0), 0);
  const recv = plan.chunks.reduce((a, c) => a + c.recvRows.reduce((x, y) => x + y, 0), 0);
  lines.push(
    `  ${ctx.totalPairs} (token, slot) rows in the cluster, M = ${plan.microChunks} micro-chunks; this rank sends ${sent} rows and receives ${recv}`,
  );
  if (plan.predicted) {
    lines.push('  candidates (predicted layer ms: chosen kernels | all grouped | all dense; all-to-all total; shared expert):');
    for (const c of plan.candidates) {
      const { allGroupedMs, allDenseMs } = ctx.kernelAlternatives(c.degree);
      const mark = c.degree === plan.degree ? ' <-' : '';
      lines.push(
        `    D=${String(c.degree).padEnd(3)} ${ms(c.ms).padStart(9)} | ${ms(allGroupedMs).padStart(9)} | ${ms(allDenseMs).padStart(9)}; ` +
          `comm ${ms(c.commMs)}; shared ${c.shared}${mark}`,
      );
    }
    if (plan.schedule.kind === 'auto') {
      lines.push(
        plan.world === 1
          ? '  chose D = 1: a world of one has no all-to-all to hide'
          : `  chose D = ${plan.degree}: the smallest D within ${(ctx.tolerance * 100).toFixed(0)}% of the best (${ms(ctx.bestMs)} ms)`,
      );
    } else {
      lines.push(`  D = ${plan.degree} fixed by the schedule`);
    }
  }
  for (const c of plan.chunks) {
    const p = c.predicted;
    const why = plan.predicted ? ` (grouped ${ms(p.groupedMs)} ms, dense ${ms(p.denseMs)} ms)` : '';
    const times = plan.predicted ? `; dispatch ${ms(p.dispatchMs)}, ffn ${ms(p.ffnMs)}, combine ${ms(p.combineMs)} ms` : '';
    lines.push(
      `  chunk ${c.index}: micro [${c.microStart}, ${c.microEnd}) tokens [${c.tokenStart}, ${c.tokenEnd}), kernel ${c.kernel}${why}; ` +
        `sends [${c.sentRows.join(', ')}], receives [${c.recvRows.join(', ')}]${times}`,
    );
  }
  return lines.join('\n');
}
