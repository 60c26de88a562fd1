// What the planner weighs: the layer's input (the gathered counts and the layer's dimensions), and a
// candidate plan as the two kinds of dispatch describe it (pairsPlan.ts, dedupPlan.ts). A candidate
// says what its chunks cost on every rank under any choice of kernels, which kernels it would pick,
// and how its chunks and compute order look; the planner (planner.ts) predicts each on the cluster's
// timeline and chooses.
import type { ExpertKernel } from '../../native/ops';
import type { LayerCosts } from '../cost/layerCosts';
import type { RankCosts } from '../cost/pipelineModel';
import type { LayerCounts } from './layerCounts';
import type { ExpertLayout, ExpertRange } from '../placement';
import type { ChunkPlan, ComputeStep, KernelTimes, PlanCandidate, SharedPlacement } from './plan';

export interface MoePlanInput {
  /**
   * Every rank's moe_count result in rank order, each flattened [M][E] (row m = micro-chunk m, column
   * v = virtual expert v, placement.ts; the checkpoint's expert v when expertGroups is 1): what the
   * allGather of the counts returns.
   */
  counts: readonly ArrayLike<number>[];
  /** M: micro-chunks per rank. */
  microChunks: number;
  numExperts: number;
  topK: number;
  /** This rank's micro-chunk token offsets: M + 1 values from 0 to this rank's token count. */
  microBounds: readonly number[];
  rank: number;
  /** Every rank's experts, in rank order (world = ranges.length). */
  ranges: readonly ExpertRange[];
  /** G: groups of each rank's experts (the expert axis' unit; default 1: the token axis only). */
  expertGroups?: number;
  hidden: number;
  expertIntermediate: number;
  /** Bytes per activation element (2 for bf16). */
  dtypeBytes: number;
  /** 0 when the model has no shared expert. */
  sharedIntermediate: number;
  /**
   * The dedup dispatch's row counts, when the layer made them (moe_rank_count before the host sync):
   * microRows[q], flattened [M][W], = rows rank q would send rank p from micro-chunk m. The search then
   * weighs dedup candidates (one expert group only); `only`: they are the sole candidates (the user
   * asked for the dedup dispatch).
   */
  dedup?: { microRows: readonly ArrayLike<number>[]; only: boolean };
  /**
   * The shared expert was enqueued before the host sync (exec/moeLayer.ts): the only placement is 'early'.
   * Ignored without overlap (the baseline runs it last).
   */
  sharedEarly?: boolean;
  /**
   * A lone rank's one chunk went out before the host sync too (exec/moeLayer.ts): its permute ('permute':
   * pairsDispatcher.ts permuteEarly), or the permute, the experts and the unpermute ('all': expertsOnDeviceCounts,
   * the host then waits for nobody). Rank 0 of one, one chunk, the pairs dispatch only.
   */
  enqueuedBeforeSync?: 'permute' | 'all';
}

/** What every candidate is made from: the input, its layout and counts, the costs (none without a model). */
export interface PlanContext {
  input: MoePlanInput;
  layout: ExpertLayout;
  layer: LayerCounts;
  costs: LayerCosts | undefined;
  /** Per rank: the router and the shared expert, the same in every candidate. */
  rankBase: { routerMs: number; sharedMs: number }[];
  /** The kernel for a chunk on a rank from its predicted FFN time with each kernel weighed (or the one the schedule fixes). */
  kernelFor: (times: KernelTimes) => ExpertKernel;
}

/** One alternative, before it is weighed. */
export interface Candidate {
  what: Pick<PlanCandidate, 'axis' | 'degree' | 'dispatch'>;
  /** Per chunk: its dispatch, and its combine when that differs (the dedup dispatch also sends slots). */
  comm: { commMs: Float64Array; combineMs?: Float64Array };
  /** The kernel of chunk i on rank r, as kernelFor chose it. */
  kernels: ExpertKernel[][];
  /** Every rank's costs with the kernels given per (chunk, rank). */
  ranksWith(kernelOf: (chunk: number, rank: number) => ExpertKernel): RankCosts[];
  chunkPlans(rank: number): ChunkPlan[];
  computeOrder(shared: SharedPlacement, overlap: boolean): ComputeStep[];
}
