// The EPS scheduler's cost model: measured times of the ops a MoE layer runs, on this machine, for
// this model's shapes, and the predictions made from them. It is plain JSON (cached on disk per key by
// costModelStore.ts), so a plan can be explained and reproduced from the file alone. profiler.ts measures it.
//
// Shapes of the predictions:
//   expert_matmul  overhead + sum over non-empty segments of curve(rows of the segment), one curve
//                  per kernel and (N, K), interpolated log-log between measured row counts; grouped and
//                  dense always, grouped_sm90 where the device ran it (tableKernels)
//   all-to-all     latency + bytes / bandwidth, fitted per world size to measured points
//   small ops      fixed + per-row cost (router and unpermute per token, permute per (token, slot)
//                  row, swiglu per row at the measured width)
import type { BackendKind, DType } from '../../native/addonTypes';
import { EXPERT_KERNEL_FALLBACK, EXPERT_KERNELS, type ExpertKernel } from '../../native/ops';

/**
 * The format and the way of measuring. Part of the file name: a model measured by an older version is
 * not read (version 1 timed single runs and underestimated the GEMMs, see profiler.ts OpTimer;
 * version 2 had no host sync; version 3 had no grouped_sm90 curves).
 */
export const COST_MODEL_VERSION = 4;

/** The dimensions of a MoE layer that its costs depend on. */
export interface MoeLayerDims {
  hidden: number;
  expertIntermediate: number;
  /** 0 when the model has no shared expert. */
  sharedIntermediate: number;
  numExperts: number;
  topK: number;
}

/** What a cost model was measured on and for; a model answers only for its own key. */
export interface CostModelKey extends MoeLayerDims {
  /** The device name the backend reports, e.g. "NVIDIA H200" or "cpu (2 threads)". */
  device: string;
  backend: BackendKind;
  /** Activation (and expert weight) dtype of the layer. */
  dtype: DType;
  /** Library versions (the addon's versions(): cuda, cublas, nccl, napi). */
  versions: Record<string, string>;
  /** World sizes with a measured all-to-all curve. */
  worlds: number[];
}

export interface CostPoint {
  rows: number;
  ms: number;
}

/** Time of expert_matmul with one kernel: overheadMs + sum over non-empty segments of the curve. */
export interface KernelCurve {
  /** Time of a call whose segments are all empty (the op's fixed cost). */
  overheadMs: number;
  /** Milliseconds per non-empty segment by its row count, ascending rows >= 1, ms > 0. */
  points: CostPoint[];
}

/** expert_matmul out[R,N] = a[R,K] @ w[e,N,K]^T, a curve per kernel measured, for one (N, K). */
export interface GemmTable {
  n: number;
  k: number;
  /** Segments per measured launch (the local expert count, fewer where rows x segments would not fit). */
  segments: number;
  grouped: KernelCurve;
  dense: KernelCurve;
  /**
   * The Hopper kernel, where the device ran it for this shape (ops.expertKernelsOf, ops.groupedSm90Takes);
   * absent elsewhere: the planner then never chooses it.
   */
  grouped_sm90?: KernelCurve;
}

/** The kernels a table has curves for, in the op table's order (grouped and dense always). */
export function tableKernels(table: GemmTable): ExpertKernel[] {
  return EXPERT_KERNELS.filter((k) => table[k] !== undefined);
}

/**
 * A kernel's curve. A kernel the table lacks runs as its fallback (EXPERT_KERNEL_FALLBACK: grouped_sm90
 * as grouped), so a schedule that fixes it is predicted by that curve.
 */
export function kernelCurve(table: GemmTable, kernel: ExpertKernel): KernelCurve {
  let k: ExpertKernel | undefined = kernel;
  while (k !== undefined) {
    const curve = table[k];
    if (curve) return curve;
    k = EXPERT_KERNEL_FALLBACK[k];
  }
  throw new CostModelError('EPS_COST_MODEL_INVALID', `the expert_matmul table for N=${table.n}, K=${table.k} has no ${kernel} curve`);
}

