// Measures a cost model (costModel.ts) on the loaded device: expert_matmul with each kernel the device
// runs as itself (grouped, dense; grouped_sm90 on Hopper where the shape suits it: measuredKernels) at
// rows-per-expert 1, 2, 4, ... for the layer's GEMM shapes, the all-to-all by message size over the
// Communicator, and the small ops by rows. Times come from events around batches of calls, after
// warm-up, as the median of the batches (OpTimer). With a Communicator of several ranks every rank must call
// this with the same options (the all-to-alls pair up), and every rank ends with the same model: the
// element-wise median of all ranks' measurements, so that every rank's scheduler chooses alike.
import type { Communicator } from '../../comm/communicator';
import type { DType } from '../../native/addonTypes';
import { type Device, type Stream, type Tensor, dtypeBytes } from '../../native/device';
import * as ops from '../../native/ops';
import {
  COST_MODEL_VERSION,
  type AllToAllPoint,
  type CostModel,
  type CostModelKey,
  type CostPoint,
  type GemmTable,
  type KernelCurve,
  type LinearCost,
  type MoeLayerDims,
  type SmallOpCosts,
  fitLatencyBandwidth,
} from './costModel';
import { expertRange } from '../placement';

export interface MeasureProgress {
  phase: 'gemm' | 'allToAll' | 'smallOps' | 'agree';
  /** Measurements done and planned, over all phases. */
  done: number;
  total: number;
  label: string;
}

export interface MeasureCostModelOptions extends MoeLayerDims {
  device: Device;
  /** Measures the all-to-all of its world (none in a world of one). */
  comm?: Communicator;
  dtype: DType;
  /** The addon's versions() (part of the key). */
  versions?: Record<string, string>;
  /** Default: 1, 2, 4, ... 4096 on CUDA; 1 .. 32 on the CPU (a few seconds for the tiny presets). */
  rowsPerExpert?: number[];
  /** Bytes each rank sends to the others. Default: 4 KiB .. 256 MiB on CUDA; 1 KiB .. 1 MiB on the CPU. */
  allToAllBytes?: number[];
  /** Token counts of the two small-op measurements (a line through them). */
  smallOpTokens?: [number, number];
  warmup?: number;
  reps?: number;
  /** Activation bytes one GEMM measurement may allocate; fewer segments are measured beyond it. */
  maxActivationBytes?: number;
  onProgress?: (p: MeasureProgress) => void;
  /** Clock for measuredAt (tests). */
  now?: () => Date;
}

const powersOfTwo = (from: number, to: number): number[] => {
  const out: number[] = [];
  for (let v = from; v <= to; v *= 2) out.push(v);
  return out;
};

/**
 * Activation bytes one GEMM measurement may allocate: on a GPU 4 GiB or a quarter of the free memory,
 * whichever is less (written `4 << 30` this was 0, a 32-bit shift: every point measured one segment,
 * and the grouped kernel, which needs two, never ran); 64 MiB on the CPU.
 */
export function defaultMaxActivationBytes(cuda: boolean, freeBytes: number): number {
  return cuda ? Math.min(4 * 2 ** 30, freeBytes / 4) : 64 * 2 ** 20;
}

/** The smallest positive time a curve point may hold (log-log interpolation needs ms > 0). */
const MIN_MS = 1e-6;

