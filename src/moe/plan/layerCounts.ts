// The gathered counts of one MoE layer seen as the scheduler needs them: rows of any chunk (a range of
// micro-chunks times a range of expert groups) to and from any rank, per all-to-all and per expert
// segment, and what the chunk costs on every rank. Counts are per VIRTUAL expert (placement.ts): the
// router numbers experts that way, so moe_count counts them that way.
import type { ExpertKernel } from '../../native/ops';
import type { ChunkExchange, KernelTimes } from './plan';
import type { LayerCosts } from '../cost/layerCosts';
import type { ExpertLayout } from '../placement';
import { sum } from '../../util/arrays';

/** A chunk: micro-chunks [microStart, microEnd) times expert groups [groupStart, groupEnd). */
export interface ChunkSpan {
  microStart: number;
  microEnd: number;
  groupStart: number;
  groupEnd: number;
}

/** What one chunk costs on every rank, and its all-to-alls. */
export interface ChunkCosts {
  /** One all-to-all pass of the chunk (dispatch or combine: the same rows): its exchanges one after the other. */
  commMs: number;
  globalRows: number;
  /** (token, slot) pairs of each rank's tokens in the chunk's micro-chunks, every group (what a token-axis permute sorts). */
  pairs: Float64Array;
  /** Every rank's expert FFN time with each kernel the cost model has (LayerCosts.kernels). */
  ffn: KernelArrays;
}

/** Per rank values of each kernel weighed: grouped and dense always, grouped_sm90 where the model has it. */
export type KernelArrays = { grouped: Float64Array; dense: Float64Array } & { [K in ExpertKernel]?: Float64Array };

/** Zeroed arrays of `world` ranks for these kernels (grouped and dense whatever the list). */
export function kernelArrays(kernels: readonly ExpertKernel[] | undefined, world: number): KernelArrays {
  const out: KernelArrays = { grouped: new Float64Array(world), dense: new Float64Array(world) };
  for (const k of kernels ?? []) out[k] ??= new Float64Array(world);
  return out;
}

/** Rank r's entry of each kernel's array. */
export function rankTimes(arrays: KernelArrays, r: number): KernelTimes {
  const times: KernelTimes = { grouped: arrays.grouped[r], dense: arrays.dense[r] };
  for (const k of Object.keys(arrays) as ExpertKernel[]) times[k] = arrays[k]![r];
  return times;
}

export interface CountsInput {
  /** Every rank's moe_count result in rank order, each flattened [M][E] (row m = micro-chunk m). */
  counts: readonly ArrayLike<number>[];
  microChunks: number;
  numExperts: number;
  topK: number;
}

/** The gathered counts as prefix sums over micro-chunks, so any chunk's rows cost O(E) per rank. */
export class LayerCounts {
  private readonly prefix: Float64Array[];
  private readonly world: number;
  private readonly chunkCache = new Map<string, ChunkCosts>();
  private microLoad?: Float64Array;
  private groupLoad?: Float64Array;

  constructor(
    private readonly input: CountsInput,
    private readonly layout: ExpertLayout,
  ) {
    const { microChunks: M, numExperts: E } = input;
    this.world = layout.world;
    this.prefix = input.counts.map((c) => {
      const p = new Float64Array((M + 1) * E);
      for (let m = 0; m < M; m++) {
        for (let e = 0; e < E; e++) p[(m + 1) * E + e] = p[m * E + e] + c[m * E + e];
      }
      return p;
    });
  }

  /** Rows rank `src` routes to virtual expert v in micro-chunks [start, end). */
  rows(src: number, v: number, start: number, end: number): number {
    const E = this.input.numExperts;
    return this.prefix[src][end * E + v] - this.prefix[src][start * E + v];
  }

  /** Rows rank `src` routes to virtual experts [first, first + count) in micro-chunks [start, end). */
  private rowsTo(src: number, first: number, count: number, start: number, end: number): number {
    let s = 0;
    for (let v = first; v < first + count; v++) s += this.rows(src, v, start, end);
    return s;
  }

  /** Rows every rank routes to virtual expert v, all micro-chunks. */
  expertRows(v: number): number {
    let s = 0;
    for (let r = 0; r < this.world; r++) s += this.rows(r, v, 0, this.input.microChunks);
    return s;
  }

  get topK(): number {
    return this.input.topK;
  }

  rankPairs(rank: number): number {
    return this.rowsTo(rank, 0, this.input.numExperts, 0, this.input.microChunks);
  }

  totalPairs(): number {
    let n = 0;
    for (let r = 0; r < this.world; r++) n += this.rankPairs(r);
    return n;
  }

  /** Micro-chunk boundaries of D token chunks (D + 1 values from 0 to M), cutting the cluster's rows evenly. */
  microBounds(degree: number): number[] {
    return balancedBounds(this.microPrefix(), degree);
  }

  /** The cluster's rows in each micro-chunk (M values). */
  microLoads(): number[] {
    const p = this.microPrefix();
    return Array.from({ length: p.length - 1 }, (_, m) => p[m + 1] - p[m]);
  }

  /** Cumulative rows of the cluster over micro-chunks (M + 1 values). */
  private microPrefix(): Float64Array {
    if (!this.microLoad) {
      const { microChunks: M, numExperts: E } = this.input;
      const load = new Float64Array(M + 1);
      for (let m = 0; m < M; m++) {
        let s = 0;
        for (let r = 0; r < this.world; r++) s += this.rowsTo(r, 0, E, m, m + 1);
        load[m + 1] = load[m] + s;
      }
      this.microLoad = load;
    }
    return this.microLoad;
  }