export interface LinearCost {
  fixedMs: number;
  msPerRow: number;
}

export interface SmallOpCosts {
  /** Router logits matmul + softmax/top-k, per token. */
  router: LinearCost;
  /** moe_permute, per (token, slot) row. */
  permute: LinearCost;
  /** swiglu, per row of `width` outputs (scaled for other widths). */
  swiglu: LinearCost & { width: number };
  /** moe_unpermute, per token. */
  unpermute: LinearCost;
  /**
   * The layer's host sync: from the GPU reaching the counts' read until the host can enqueue again,
   * every rank's counts gathered (host clock). The GPU idles through it unless work was queued before.
   */
  hostSyncMs: number;
}

export interface AllToAllPoint {
  /** Bytes each rank sends to other ranks (its own share stays local). */
  bytes: number;
  ms: number;
}

export interface AllToAllCurve {
  world: number;
  latencyMs: number;
  bytesPerMs: number;
  points: AllToAllPoint[];
}

export interface CostModel {
  version: typeof COST_MODEL_VERSION;
  key: CostModelKey;
  /** ISO time of the measurement. */
  measuredAt: string;
  gemm: GemmTable[];
  allToAll: AllToAllCurve[];
  smallOps: SmallOpCosts;
}

export type CostModelErrorCode = 'EPS_COST_MODEL_INVALID' | 'EPS_COST_MODEL_NO_SHAPE' | 'EPS_COST_MODEL_NO_WORLD';

export class CostModelError extends Error {
  constructor(
    readonly code: CostModelErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'CostModelError';
  }
}

/**
 * ms at `rows` on a log-log piecewise-linear curve through the points. Below the first point the
 * first point's time (a launch costs at least that); above the last, time grows in proportion to rows
 * (the compute-bound regime).
 */
export function interpolateLogLog(points: readonly CostPoint[], rows: number): number {
  if (points.length === 0) throw new CostModelError('EPS_COST_MODEL_INVALID', 'a cost curve has no points');
  const first = points[0];
  if (rows <= first.rows) return first.ms;
  const last = points[points.length - 1];
  if (rows >= last.rows) return (last.ms * rows) / last.rows;
  // Binary search for the segment [lo, lo + 1] holding rows.
  let lo = 0;
  let hi = points.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (points[mid].rows <= rows) lo = mid;
    else hi = mid;
  }
  const a = points[lo];
  const b = points[hi];
  const t = Math.log(rows / a.rows) / Math.log(b.rows / a.rows);
  return Math.exp(Math.log(a.ms) + t * Math.log(b.ms / a.ms));
}

export function gemmTable(model: CostModel, n: number, k: number): GemmTable {
  const table = model.gemm.find((g) => g.n === n && g.k === k);
  if (!table) {
    const have = model.gemm.map((g) => `(${g.n}, ${g.k})`).join(', ');
    throw new CostModelError('EPS_COST_MODEL_NO_SHAPE', `the cost model has no expert_matmul table for N=${n}, K=${k} (it has ${have})`);
  }
  return table;
}

/** Predicted ms of one expert_matmul over segments of these row counts with weights [*, N, K]. */
export function gemmMs(model: CostModel, kernel: ExpertKernel, segmentRows: readonly number[], n: number, k: number): number {
  return curveMs(kernelCurve(gemmTable(model, n, k), kernel), segmentRows);
}

/** Predicted ms of a curve over segments; 0 when every segment is empty (the executor skips the op). */
export function curveMs(
  curve: KernelCurve,
  segmentRows: readonly number[],
  perSegment = (rows: number) => interpolateLogLog(curve.points, rows),
): number {
  let total = 0;
  let any = false;
  for (const rows of segmentRows) {
    if (rows <= 0) continue;
    any = true;
    total += perSegment(rows);
  }
  return any ? curve.overheadMs + total : 0;
}