export async function measureCostModel(o: MeasureCostModelOptions): Promise<CostModel> {
  const cuda = o.device.backend === 'cuda';
  const world = o.comm?.world ?? 1;
  const localExperts = Math.max(1, expertRange(o.numExperts, world, 0).count);
  const rowsPerExpert = o.rowsPerExpert ?? (cuda ? powersOfTwo(1, 4096) : powersOfTwo(1, 32));
  const a2aBytes = o.allToAllBytes ?? (cuda ? powersOfTwo(4096, 256 << 20) : powersOfTwo(1024, 1 << 20));
  const [t1, t2] = o.smallOpTokens ?? (cuda ? [256, 8192] : [16, 256]);
  const warmup = o.warmup ?? (cuda ? 3 : 1);
  const reps = o.reps ?? (cuda ? 10 : 3);
  const maxActivationBytes = o.maxActivationBytes ?? defaultMaxActivationBytes(cuda, cuda ? o.device.freeBytes() : 0);
  const H = o.hidden;
  const I = o.expertIntermediate;
  const Is = o.sharedIntermediate;

  // (N, K, experts in the weight): routed gate_up and down; the shared expert's, as one segment.
  const shapes: [number, number, number][] = [
    [2 * I, H, localExperts],
    [H, I, localExperts],
  ];
  if (Is > 0) shapes.push([2 * Is, H, 1], [H, Is, 1]);

  const kernelsOf = ([n, k]: [number, number, number]) => measuredKernels(ops.expertKernelsOf(o.device), o.dtype, n, k);
  const curves = shapes.reduce((a, shape) => a + kernelsOf(shape).length, 0);
  const measureCount = curves * (rowsPerExpert.length + 1) + (world > 1 ? a2aBytes.length : 0) + 9; // 8 small-op points, the host sync
  let done = 0;
  const progress = (phase: MeasureProgress['phase'], label: string) => {
    done++;
    o.onProgress?.({ phase, done, total: measureCount, label });
  };

  const s = o.device.stream();
  const timer = new OpTimer(s, warmup, reps);
  try {
    const gemm: GemmTable[] = [];
    for (const [n, k, experts] of shapes) {
      gemm.push(
        await measureGemm(
          o.device,
          s,
          timer,
          o.dtype,
          n,
          k,
          experts,
          kernelsOf([n, k, experts]),
          rowsPerExpert,
          maxActivationBytes,
          (label) => progress('gemm', label),
        ),
      );
    }
    const allToAll = [];
    if (world > 1 && o.comm) {
      const points = await measureAllToAll(o.device, s, timer, o.comm, o.dtype, H, a2aBytes, (label) => progress('allToAll', label));
      allToAll.push({ world, ...fitLatencyBandwidth(points), points });
    }
    const smallOps = await measureSmallOps(o, s, timer, t1, t2, (label) => progress('smallOps', label));

    const key: CostModelKey = {
      device: o.device.name,
      backend: o.device.backend,
      dtype: o.dtype,
      hidden: H,
      expertIntermediate: I,
      sharedIntermediate: Is,
      numExperts: o.numExperts,
      topK: o.topK,
      versions: { ...(o.versions ?? {}) },
      worlds: [world],
    };
    const model: CostModel = {
      version: COST_MODEL_VERSION,
      key,
      measuredAt: (o.now ?? (() => new Date()))().toISOString(),
      gemm,
      allToAll,
      smallOps,
    };
    if (world > 1 && o.comm) {
      const agreed = await agreeAcrossRanks(o.comm, model);
      o.onProgress?.({ phase: 'agree', done: measureCount, total: measureCount, label: `median of ${world} ranks` });
      return agreed;
    }
    return model;
  } finally {
    await s.synchronize().catch(() => undefined);
    s.dispose();
  }
}

/**
 * Times enqueued work with events: warm-up runs, then `reps` timed runs in up to five batches, each
 * batch one pair of events around its runs and a synchronisation after it; the median of the batches'
 * per-run times, in ms. An event pair around each single run, enqueued far ahead of the device, measured
 * cuBLAS's expert GEMMs at half their time on an H200 (1,400 TFLOP/s against a 787 ceiling), which made
 * every prediction of the scheduler too fast; one pair around several runs measures what they take.
 */
class OpTimer {
  private readonly batches: number;
  private readonly perBatch: number;

  constructor(
    private readonly s: Stream,
    private readonly warmup: number,
    readonly runs: number,
  ) {
    const reps = runs;
    this.batches = Math.max(1, Math.min(reps, 5));
    this.perBatch = Math.max(1, Math.ceil(reps / this.batches));
  }

  async median(enqueue: () => void | Promise<void>): Promise<number> {
    for (let i = 0; i < this.warmup; i++) await enqueue();
    await this.s.synchronize();
    const times: number[] = [];
    for (let b = 0; b < this.batches; b++) {
      const start = this.s.record();
      for (let i = 0; i < this.perBatch; i++) await enqueue();
      const end = this.s.record();
      await this.s.synchronize();
      times.push(end.elapsedSince(start) / this.perBatch);
      start.dispose();
      end.dispose();
    }
    times.sort((x, y) => x - y);
    const mid = times.length >> 1;
    return times.length % 2 ? times[mid] : (times[mid - 1] + times[mid]) / 2;
  }
}

/**
 * The expert_matmul kernels worth a curve for weights [*, N, K] of this dtype on a device running
 * `runs` (ops.expertKernelsOf): grouped and dense always; another only where the device runs it as
 * itself for this shape (grouped_sm90: Hopper, bf16, N and K multiples of 8). Elsewhere it would run as
 * its fallback and measure that again; the planner then never offers it (its curve is absent).
 */
export function measuredKernels(runs: readonly ops.ExpertKernel[], dtype: DType, n: number, k: number): ops.ExpertKernel[] {
  return ops.EXPERT_KERNELS.filter((kernel) => {
    if (kernel === 'grouped' || kernel === 'dense') return true;
    if (!runs.includes(kernel)) return false;
    return kernel !== 'grouped_sm90' || ops.groupedSm90Takes(dtype, n, k);
  });
}

