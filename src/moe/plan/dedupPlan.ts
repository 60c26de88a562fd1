// The dedup dispatch's candidates for the planner (exec/dedupDispatcher.ts runs them): D chunks of
// micro-chunks; chunk i sends every rank the distinct (token, rank) rows of its tokens, the receiver
// expands them to its experts (one segment per local expert, the sources' rows merged), runs the FFN,
// folds them back to one row each and returns them; the source sums each token's rows once every
// chunk is back. moe_rank_dispatch (all tokens) runs before the host sync in the first permute's
// place, and the slots (expert indices and weights) of the whole layer go with the first dispatch.
import type { ExpertKernel } from '../../native/ops';
import type { LayerCosts } from '../cost/layerCosts';
import type { RankCosts } from '../cost/pipelineModel';
import type { Candidate, PlanContext } from './candidate';
import { busiestCrossRows, kernelArrays, rankTimes, type ChunkSpan, type KernelArrays, type LayerCounts } from './layerCounts';
import { chunkPlanOf, kernelTime, type ChunkPlan, type ComputeStep, type SharedPlacement } from './plan';
import type { ExpertLayout } from '../placement';

/** rows[q][p]: rows rank q sends rank p from micro-chunks [a, b); microRows[q] is flattened [M][W]. */
export function dedupRows(microRows: readonly ArrayLike<number>[], W: number, a: number, b: number): number[][] {
  return microRows.map((micro) =>
    Array.from({ length: W }, (_, p) => {
      let n = 0;
      for (let m = a; m < b; m++) n += micro[m * W + p];
      return n;
    }),
  );
}

/**
 * The compute stream's order of a dedup plan: moe_rank_dispatch (permute 0) is enqueued before the host
 * sync, an early shared expert after it; the other chunks' permutes are empty (their rows were made by
 * permute 0); each chunk's FFN; the source's sum over ranks is the last chunk's unpermute.
 */
export function dedupComputeOrder(degree: number, overlap: boolean, shared: SharedPlacement): ComputeStep[] {
  const steps: ComputeStep[] = [];
  if (!overlap) {
    for (let i = 0; i < degree; i++) steps.push({ op: 'permute', chunk: i }, { op: 'ffn', chunk: i }, { op: 'unpermute', chunk: i });
    if (shared !== 'none') steps.push({ op: 'shared' });
    return steps;
  }
  steps.push({ op: 'permute', chunk: 0 });
  if (shared === 'early' || shared === 'overlap-dispatch') steps.push({ op: 'shared' });
  for (let i = 1; i < degree; i++) steps.push({ op: 'permute', chunk: i });
  for (let i = 0; i < degree; i++) steps.push({ op: 'ffn', chunk: i });
  if (shared === 'overlap-combine' || shared === 'serial') steps.push({ op: 'shared' });
  for (let i = 0; i < degree; i++) steps.push({ op: 'unpermute', chunk: i });
  return steps;
}

interface DedupChunkCosts {
  rows: number[][];
  globalRows: number;
  dispatchMs: number;
  combineMs: number;
  /** Per rank: rows per local expert of the chunk's tokens, every source together. */
  localSegments: number[][];
  /** Per rank: the receiver's permute, expert FFN and unpermute, by kernel. */
  ffn: KernelArrays;
}

/**
 * One chunk on every rank. With several chunks each pass also copies its rows into (dispatch) and out
 * of (combine) one contiguous buffer per pass: costed as a permute of the busiest rank's rows.
 */
