// The EPS scheduler's decision for one MoE layer: a pure function of every rank's per-micro-chunk
// expert counts (gathered, so every rank holds the same numbers) and the cost model. It groups the M
// micro-chunks into D chunks, picks each chunk's expert kernel on this rank, and places the shared
// expert, by predicting the cluster's timeline (pipelineModel.ts) for every alternative.
//
// Ranks must agree on D and on the chunk boundaries (their all-to-alls pair up), so everything that
// decides them is computed from the gathered counts and the model alone, identically on every rank;
// this rank's own token bounds only name the token ranges of its chunks. The kernel is per rank: the
// one the model predicts faster for the rows this rank's experts receive.
import type { ExpertKernel } from '../native/ops';
import { type CostModel, gemmMs, gemmTable, interpolateLogLog, linearMs, swigluMs, allToAllMs, type KernelCurve } from './costModel';
import {
  type ChunkPlan,
  type MoePlan,
  type PlanCandidate,
  type PredictedOp,
  type SharedPlacement,
  commOrder,
  computeOrder,
  explainPlan,
} from './plan';
import { simulatePipeline, type RankCosts } from './pipelineModel';
import type { ExpertRange } from './placement';
import { formatMoeSchedule, type MoeSchedule } from './schedule';

export interface MoePlanInput {
  /**
   * Every rank's moe_count result in rank order, each flattened [M][E] (row m = micro-chunk m): what
   * the allGather of the counts returns.
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
  hidden: number;
  expertIntermediate: number;
  /** Bytes per activation element (2 for bf16). */
  dtypeBytes: number;
  /** 0 when the model has no shared expert. */
  sharedIntermediate: number;
}

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
 * not exact (median prediction error 23% on H200s, BENCHMARKS.md), and a deeper pipeline that is
 * predicted only a little faster measured slower (Mixtral-8x7B at 4 ranks: D=8 took 2.3x the time of D=1).
 */
export const DEGREE_TOLERANCE = 0.15;