async function measureGemm(
  device: Device,
  s: Stream,
  timer: OpTimer,
  dtype: DType,
  n: number,
  k: number,
  experts: number,
  kernels: readonly ops.ExpertKernel[],
  rowsPerExpert: readonly number[],
  maxActivationBytes: number,
  progress: (label: string) => void,
): Promise<GemmTable> {
  const rowBytes = (n + k) * dtypeBytes[dtype];
  const maxRows = Math.max(...rowsPerExpert.map((r) => r * segmentsFor(r)));
  function segmentsFor(rows: number): number {
    return Math.max(1, Math.min(experts, Math.floor(maxActivationBytes / (rows * rowBytes))));
  }
  const owned: Tensor[] = [];
  const tensor = (shape: number[]) => {
    const t = device.tensor(dtype, shape);
    owned.push(t);
    return t;
  };
  try {
    const w = tensor([experts, n, k]);
    ops.fillRandom(s, w, 1, 0.02);
    const a = tensor([maxRows, k]);
    ops.fillRandom(s, a, 2, 1);
    const out = tensor([maxRows, n]);

    const curve = async (kernel: ops.ExpertKernel): Promise<KernelCurve> => {
      // The fixed cost: a call whose segments are all empty.
      const overheadMs = await timer.median(() => ops.expertMatmul(s, out.rows(0, 0), a.rows(0, 0), w, new Array(experts).fill(0), kernel));
      progress(`expert_matmul ${kernel} N=${n} K=${k} overhead`);
      const points: CostPoint[] = [];
      for (const rows of rowsPerExpert) {
        const segments = segmentsFor(rows);
        const counts = new Array(experts).fill(0).map((_, e) => (e < segments ? rows : 0));
        const R = rows * segments;
        const ms = await timer.median(() => ops.expertMatmul(s, out.rows(0, R), a.rows(0, R), w, counts, kernel));
        points.push({ rows, ms: Math.max(MIN_MS, (ms - overheadMs) / segments) });
        progress(`expert_matmul ${kernel} N=${n} K=${k} rows ${rows} x ${segments}`);
      }
      return { overheadMs, points: nonDecreasing(points) };
    };
    const table: GemmTable = { n, k, segments: experts, grouped: await curve('grouped'), dense: await curve('dense') };
    for (const kernel of kernels) if (kernel !== 'grouped' && kernel !== 'dense') table[kernel] = await curve(kernel);
    return table;
  } finally {
    await s.synchronize();
    for (const t of owned) t.dispose();
  }
}

/** More rows never take less time; a dip is noise, and would make the planner favour odd splits. */
function nonDecreasing(points: CostPoint[]): CostPoint[] {
  let max = 0;
  return points.map((p) => {
    max = Math.max(max, p.ms);
    return { rows: p.rows, ms: max };
  });
}

async function measureAllToAll(
  device: Device,
  s: Stream,
  timer: OpTimer,
  comm: Communicator,
  dtype: DType,
  hidden: number,
  bytesList: readonly number[],
  progress: (label: string) => void,
): Promise<AllToAllPoint[]> {
  const W = comm.world;
  const rowBytes = hidden * dtypeBytes[dtype];
  const points: AllToAllPoint[] = [];
  for (const bytes of bytesList) {
    // `bytes` leave each rank for the W - 1 others; each peer (this rank too) gets the same share.
    const perPeer = Math.max(1, Math.round(bytes / rowBytes / (W - 1)));
    const rows = new Array<number>(W).fill(perPeer);
    const send = device.tensor(dtype, [perPeer * W, hidden]);
    const recv = device.tensor(dtype, [perPeer * W, hidden]);
    try {
      ops.fillRandom(s, send, 3, 1);
      const ms = await timer.median(() => comm.allToAll(s, send, rows, recv, rows));
      points.push({ bytes: perPeer * (W - 1) * rowBytes, ms: Math.max(MIN_MS, ms) });
      progress(`all-to-all ${perPeer * (W - 1) * rowBytes} bytes`);
    } finally {
      await s.synchronize();
      send.dispose();
      recv.dispose();
    }
  }
  return points;
}