/**
 * Predicted ms of one all-to-all in which the busiest rank sends (or receives) `bytes` to (from) the
 * other ranks. 0 in a world of one (nothing is exchanged); the latency otherwise, even for 0 bytes
 * (every rank still takes part).
 */
export function allToAllMs(model: CostModel, world: number, bytes: number): number {
  if (world <= 1) return 0;
  const curve = model.allToAll.find((c) => c.world === world);
  if (!curve) {
    const have = model.allToAll.map((c) => c.world).join(', ') || 'none';
    throw new CostModelError('EPS_COST_MODEL_NO_WORLD', `the cost model has no all-to-all curve for world ${world} (it has ${have})`);
  }
  return curve.latencyMs + bytes / curve.bytesPerMs;
}

export function linearMs(cost: LinearCost, rows: number): number {
  return rows > 0 ? cost.fixedMs + cost.msPerRow * rows : 0;
}

/** swiglu over rows of `width` outputs, from the curve measured at the expert width. */
export function swigluMs(model: CostModel, rows: number, width: number): number {
  const c = model.smallOps.swiglu;
  return rows > 0 ? c.fixedMs + (c.msPerRow * rows * width) / c.width : 0;
}

/**
 * Latency and bandwidth through the points, by least squares on relative error (so the small
 * messages, which fix the latency, count as much as the large ones, which fix the bandwidth).
 */
export function fitLatencyBandwidth(points: readonly AllToAllPoint[]): { latencyMs: number; bytesPerMs: number } {
  const usable = points.filter((p) => p.ms > 0 && p.bytes >= 0);
  if (usable.length === 0) throw new CostModelError('EPS_COST_MODEL_INVALID', 'no all-to-all points to fit');
  if (usable.length === 1) {
    const p = usable[0];
    return { latencyMs: 0, bytesPerMs: p.bytes > 0 ? p.bytes / p.ms : Number.MAX_VALUE };
  }
  // Minimise sum(((a + b x - y) / y)^2): weighted least squares with weights 1 / y^2.
  let sw = 0;
  let swx = 0;
  let swy = 0;
  let swxx = 0;
  let swxy = 0;
  for (const { bytes: x, ms: y } of usable) {
    const w = 1 / (y * y);
    sw += w;
    swx += w * x;
    swy += w * y;
    swxx += w * x * x;
    swxy += w * x * y;
  }
  const det = sw * swxx - swx * swx;
  // ms = a + b * bytes: a the latency, b the ms per byte.
  let a = det !== 0 ? (swxx * swy - swx * swxy) / det : 0;
  let b = det !== 0 ? (sw * swxy - swx * swy) / det : 0;
  if (a < 0) {
    // A negative latency is noise: refit through the origin.
    a = 0;
    b = swxy / swxx;
  }
  if (!(b > 0)) {
    // No growth with size measured (noise at small sizes): the largest point sets the bandwidth.
    const largest = usable.reduce((p, q) => (q.bytes > p.bytes ? q : p));
    a = Math.min(a, largest.ms / 2);
    if (largest.bytes === 0) return { latencyMs: a, bytesPerMs: Number.MAX_VALUE };
    b = (largest.ms - a) / largest.bytes;
  }
  return { latencyMs: a, bytesPerMs: 1 / b };
}