export function planMoeLayer(input: MoePlanInput, model: CostModel | undefined, schedule: MoeSchedule): MoePlan {
  validate(input, schedule);
  const needsModel = schedule.kind === 'auto' || (schedule.kind === 'fixed' && !schedule.kernel);
  if (!model && needsModel) throw new NoCostModelError(schedule);

  const world = input.ranges.length;
  const M = input.microChunks;
  const layer = new LayerCounts(input);
  const costs = model ? layerCosts(model, input, world) : undefined;
  const overlap = schedule.kind !== 'baseline';
  const fixedKernel: ExpertKernel | undefined =
    schedule.kind === 'baseline' ? 'dense' : schedule.kind === 'fixed' ? schedule.kernel : undefined;

  let degrees: number[];
  if (schedule.kind === 'fixed') degrees = [schedule.degree];
  else if (schedule.kind === 'baseline' || world === 1) degrees = [1];
  else degrees = autoDegrees(M);

  const placements: SharedPlacement[] =
    input.sharedIntermediate === 0 ? ['none'] : overlap ? ['overlap-dispatch', 'overlap-combine'] : ['serial'];

  const rankBase = Array.from({ length: world }, (_, r) => ({
    routerMs: costs ? costs.routerMs(layer.rankPairs(r)) : 0,
    sharedMs: costs && input.sharedIntermediate > 0 ? costs.sharedMs(layer.rankPairs(r)) : 0,
  }));

  const evaluated = degrees.map((degree) => {
    const bounds = layer.chunkBounds(degree);
    const chunks = bounds.slice(0, -1).map((start, i) => layer.chunk(start, bounds[i + 1], costs));
    const kernels = chunks.map((c) => Array.from(c.ffnGrouped, (g, r): ExpertKernel => fixedKernel ?? pickKernel(g, c.ffnDense[r])));
    const commMs = new Float64Array(degree);
    chunks.forEach((c, i) => (commMs[i] = c.commMs));
    const ranksWith = (kernelOf: (chunk: number, rank: number) => ExpertKernel): RankCosts[] =>
      rankBase.map((base, r) => {
        const permuteMs = new Float64Array(degree);
        const unpermuteMs = new Float64Array(degree);
        const ffnMs = new Float64Array(degree);
        for (let i = 0; i < degree; i++) {
          const c = chunks[i];
          permuteMs[i] = c.permuteMs[r];
          unpermuteMs[i] = c.unpermuteMs[r];
          ffnMs[i] = kernelOf(i, r) === 'grouped' ? c.ffnGrouped[r] : c.ffnDense[r];
        }
        return { ...base, permuteMs, unpermuteMs, ffnMs };
      });
    const simulate = (ranks: RankCosts[], shared: SharedPlacement, timelineRank?: number, timeline?: PredictedOp[]) =>
      simulatePipeline(
        { overlap, commOrder: commOrder(degree, overlap), computeOrder: computeOrder(degree, overlap, shared), commMs, ranks },
        timelineRank,
        timeline,
      ).layerMs;

    const chosenRanks = ranksWith((i, r) => kernels[i][r]);
    let best = { shared: placements[0], ms: Infinity };
    for (const shared of placements) {
      const ms = simulate(chosenRanks, shared);
      if (ms < best.ms) best = { shared, ms };
    }
    const candidate: PlanCandidate = { degree, ms: best.ms, shared: best.shared, commMs: 2 * commMs.reduce((a, b) => a + b, 0) };
    return {
      candidate,
      bounds,
      chunks,
      kernels,
      timeline: (t: PredictedOp[]) => simulate(chosenRanks, best.shared, input.rank, t),
      // For explain() only: what one kernel everywhere would have given.
      alternatives: () => ({
        allGroupedMs: simulate(
          ranksWith(() => 'grouped'),
          best.shared,
        ),
        allDenseMs: simulate(
          ranksWith(() => 'dense'),
          best.shared,
        ),
      }),
    };
  });

  const bestMs = Math.min(...evaluated.map((e) => e.candidate.ms));
  // Ascending D: the first within tolerance of the best is the smallest such D.
  const chosen = evaluated.find((e) => e.candidate.ms <= bestMs * (1 + DEGREE_TOLERANCE)) ?? evaluated[0];
  const timeline: PredictedOp[] = [];
  if (costs) chosen.timeline(timeline);

  const degree = chosen.candidate.degree;
  const rank = input.rank;
  const chunks: ChunkPlan[] = chosen.chunks.map((c, i) => {
    const rows = layer.rankChunkRows(rank, chosen.bounds[i], chosen.bounds[i + 1]);
    const kernel = chosen.kernels[i][rank];
    return {
      index: i,
      microStart: chosen.bounds[i],
      microEnd: chosen.bounds[i + 1],
      tokenStart: input.microBounds[chosen.bounds[i]],
      tokenEnd: input.microBounds[chosen.bounds[i + 1]],
      kernel,
      ...rows,
      globalRows: c.globalRows,
      predicted: {
        permuteMs: c.permuteMs[rank],
        dispatchMs: c.commMs,
        ffnMs: kernel === 'grouped' ? c.ffnGrouped[rank] : c.ffnDense[rank],
        groupedMs: c.ffnGrouped[rank],
        denseMs: c.ffnDense[rank],
        combineMs: c.commMs,
        unpermuteMs: c.unpermuteMs[rank],
      },
    };
  });
  const shared = chosen.candidate.shared;
  const plan: MoePlan = {
    schedule,
    rank,
    world,
    microChunks: M,
    degree,
    overlap,
    chunks,
    shared,
    commOrder: commOrder(degree, overlap),
    computeOrder: computeOrder(degree, overlap, shared),
    predicted: costs !== undefined,
    predictedMs: costs ? chosen.candidate.ms : 0,
    timeline,
    candidates: evaluated.map((e) => e.candidate),
    explain: () =>
      explainPlan(plan, {
        bestMs,
        tolerance: DEGREE_TOLERANCE,
        totalPairs: layer.totalPairs(),
        kernelAlternatives: (d) => evaluated.find((e) => e.candidate.degree === d)!.alternatives(),
      }),
  };
  return plan;
}

/**
 * The D that auto weighs: powers of two up to M, and M itself. Chunks of a power-of-two count split
 * evenly loaded micro-chunks evenly; the other D mostly add uneven chunks at the price of planning time
 * (the plan is on the critical path of every layer).
 */