async function measureSmallOps(
  o: MeasureCostModelOptions,
  s: Stream,
  timer: OpTimer,
  t1: number,
  t2: number,
  progress: (label: string) => void,
): Promise<SmallOpCosts> {
  const { device, dtype, hidden: H, expertIntermediate: I, numExperts: E, topK: k } = o;
  const owned: Tensor[] = [];
  const tensor = (dt: DType, shape: number[]) => {
    const t = device.tensor(dt, shape);
    owned.push(t);
    return t;
  };
  try {
    const router = tensor(dtype, [E, H]);
    ops.fillRandom(s, router, 4, 0.02);
    const at = async (T: number) => {
      const h = tensor(dtype, [T, H]);
      ops.fillRandom(s, h, 5, 1);
      const logits = tensor('f32', [T, E]);
      const topkIdx = tensor('i32', [T, k]);
      const topkW = tensor('f32', [T, k]);
      const routerMs = await timer.median(() => {
        ops.matmul(s, logits, h, router);
        ops.router(s, topkIdx, topkW, logits, k, true, 1);
      });
      progress(`router ${T} tokens`);
      const permuted = tensor(dtype, [T * k, H]);
      const rowMap = tensor('i32', [T, k]);
      const counts = tensor('i32', [E]);
      const permuteMs = await timer.median(() => ops.moePermute(s, permuted, rowMap, counts, h, topkIdx));
      progress(`moe_permute ${T * k} rows`);
      const gateUp = tensor(dtype, [T * k, 2 * I]);
      ops.fillRandom(s, gateUp, 6, 1);
      const act = tensor(dtype, [T * k, I]);
      const swigluMs = await timer.median(() => ops.swiglu(s, act, gateUp));
      progress(`swiglu ${T * k} rows`);
      const out = tensor(dtype, [T, H]);
      const unpermuteMs = await timer.median(() => ops.moeUnpermute(s, out, permuted, rowMap, topkW, false));
      progress(`moe_unpermute ${T} tokens`);
      return { routerMs, permuteMs, swigluMs, unpermuteMs };
    };
    const a = await at(t1);
    const b = await at(t2);
    const hostSyncMs = await measureHostSync(s, tensor('i32', [E]), o.comm, timer.runs);
    progress('host sync');
    return {
      hostSyncMs,
      router: line(t1, a.routerMs, t2, b.routerMs),
      permute: line(t1 * k, a.permuteMs, t2 * k, b.permuteMs),
      swiglu: { ...line(t1 * k, a.swigluMs, t2 * k, b.swigluMs), width: I },
      unpermute: line(t1, a.unpermuteMs, t2, b.unpermuteMs),
    };
  } finally {
    await s.synchronize();
    for (const t of owned) t.dispose();
  }
}

/**
 * The layer's host sync as the host sees it (its clock): the read of a counts-sized tensor from an idle
 * stream and, with several ranks, the gather of every rank's, as exec/moeLayer.ts does before it plans.
 */
async function measureHostSync(s: Stream, counts: Tensor, comm: Communicator | undefined, runs: number): Promise<number> {
  const local = new Int32Array(counts.shape[0]);
  const times: number[] = [];
  for (let i = 0; i < runs + 2; i++) {
    await s.synchronize();
    const t0 = performance.now();
    await counts.read(s);
    if (comm && comm.world > 1) await comm.allGather(local);
    if (i >= 2) times.push(performance.now() - t0); // the first two warm up
  }
  times.sort((x, y) => x - y);
  return times[times.length >> 1];
}

/** fixed + perRow x rows through two measurements, neither part negative. */
function line(x1: number, y1: number, x2: number, y2: number): LinearCost {
  const msPerRow = Math.max(0, (y2 - y1) / (x2 - x1));
  return { fixedMs: Math.max(0, y1 - msPerRow * x1), msPerRow };
}

/** The fields that hold measured times (the rest, row counts and shapes, are equal on every rank). */
const MEASURED_FIELDS = new Set(['ms', 'overheadMs', 'latencyMs', 'bytesPerMs', 'fixedMs', 'msPerRow', 'hostSyncMs']);

/**
 * Every rank replaces each measured number by the median of all ranks' values (sent as float32, so
 * every rank rounds alike): the ranks then hold the same model, which plans alike.
 */
async function agreeAcrossRanks(comm: Communicator, model: CostModel): Promise<CostModel> {
  const values: number[] = [];
  mapMeasured(model, (v) => {
    values.push(v);
    return v;
  });
  const local = new Float32Array(values);
  const all = (await comm.allGather(new Int32Array(local.buffer))).map((v) => new Float32Array(v.buffer, v.byteOffset, v.length));
  let i = 0;
  return mapMeasured(model, () => {
    const column = all.map((v) => v[i]).sort((x, y) => x - y);
    i++;
    const mid = column.length >> 1;
    return column.length % 2 ? column[mid] : Math.fround((column[mid - 1] + column[mid]) / 2);
  });
}

/** A copy of `v` with every measured number replaced by fn(number), in a fixed traversal order. */
function mapMeasured<T>(v: T, fn: (x: number) => number, field = ''): T {
  if (typeof v === 'number') return (MEASURED_FIELDS.has(field) ? fn(v) : v) as T;
  if (Array.isArray(v)) return v.map((x) => mapMeasured(x, fn, field)) as T;
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = field === 'key' ? x : mapMeasured(x, fn, k);
    return out as T;
  }
  return v;
}