/** Checks the structure of a parsed cost model file; throws naming the first bad field. */
export function validateCostModel(json: unknown, where = 'cost model'): CostModel {
  const fail = (field: string, why: string): never => {
    throw new CostModelError('EPS_COST_MODEL_INVALID', `${where}: ${field} ${why}; delete it to measure again`);
  };
  const obj = (v: unknown, field: string): Record<string, unknown> =>
    typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : fail(field, 'is not an object');
  const arr = (v: unknown, field: string): unknown[] => (Array.isArray(v) ? v : fail(field, 'is not an array'));
  const num = (v: unknown, field: string, min = 0): number =>
    typeof v === 'number' && Number.isFinite(v) && v >= min ? v : fail(field, `is not a finite number >= ${min}`);
  const str = (v: unknown, field: string): string => (typeof v === 'string' ? v : fail(field, 'is not a string'));

  const m = obj(json, 'the file');
  if (m.version !== COST_MODEL_VERSION) fail('version', `is ${JSON.stringify(m.version)}, this build reads ${COST_MODEL_VERSION}`);
  const k = obj(m.key, 'key');
  const versions = obj(k.versions, 'key.versions');
  for (const [name, v] of Object.entries(versions)) str(v, `key.versions.${name}`);
  arr(k.worlds, 'key.worlds').forEach((w, i) => num(w, `key.worlds[${i}]`, 1));
  str(k.device, 'key.device');
  str(k.backend, 'key.backend');
  str(k.dtype, 'key.dtype');
  for (const f of ['hidden', 'expertIntermediate', 'sharedIntermediate', 'numExperts', 'topK']) num(k[f], `key.${f}`);
  str(m.measuredAt, 'measuredAt');

  const curve = (v: unknown, field: string): void => {
    const c = obj(v, field);
    num(c.overheadMs, `${field}.overheadMs`);
    const points = arr(c.points, `${field}.points`);
    if (points.length === 0) fail(`${field}.points`, 'is empty');
    let prev = 0;
    points.forEach((p, i) => {
      const po = obj(p, `${field}.points[${i}]`);
      const rows = num(po.rows, `${field}.points[${i}].rows`, 1);
      if (rows <= prev) fail(`${field}.points[${i}].rows`, 'is not ascending');
      prev = rows;
      if (num(po.ms, `${field}.points[${i}].ms`) <= 0) fail(`${field}.points[${i}].ms`, 'is not positive');
    });
  };
  arr(m.gemm, 'gemm').forEach((g, i) => {
    const t = obj(g, `gemm[${i}]`);
    num(t.n, `gemm[${i}].n`, 1);
    num(t.k, `gemm[${i}].k`, 1);
    num(t.segments, `gemm[${i}].segments`, 1);
    curve(t.grouped, `gemm[${i}].grouped`);
    curve(t.dense, `gemm[${i}].dense`);
    for (const kernel of EXPERT_KERNELS)
      if (kernel !== 'grouped' && kernel !== 'dense' && t[kernel] !== undefined) curve(t[kernel], `gemm[${i}].${kernel}`);
  });
  arr(m.allToAll, 'allToAll').forEach((c, i) => {
    const a = obj(c, `allToAll[${i}]`);
    num(a.world, `allToAll[${i}].world`, 1);
    num(a.latencyMs, `allToAll[${i}].latencyMs`);
    if (num(a.bytesPerMs, `allToAll[${i}].bytesPerMs`) <= 0) fail(`allToAll[${i}].bytesPerMs`, 'is not positive');
    arr(a.points, `allToAll[${i}].points`).forEach((p, j) => {
      const po = obj(p, `allToAll[${i}].points[${j}]`);
      num(po.bytes, `allToAll[${i}].points[${j}].bytes`);
      num(po.ms, `allToAll[${i}].points[${j}].ms`);
    });
  });
  const small = obj(m.smallOps, 'smallOps');
  for (const op of ['router', 'permute', 'swiglu', 'unpermute']) {
    const c = obj(small[op], `smallOps.${op}`);
    num(c.fixedMs, `smallOps.${op}.fixedMs`);
    num(c.msPerRow, `smallOps.${op}.msPerRow`);
  }
  num(obj(small.swiglu, 'smallOps.swiglu').width, 'smallOps.swiglu.width', 1);
  num(small.hostSyncMs, 'smallOps.hostSyncMs');
  return json as CostModel;
}
