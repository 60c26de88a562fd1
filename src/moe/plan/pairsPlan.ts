// The per-pair dispatch's candidates (exec/pairsDispatcher.ts runs them): one row per (token, slot)
// pair, D chunks along tokens (unions of micro-chunks) or along expert groups (unions of the layout's
// groups). A chunk's all-to-all is one per expert group it holds; the receiver's rows come in
// segments of (source rank, local expert).
import type { ExpertKernel } from '../../native/ops';
import type { RankCosts } from '../cost/pipelineModel';
import type { Candidate, PlanContext } from './candidate';
import { rankTimes, type ChunkSpan, type LayerCounts } from './layerCounts';
import { chunkPlanOf, computeOrder, kernelTime, type ChunkPlan } from './plan';
import type { PlanAxis } from '../schedule';

export function pairsCandidate(ctx: PlanContext, axis: PlanAxis, degree: number): Candidate {
  const { input, layout, layer, costs, rankBase, kernelFor } = ctx;
  const world = layout.world;
  const spans = chunkSpans(layer, axis, degree, input.microChunks, layout.groups);
  const chunks = spans.map((span) => layer.chunk(span, costs));
  const times = chunks.map((c) => Array.from({ length: world }, (_, r) => rankTimes(c.ffn, r)));
  const kernels = times.map((t) => t.map((rank): ExpertKernel => kernelFor(rank)));
  const commMs = Float64Array.from(chunks, (c) => c.commMs);
  // Permute and unpermute per chunk on the token axis; once for the layer on the expert axis (plan.ts).
  const permuteMs = (r: number, i: number): number => {
    if (!costs) return 0;
    if (axis === 'tokens') return costs.permuteMs(chunks[i].pairs[r]);
    return i === 0 ? costs.permuteMs(layer.rankPairs(r)) : 0;
  };
  const unpermuteMs = (r: number, i: number): number => {
    if (!costs) return 0;
    if (axis === 'tokens') return costs.unpermuteMs(chunks[i].pairs[r]);
    return i === degree - 1 ? costs.unpermuteMs(layer.rankPairs(r)) : 0;
  };
  const ranksWith = (kernelOf: (chunk: number, rank: number) => ExpertKernel): RankCosts[] =>
    rankBase.map((base, r) => ({
      ...base,
      permuteMs: Float64Array.from({ length: degree }, (_, i) => permuteMs(r, i)),
      unpermuteMs: Float64Array.from({ length: degree }, (_, i) => unpermuteMs(r, i)),
      ffnMs: Float64Array.from({ length: degree }, (_, i) => kernelTime(times[i][r], kernelOf(i, r))),
    }));
  const chunkPlans = (rank: number): ChunkPlan[] =>
    chunks.map((c, i) => {
      const span = spans[i];
      const exchanges = layer.rankExchanges(rank, span);
      return chunkPlanOf({
        index: i,
        span,
        microBounds: input.microBounds,
        kernel: kernels[i][rank],
        exchanges,
        sentRows: Array.from({ length: world }, (_, p) => exchanges.reduce((a, x) => a + x.sentRows[p], 0)),
        recvRows: Array.from({ length: world }, (_, p) => exchanges.reduce((a, x) => a + x.recvRows[p], 0)),
        segments: exchanges.flatMap((x) => x.segments),
        globalRows: c.globalRows,
        times: {
          permuteMs: permuteMs(rank, i),
          dispatchMs: c.commMs,
          kernelMs: times[i][rank],
          combineMs: c.commMs,
          unpermuteMs: unpermuteMs(rank, i),
        },
      });
    });
  return {
    what: { axis, degree, dispatch: 'pairs' },
    comm: { commMs },
    kernels,
    ranksWith,
    chunkPlans,
    computeOrder: (shared, overlap) => computeOrder(degree, overlap, shared),
  };
}

/** The chunks of a candidate: micro-chunk ranges of every group (tokens), or group ranges of every token (experts). */
function chunkSpans(layer: LayerCounts, axis: PlanAxis, degree: number, M: number, G: number): ChunkSpan[] {
  if (axis === 'tokens') {
    const b = layer.microBounds(degree);
    return b.slice(0, -1).map((start, i) => ({ microStart: start, microEnd: b[i + 1], groupStart: 0, groupEnd: G }));
  }
  const b = layer.groupBounds(degree);
  return b.slice(0, -1).map((start, i) => ({ microStart: 0, microEnd: M, groupStart: start, groupEnd: b[i + 1] }));
}