export function autoDegrees(microChunks: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= microChunks; d *= 2) out.push(d);
  if (out[out.length - 1] !== microChunks) out.push(microChunks);
  return out;
}

/** The faster kernel; grouped on a tie (one launch). */
/**
 * The grouped kernel must be predicted this much faster to be chosen: its cost model is the less
 * reliable of the two (cuBLAS's grouped GEMM slows with the group count, which the per-segment curve
 * does not capture), and where the two tie it measured up to 2.5x slower (Mixtral-8x7B, BENCHMARKS.md).
 */
export const GROUPED_MARGIN = 0.8;

function pickKernel(groupedMs: number, denseMs: number): ExpertKernel {
  return groupedMs < GROUPED_MARGIN * denseMs ? 'grouped' : 'dense';
}

/** What one chunk costs on every rank, and its all-to-all. */
interface ChunkCosts {
  commMs: number;
  globalRows: number;
  permuteMs: Float64Array;
  unpermuteMs: Float64Array;
  ffnGrouped: Float64Array;
  ffnDense: Float64Array;
}

/** The gathered counts as prefix sums over micro-chunks, so any chunk's rows cost O(E) per rank. */
class LayerCounts {
  private readonly prefix: Float64Array[];
  private readonly world: number;
  private readonly chunkCache = new Map<number, ChunkCosts>();
  private loadPrefix?: Float64Array;

  constructor(private readonly input: MoePlanInput) {
    const { microChunks: M, numExperts: E } = input;
    this.world = input.ranges.length;
    this.prefix = input.counts.map((c) => {
      const p = new Float64Array((M + 1) * E);
      for (let m = 0; m < M; m++) {
        for (let e = 0; e < E; e++) p[(m + 1) * E + e] = p[m * E + e] + c[m * E + e];
      }
      return p;
    });
  }

  /** Rows rank `src` routes to expert e in micro-chunks [start, end). */
  rows(src: number, e: number, start: number, end: number): number {
    const E = this.input.numExperts;
    return this.prefix[src][end * E + e] - this.prefix[src][start * E + e];
  }

  rankPairs(rank: number): number {
    let n = 0;
    for (let e = 0; e < this.input.numExperts; e++) n += this.rows(rank, e, 0, this.input.microChunks);
    return n;
  }

  totalPairs(): number {
    let n = 0;
    for (let r = 0; r < this.world; r++) n += this.rankPairs(r);
    return n;
  }

  /**
   * Micro-chunk boundaries of D chunks (D + 1 values from 0 to M), cutting the cluster's rows as evenly
   * as micro-chunk granularity allows; equal micro-chunk counts when there are no rows at all.
   */
  chunkBounds(degree: number): number[] {
    const M = this.input.microChunks;
    const load = this.microLoadPrefix();
    const total = load[M];
    const bounds = [0];
    for (let j = 1; j < degree; j++) {
      const lo = bounds[j - 1] + 1; // every chunk holds at least one micro-chunk
      const hi = M - (degree - j); // and leaves one for each chunk after it
      let b = lo;
      if (total > 0) {
        const target = (total * j) / degree;
        while (b < hi && load[b] < target) b++;
        if (b > lo && target - load[b - 1] <= load[b] - target) b--; // the closer side; earlier on a tie
      } else {
        b = Math.max(lo, Math.min(hi, Math.round((M * j) / degree)));
      }
      bounds.push(b);
    }
    bounds.push(M);
    return bounds;
  }

  /** Cumulative rows of the whole cluster over micro-chunks (M + 1 values). */
  private microLoadPrefix(): Float64Array {
    if (this.loadPrefix) return this.loadPrefix;
    const { microChunks: M, numExperts: E } = this.input;
    const load = new Float64Array(M + 1);
    for (let m = 0; m < M; m++) {
      let s = 0;
      for (const p of this.prefix) for (let e = 0; e < E; e++) s += p[(m + 1) * E + e] - p[m * E + e];
      load[m + 1] = load[m] + s;
    }
    this.loadPrefix = load;
    return load;
  }