function chunkCosts(
  layer: LayerCounts,
  layout: ExpertLayout,
  rows: number[][],
  span: ChunkSpan,
  costs: LayerCosts | undefined,
  copies: boolean,
): DedupChunkCosts {
  const W = layout.world;
  const busiest = busiestCrossRows(rows);
  const copyMs = costs && copies ? costs.permuteMs(busiest) : 0;
  const result: DedupChunkCosts = {
    rows,
    globalRows: rows.reduce((a, row) => a + row.reduce((x, y) => x + y, 0), 0),
    dispatchMs: costs ? costs.allToAllMs(busiest) + copyMs : 0,
    combineMs: costs ? costs.allToAllMs(busiest) + copyMs : 0,
    localSegments: [],
    ffn: kernelArrays(costs?.kernels, W),
  };
  const kernels = Object.keys(result.ffn) as ExpertKernel[];
  for (let r = 0; r < W; r++) {
    const { first, count } = layout.ranges[r];
    const segments = Array.from({ length: count }, (_, j) => {
      let n = 0;
      for (let src = 0; src < W; src++) n += layer.rows(src, first + j, span.microStart, span.microEnd);
      return n;
    });
    result.localSegments.push(segments);
    if (!costs) continue;
    const received = rows.reduce((a, row) => a + row[r], 0);
    const around = costs.permuteMs(segments.reduce((a, b) => a + b, 0)) + costs.unpermuteRowsMs(received);
    for (const k of kernels) result.ffn[k]![r] = around + costs.ffnMs(k, segments);
  }
  return result;
}

/** The dedup candidate of `degree` chunks (one expert group). */
export function dedupCandidate(ctx: PlanContext, degree: number): Candidate {
  const { input, layout, layer, costs, rankBase, kernelFor } = ctx;
  const W = layout.world;
  const M = input.microChunks;
  const micro = input.dedup!.microRows;
  const bounds = layer.microBounds(degree);
  const spans: ChunkSpan[] = bounds.slice(0, -1).map((a, i) => ({ microStart: a, microEnd: bounds[i + 1], groupStart: 0, groupEnd: 1 }));
  const whole = dedupRows(micro, W, 0, M);
  const chunks = spans.map((span) =>
    chunkCosts(layer, layout, dedupRows(micro, W, span.microStart, span.microEnd), span, costs, degree > 1),
  );
  if (costs) chunks[0].dispatchMs += costs.slotsMs(busiestCrossRows(whole));
  const times = chunks.map((c) => rankBase.map((_, r) => rankTimes(c.ffn, r)));
  const kernels = times.map((t) => t.map((rank) => kernelFor(rank)));
  const sourceMs = whole.map((row) => (costs ? costs.permuteMs(row.reduce((a, b) => a + b, 0)) : 0));
  const finalMs = rankBase.map((_, r) => (costs ? costs.unpermuteRowsMs(layer.rankPairs(r) / layer.topK) : 0));
  const last = degree - 1;
  const ranksWith = (kernelOf: (chunk: number, rank: number) => ExpertKernel): RankCosts[] =>
    rankBase.map((base, r) => ({
      ...base,
      permuteMs: Float64Array.from({ length: degree }, (_, i) => (i === 0 ? sourceMs[r] : 0)),
      unpermuteMs: Float64Array.from({ length: degree }, (_, i) => (i === last ? finalMs[r] : 0)),
      ffnMs: Float64Array.from(chunks, (_, i) => kernelTime(times[i][r], kernelOf(i, r))),
    }));
  const chunkPlans = (rank: number): ChunkPlan[] =>
    chunks.map((c, i) =>
      chunkPlanOf({
        index: i,
        span: spans[i],
        microBounds: input.microBounds,
        kernel: kernels[i][rank],
        exchanges: [],
        sentRows: [...c.rows[rank]],
        recvRows: c.rows.map((row) => row[rank]),
        segments: c.localSegments[rank],
        globalRows: c.globalRows,
        times: {
          permuteMs: i === 0 ? sourceMs[rank] : 0,
          dispatchMs: c.dispatchMs,
          kernelMs: times[i][rank],
          combineMs: c.combineMs,
          unpermuteMs: i === last ? finalMs[rank] : 0,
        },
      }),
    );
  return {
    what: { axis: 'tokens', degree, dispatch: 'dedup' },
    comm: { commMs: Float64Array.from(chunks, (c) => c.dispatchMs), combineMs: Float64Array.from(chunks, (c) => c.combineMs) },
    kernels,
    ranksWith,
    chunkPlans,
    computeOrder: (shared, overlap) => dedupComputeOrder(degree, overlap, shared),
  };
}