  /** Group boundaries of D expert chunks (D + 1 values from 0 to G), cutting the cluster's rows evenly. */
  groupBounds(degree: number): number[] {
    if (!this.groupLoad) {
      const G = this.layout.groups;
      const load = new Float64Array(G + 1);
      for (let g = 0; g < G; g++) {
        const { first, count } = this.layout.groupRange(g);
        let s = 0;
        for (let r = 0; r < this.world; r++) s += this.rowsTo(r, first, count, 0, this.input.microChunks);
        load[g + 1] = load[g] + s;
      }
      this.groupLoad = load;
    }
    return balancedBounds(this.groupLoad, degree);
  }

  /** This rank's all-to-alls of a chunk: one per group, with their offsets, rows and expert segments. */
  rankExchanges(rank: number, span: ChunkSpan): ChunkExchange[] {
    const { layout } = this;
    const { microStart: a, microEnd: b } = span;
    const exchanges: ChunkExchange[] = [];
    // Rows of the chunk's tokens sorted before group g (the permuted buffer is in virtual order).
    let sendOffset = this.rowsTo(rank, 0, layout.groupRange(span.groupStart).first, a, b);
    let recvOffset = 0;
    for (let g = span.groupStart; g < span.groupEnd; g++) {
      const sentRows = Array.from({ length: this.world }, (_, p) => {
        const { first, count } = layout.virtualRange(p, g);
        return this.rowsTo(rank, first, count, a, b);
      });
      const own = layout.virtualRange(rank, g);
      const segments: number[] = [];
      const recvRows = Array.from({ length: this.world }, (_, src) => {
        let s = 0;
        for (let v = own.first; v < own.first + own.count; v++) {
          const n = this.rows(src, v, a, b);
          segments.push(n);
          s += n;
        }
        return s;
      });
      const local = layout.localGroup(rank, g);
      exchanges.push({ group: g, sendOffset, sentRows, recvOffset, recvRows, localFirst: local.first, localCount: local.count, segments });
      sendOffset += sum(sentRows);
      recvOffset += sum(recvRows);
    }
    return exchanges;
  }

  /** The chunk on every rank: its all-to-all time, rows and expert FFN times (one FFN call per group). */
  chunk(span: ChunkSpan, costs: LayerCosts | undefined): ChunkCosts {
    const key = `${span.microStart}/${span.microEnd}/${span.groupStart}/${span.groupEnd}`;
    const cached = this.chunkCache.get(key);
    if (cached) return cached;
    const W = this.world;
    const E = this.input.numExperts;
    const { layout } = this;
    const { microStart: a, microEnd: b } = span;
    // rows[src * E + v]: rows src routes to virtual expert v in the chunk's micro-chunks.
    const rows = new Float64Array(W * E);
    const pairs = new Float64Array(W);
    for (let src = 0; src < W; src++) {
      for (let v = 0; v < E; v++) {
        rows[src * E + v] = this.rows(src, v, a, b);
        pairs[src] += rows[src * E + v];
      }
    }
    const result: ChunkCosts = { commMs: 0, globalRows: 0, pairs, ffn: kernelArrays(costs?.kernels, W) };
    const kernels = Object.keys(result.ffn) as ExpertKernel[];
    const sent = Array.from({ length: W }, () => new Float64Array(W)); // sent[src][dst]: rows src sends dst in one group's all-to-all
    for (let g = span.groupStart; g < span.groupEnd; g++) {
      for (let src = 0; src < W; src++) {
        for (let dst = 0; dst < W; dst++) {
          const { first, count } = layout.virtualRange(dst, g);
          let s = 0;
          for (let v = first; v < first + count; v++) s += rows[src * E + v];
          sent[src][dst] = s;
        }
      }
      for (const row of sent) for (const n of row) result.globalRows += n;
      const busiestRows = busiestCrossRows(sent);
      if (!costs) continue;
      result.commMs += costs.allToAllMs(busiestRows);
      for (let r = 0; r < W; r++) {
        const own = layout.virtualRange(r, g);
        const segments = new Float64Array(W * own.count);
        for (let src = 0; src < W; src++) for (let j = 0; j < own.count; j++) segments[src * own.count + j] = rows[src * E + own.first + j];
        for (const k of kernels) result.ffn[k]![r] += costs.ffnMs(k, segments);
      }
    }
    this.chunkCache.set(key, result);
    return result;
  }
}

/** rows[q][p]: rows rank q sends rank p. The most any rank sends to or receives from the others. */
export function busiestCrossRows(rows: readonly ArrayLike<number>[]): number {
  let most = 0;
  rows.forEach((_, p) => {
    let sent = 0;
    let received = 0;
    rows.forEach((from, q) => {
      if (q === p) return;
      sent += rows[p][q];
      received += from[p];
    });
    most = Math.max(most, sent, received);
  });
  return most;
}

/**
 * D + 1 boundaries from 0 to n over n units with cumulative loads `load` (n + 1 values), cutting the
 * load as evenly as unit granularity allows; equal unit counts when there is no load at all. Every
 * part holds at least one unit (D <= n).
 */
export function balancedBounds(load: Float64Array, degree: number): number[] {
  const n = load.length - 1;
  const total = load[n];
  const bounds = [0];
  for (let j = 1; j < degree; j++) {
    const lo = bounds[j - 1] + 1; // every part holds at least one unit
    const hi = n - (degree - j); // and leaves one for each part after it
    let b = lo;
    if (total > 0) {
      const target = (total * j) / degree;
      while (b < hi && load[b] < target) b++;
      if (b > lo && target - load[b - 1] <= load[b] - target) b--; // the closer side; earlier on a tie
    } else {
      b = Math.max(lo, Math.min(hi, Math.round((n * j) / degree)));
    }
    bounds.push(b);
  }
  bounds.push(n);
  return bounds;
}