  /** Rows of this rank's chunk [start, end): to and from each peer, and per (source rank, local expert). */
  rankChunkRows(rank: number, start: number, end: number): { sentRows: number[]; recvRows: number[]; segments: number[] } {
    const { ranges } = this.input;
    const own = ranges[rank];
    const sentRows = ranges.map(({ first, count }) => {
      let s = 0;
      for (let e = first; e < first + count; e++) s += this.rows(rank, e, start, end);
      return s;
    });
    const segments: number[] = [];
    const recvRows = ranges.map((_, src) => {
      let s = 0;
      for (let e = own.first; e < own.first + own.count; e++) {
        const n = this.rows(src, e, start, end);
        segments.push(n);
        s += n;
      }
      return s;
    });
    return { sentRows, recvRows, segments };
  }

  chunk(start: number, end: number, costs: LayerCosts | undefined): ChunkCosts {
    const key = start * (this.input.microChunks + 1) + end;
    const cached = this.chunkCache.get(key);
    if (cached) return cached;
    const W = this.world;
    const { ranges } = this.input;
    const E = this.input.numExperts;
    // rows[src * E + e]: rows src routes to expert e in the chunk.
    const rows = new Float64Array(W * E);
    for (let src = 0; src < W; src++) {
      const p = this.prefix[src];
      for (let e = 0; e < E; e++) rows[src * E + e] = p[end * E + e] - p[start * E + e];
    }
    // sent[src * W + dst]: rows src sends dst.
    const sent = new Float64Array(W * W);
    for (let src = 0; src < W; src++) {
      for (let dst = 0; dst < W; dst++) {
        const { first, count } = ranges[dst];
        let s = 0;
        for (let e = first; e < first + count; e++) s += rows[src * E + e];
        sent[src * W + dst] = s;
      }
    }
    let globalRows = 0;
    let busiestRows = 0; // rows the busiest rank sends to or receives from other ranks
    const pairs = new Float64Array(W);
    for (let r = 0; r < W; r++) {
      let out = 0;
      let inn = 0;
      for (let p = 0; p < W; p++) {
        pairs[r] += sent[r * W + p];
        if (p === r) continue;
        out += sent[r * W + p];
        inn += sent[p * W + r];
      }
      globalRows += pairs[r];
      busiestRows = Math.max(busiestRows, out, inn);
    }
    const result: ChunkCosts = {
      commMs: costs ? costs.allToAllMs(busiestRows) : 0,
      globalRows,
      permuteMs: Float64Array.from(pairs, (n) => (costs ? costs.permuteMs(n) : 0)),
      unpermuteMs: Float64Array.from(pairs, (n) => (costs ? costs.unpermuteMs(n) : 0)),
      ffnGrouped: new Float64Array(W),
      ffnDense: new Float64Array(W),
    };
    if (costs) {
      for (let r = 0; r < W; r++) {
        const own = ranges[r];
        const segments = new Float64Array(W * own.count);
        for (let src = 0; src < W; src++) for (let j = 0; j < own.count; j++) segments[src * own.count + j] = rows[src * E + own.first + j];
        result.ffnGrouped[r] = costs.ffnMs('grouped', segments);
        result.ffnDense[r] = costs.ffnMs('dense', segments);
      }
    }
    this.chunkCache.set(key, result);
    return result;
  }
}

/**
 * The LayerCosts of a model and shape, kept while the model lives: every layer of a forward plans
 * with the same ones, and their per-segment caches fill once. (A model is never changed once loaded.)
 */
const costsByModel = new WeakMap<CostModel, Map<string, LayerCosts>>();

function layerCosts(model: CostModel, input: MoePlanInput, world: number): LayerCosts {
  let byShape = costsByModel.get(model);
  if (!byShape) {
    byShape = new Map();
    costsByModel.set(model, byShape);
  }
  const key = [input.hidden, input.expertIntermediate, input.sharedIntermediate, input.topK, input.dtypeBytes, world].join('/');
  let costs = byShape.get(key);
  if (!costs) {
    const { hidden, expertIntermediate, sharedIntermediate, topK, dtypeBytes } = input;
    costs = new LayerCosts(model, { hidden, expertIntermediate, sharedIntermediate, topK, dtypeBytes }, world);
    byShape.set(key, costs);
  }
  return costs;
}

