// Planner test helpers: synthetic cost models whose predictions can be worked out by hand (GEMM
// curves proportional to rows, exact under log-log interpolation; all-to-all = latency + bytes /
// bandwidth; small ops free unless a test says otherwise), counts, and plan inputs.
import { COST_MODEL_VERSION, type CostModel, type GemmTable } from '../../src/moe/cost/costModel';
import { type MoePlan } from '../../src/moe/plan/plan';
import { type ExpertRange, expertRanges } from '../../src/moe/placement';
import { parseMoeSchedule } from '../../src/moe/schedule';
import { type MoePlanInput, planMoeLayer } from '../../src/moe/plan/planner';
import { mulberry32 } from '../../src/util/mulberry32';

export const H = 64;
export const I = 32;
export const BYTES = 2; // bf16

/** ms = perRow x rows for every segment, exactly, at any row count. */
export function proportional(perRow: number, overheadMs = 0) {
  return {
    overheadMs,
    points: [
      { rows: 1, ms: perRow },
      { rows: 1 << 20, ms: perRow * (1 << 20) },
    ],
  };
}

/** A dense curve with cuBLAS's flat start: 0.1 ms per GEMM up to 64 rows, then 0.1 / 64 ms per row. */
export const flatStartDense = {
  overheadMs: 0,
  points: [
    { rows: 1, ms: 0.1 },
    { rows: 64, ms: 0.1 },
    { rows: 1 << 20, ms: (0.1 * (1 << 20)) / 64 },
  ],
};

export interface Synthetic {
  world: number;
  /** ms per row of one expert_matmul (each of the two), per kernel. */
  groupedPerRow?: number;
  densePerRow?: number;
  groupedOverhead?: number;
  denseOverhead?: number;
  latencyMs?: number;
  bytesPerMs?: number;
  sharedIntermediate?: number;
  /** ms per row of each shared-expert GEMM. */
  sharedPerRow?: number;
  /** Override the routed tables. */
  grouped?: GemmTable['grouped'];
  dense?: GemmTable['dense'];
  /** The Hopper kernel's routed curve (absent: the model has none, as one measured off Hopper). */
  sm90?: GemmTable['grouped'];
}

export function syntheticModel(o: Synthetic): CostModel {
  const table = (n: number, k: number): GemmTable => ({
    n,
    k,
    segments: 4,
    grouped: o.grouped ?? proportional(o.groupedPerRow ?? 0.001, o.groupedOverhead ?? 0),
    dense: o.dense ?? proportional(o.densePerRow ?? 0.002, o.denseOverhead ?? 0),
    ...(o.sm90 ? { grouped_sm90: o.sm90 } : {}),
  });
  const Is = o.sharedIntermediate ?? 0;
  const gemm = [table(2 * I, H), table(H, I)];
  if (Is > 0) {
    const shared = (n: number, k: number): GemmTable => ({
      n,
      k,
      segments: 1,
      // Positive even by default: a log-log curve through 0 ms gives NaN (real models hold ms > 0).
      grouped: proportional(o.sharedPerRow ?? 1e-9),
      dense: proportional(o.sharedPerRow ?? 1e-9),
    });
    gemm.push(shared(2 * Is, H), shared(H, Is));
  }
  const free = { fixedMs: 0, msPerRow: 0 };
  return {
    version: COST_MODEL_VERSION,
    key: {
      device: 'synthetic',
      backend: 'cpu',
      dtype: 'bf16',
      hidden: H,
      expertIntermediate: I,
      sharedIntermediate: Is,
      numExperts: 0,
      topK: 2,
      versions: {},
      worlds: [o.world],
    },
    measuredAt: '2025-01-01T00:00:00.000Z',
    gemm,
    allToAll: o.world > 1 ? [{ world: o.world, latencyMs: o.latencyMs ?? 0, bytesPerMs: o.bytesPerMs ?? 1e30, points: [] }] : [],
    smallOps: { router: free, permute: free, swiglu: { ...free, width: I }, unpermute: free, hostSyncMs: 0 },
  };
}

/** counts[r][m][e] -> the flattened [M][E] arrays of every rank (what allGather returns). */
export function flatten(counts: number[][][]): Int32Array[] {
  return counts.map((rank) => Int32Array.from(rank.flat()));
}

/** Token bounds of M micro-chunks over T tokens, as the executor cuts them. */
export function microBounds(T: number, M: number): number[] {
  return Array.from({ length: M + 1 }, (_, m) => Math.round((m * T) / M));
}

export function inputFor(
  counts: number[][][],
  rank: number,
  opts: { topK?: number; sharedIntermediate?: number; bounds?: number[][]; expertGroups?: number } = {},
): MoePlanInput {
  const W = counts.length;
  const M = counts[0].length;
  const E = counts[0][0].length;
  const k = opts.topK ?? 2;
  const T = counts[rank].flat().reduce((a, b) => a + b, 0) / k;
  return {
    counts: flatten(counts),
    microChunks: M,
    numExperts: E,
    topK: k,
    microBounds: opts.bounds?.[rank] ?? microBounds(T, M),
    rank,
    ranges: expertRanges(E, W),
    hidden: H,
    expertIntermediate: I,
    dtypeBytes: BYTES,
    sharedIntermediate: opts.sharedIntermediate ?? 0,
    expertGroups: opts.expertGroups,
  };
}

export function planAll(
  counts: number[][][],
  model: CostModel | undefined,
  schedule: string,
  opts: Parameters<typeof inputFor>[2] = {},
): MoePlan[] {
  return counts.map((_, r) => planMoeLayer(inputFor(counts, r, opts), model, parseMoeSchedule(schedule)));
}

/** Every rank sends `perExpert` rows to every expert in every micro-chunk. */
export function uniform(W: number, M: number, E: number, perExpert: number): number[][][] {
  return Array.from({ length: W }, () => Array.from({ length: M }, () => new Array(E).fill(perExpert)));
}

/** A seeded generator (mulberry32), so random counts are the same on every run. */
export const rng = mulberry32;

/** Each token of each micro-chunk picks k distinct experts at random; some experts are hot. */
export function randomCounts(W: number, M: number, E: number, k: number, tokensPerRank: number[], seed: number): number[][][] {
  const next = rng(seed);
  return tokensPerRank.map((T) => {
    const bounds = microBounds(T, M);
    return Array.from({ length: M }, (_, m) => {
      const c = new Array(E).fill(0);
      for (let t = bounds[m]; t < bounds[m + 1]; t++) {
        const picked = new Set<number>();
        while (picked.size < k) picked.add(next() < 0.3 ? Math.floor(next() * 2) : Math.floor(next() * E));
        for (const e of picked) c[e]++;
      }
      return c;
    });
  });
}

/** Rows rank `src` routes to experts [first, first + count) over micro-chunks [a, b). */
export function rowsTo(counts: number[][][], src: number, range: ExpertRange, a: number, b: number): number {
  let s = 0;
  for (let m = a; m < b; m++) for (let e = range.first; e < range.first + range.count; e++) s += counts[src][m][e];
  return s;
}