/** Per-segment costs cached by (integer) row count: the search asks for the same small counts many times. */
const CACHED_ROWS = 4096;

type LayerShape = Pick<MoePlanInput, 'hidden' | 'expertIntermediate' | 'sharedIntermediate' | 'topK' | 'dtypeBytes'>;

/** The cost model applied to this layer's shapes. */
class LayerCosts {
  private readonly gateUp: { grouped: KernelCurve; dense: KernelCurve };
  private readonly down: { grouped: KernelCurve; dense: KernelCurve };
  private readonly segmentCache = {
    grouped: new Float64Array(CACHED_ROWS + 1).fill(NaN),
    dense: new Float64Array(CACHED_ROWS + 1).fill(NaN),
  };
  private readonly rowBytes: number;

  private readonly input: LayerShape;

  constructor(
    private readonly model: CostModel,
    shape: LayerShape,
    private readonly world: number,
  ) {
    // Only the shape: the costs outlive this layer's counts (see costsByModel).
    const input = { ...shape };
    this.input = input;
    const { hidden: H, expertIntermediate: I } = input;
    this.gateUp = gemmTable(model, 2 * I, H);
    this.down = gemmTable(model, H, I);
    if (input.sharedIntermediate > 0) {
      gemmTable(model, 2 * input.sharedIntermediate, H);
      gemmTable(model, H, input.sharedIntermediate);
    }
    allToAllMs(model, world, 0); // fails now, naming the world, if the model lacks it
    this.rowBytes = H * input.dtypeBytes;
  }

  /** gate_up expert_matmul, swiglu, down expert_matmul over the segments; 0 with no rows (skipped). */
  ffnMs(kernel: ExpertKernel, segments: ArrayLike<number>): number {
    const cache = this.segmentCache[kernel];
    const gateUp = this.gateUp[kernel].points;
    const down = this.down[kernel].points;
    let rows = 0;
    let gemms = 0;
    for (let i = 0; i < segments.length; i++) {
      const n = segments[i];
      if (n <= 0) continue;
      rows += n;
      // Both GEMMs of one non-empty segment; their fixed overheads are added once below.
      let ms = n <= CACHED_ROWS ? cache[n] : NaN;
      if (Number.isNaN(ms)) {
        ms = interpolateLogLog(gateUp, n) + interpolateLogLog(down, n);
        if (n <= CACHED_ROWS) cache[n] = ms;
      }
      gemms += ms;
    }
    if (rows === 0) return 0;
    const overhead = this.gateUp[kernel].overheadMs + this.down[kernel].overheadMs;
    return overhead + gemms + swigluMs(this.model, rows, this.input.expertIntermediate);
  }

  allToAllMs(busiestRows: number): number {
    return allToAllMs(this.model, this.world, busiestRows * this.rowBytes);
  }

  routerMs(pairs: number): number {
    return linearMs(this.model.smallOps.router, pairs / this.input.topK);
  }

  permuteMs(pairs: number): number {
    return linearMs(this.model.smallOps.permute, pairs);
  }

  unpermuteMs(pairs: number): number {
    return linearMs(this.model.smallOps.unpermute, pairs / this.input.topK);
  }

  /**
   * The shared expert over the rank's tokens: two dense GEMMs and a swiglu; its gate matmul and
   * sigmoid_gate_add read and write [T, H] as unpermute does, so they are costed as one unpermute.
   */
  sharedMs(pairs: number): number {
    const tokens = pairs / this.input.topK;
    if (tokens === 0) return 0;
    const { hidden: H, sharedIntermediate: Is } = this.input;
    return (
      gemmMs(this.model, 'dense', [tokens], 2 * Is, H) +
      swigluMs(this.model, tokens, Is) +
      gemmMs(this.model, 'dense', [tokens], H, Is) +
      linearMs(this.model.smallOps.unpermute, tokens)
    );
  }
}

function validate(input: MoePlanInput, schedule: MoeSchedule): void {
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
  if (schedule.kind === 'fixed' && schedule.degree > M) {
    throw new PlanInputError(
      `fixed:${schedule.degree} needs at least ${schedule.degree} micro-chunks, the counts have ${M} (count microChunkCount(schedule) of them)`,
    );
  }
}
