// Makes the engine of one rank: opens the device, loads this rank's weights (a checkpoint, or random
// weights from a config alone), and wraps the ModelRunner as the RankEngine the cluster drives.
import { Device } from '../native/device';
import type { BackendKind, DType } from '../native/addonTypes';
import { expertKernelsOf, groupedSm90Takes, type ExpertKernel } from '../native/ops';
import { loadModelSpec, type ModelSpec } from '../model/config';
import { CheckpointSource } from './checkpointSource';
import { ModelRunner } from './forward';
import { RandomSource } from './randomSource';
import type { RankEngine, RankEngineOptions, RankStats } from './types';
import { dtypeBytes } from '../native/device';
import type { MoePlan } from '../moe/plan/plan';
import { disposeWeights } from './weightTypes';
import { loadWeights, type WeightSource } from './weights';
import type { CostModel } from '../moe/cost/costModel';
import { defaultCostModelDir, loadCostModel } from '../moe/cost/costModelStore';
import { costModelKeyFor, moeLayerDims } from '../moe/cost/costModelCache';
import type { Communicator } from '../comm/communicator';
import { scheduleLayoutProblem, scheduleNeedsCostModel, type MoeSchedule } from '../moe/schedule';
import { ExpertLayoutError, expertLayout } from '../moe/placement';
import { planLabel } from '../moe/plan/plan';
import { addForwardToTrace } from './forwardTrace';
import { rankTraceFile } from '../trace/merge';
import { TraceCollector } from '../trace/traceCollector';
import * as os from 'node:os';
import { ModelError } from '../model/errors';
import { formatBytes, weightBytesPerRank } from '../model/memoryEstimate';

export interface EngineOptions extends Omit<RankEngineOptions, 'modelDir'> {
  /** A checkpoint folder (its config.json read here unless `spec` is given); or, without one, `spec` with `randomSeed`. */
  modelDir?: string;
  spec?: ModelSpec;
  randomSeed?: number;
  weightDtype?: DType;
  actDtype?: DType;
  /** How MoE layers run (default auto). */
  schedule?: MoeSchedule;
  costModel?: CostModel;
  /** Trace every step's MoE ops into FILE.rank<r>.json, written when the engine is disposed. */
  traceFile?: string;
  /** Debug: check every layer's MLP output for non-finite values (ForwardOptions.checkLayers). */
  checkLayers?: boolean;
  /** Fail the load, naming the tensor, when a checkpoint weight holds NaN or Inf (`--check-weights`). */
  checkWeights?: boolean;
}

export interface LoadedEngine extends RankEngine {
  readonly runner: ModelRunner;
  readonly device: Device;
}

/** Storage dtypes: fp32 on the CPU (the reference), bf16 on GPUs. */
export function defaultDType(backend: BackendKind): DType {
  return backend === 'cpu' ? 'f32' : 'bf16';
}

export async function loadRankEngine(opts: EngineOptions): Promise<LoadedEngine> {
  let spec: ModelSpec;
  let source: WeightSource;
  let close = async () => {};
  if (opts.modelDir) {
    spec = opts.spec ?? (await loadModelSpec(opts.modelDir));
    const ckpt = await CheckpointSource.open(opts.modelDir, spec, { checkFinite: opts.checkWeights });
    source = ckpt;
    close = () => ckpt.close();
  } else if (opts.spec) {
    spec = opts.spec;
    source = new RandomSource(opts.randomSeed ?? 0, spec.tieWordEmbeddings);
  } else {
    throw new Error('loadRankEngine needs modelDir or spec');
  }
  const asked = opts.schedule ?? { kind: 'auto' };
  // A layout or schedule that cannot run fails here, before any weight is read.
  let groups: number;
  try {
    groups = expertLayout(spec.moe.numExperts, opts.comm.world, opts.expertGroups ?? 1).groups;
    const problem = scheduleLayoutProblem(asked, groups);
    if (problem) throw new ExpertLayoutError(problem);
  } catch (e) {
    await close();
    throw e;
  }
  const device = Device.open(opts.backend, opts.deviceIndex);
  const weightDtype = opts.weightDtype ?? defaultDType(opts.backend);
  const actDtype = opts.actDtype ?? defaultDType(opts.backend);
  const { comm } = opts;
  try {
    checkWeightsFit(spec, comm.world, weightDtype, device);
  } catch (e) {
    await close();
    device.dispose();
    throw e;
  }
  let weights;
  try {
    weights = await loadWeights(spec, device, source, {
      rank: comm.rank,
      world: comm.world,
      weightDtype,
      expertGroups: groups,
      onProgress: opts.onLoadProgress,
    });
  } finally {
    await close();
  }
  const costModel = opts.costModel ?? (scheduleNeedsCostModel(asked) ? await cachedCostModel(device, comm, actDtype, spec) : undefined);
  const schedule = effectiveSchedule(asked, costModel, comm.world, defaultExpertKernel(device, actDtype, spec));
  const runner = new ModelRunner(spec, weights, device, comm, actDtype, {
    schedule,
    costModel,
    dispatch: opts.dispatch,
    checkLayers: opts.checkLayers,
  });
  const trace = opts.traceFile ? new TraceCollector() : undefined;
  const moeLayers = spec.layers.flatMap((l, i) => (l.mlp === 'moe' ? [i] : []));
  const planCounts: Record<string, number> = {};
  const stats: RankStats = {
    stepMs: 0,
    moeLayers: moeLayers.map((layer) => ({ layer, steps: 0, hostSyncMs: 0, allToAllBytes: 0, expertTokens: [] })),
  };
  const rowBytes = spec.hiddenSize * dtypeBytes[actDtype];
  return {
    spec,
    runner,
    device,
    rank: comm.rank,
    world: comm.world,
    async step(sequences, stepOptions) {
      const startedMs = performance.timeOrigin + performance.now(); // one clock for every rank of a host
      const result = await runner.forward(sequences, { trace: trace !== undefined, onEnqueued: stepOptions?.onEnqueued });
      if (trace) addForwardToTrace(trace, comm.rank, result, startedMs);
      const { logits, plans, nonfinite, layerStats } = result;
      plans.forEach((plan, i) => {
        const key = `layer ${moeLayers[i]}: ${planLabel(plan)}`;
        planCounts[key] = (planCounts[key] ?? 0) + 1;
        const acc = stats.moeLayers[i];
        acc.steps++;
        acc.allToAllBytes += allToAllRows(plan) * rowBytes;
        const seen = layerStats[i];
        if (seen) {
          acc.hostSyncMs += seen.hostSyncMs;
          seen.expertTokens.forEach((n, e) => (acc.expertTokens[e] = (acc.expertTokens[e] ?? 0) + n));
        }
      });
      stats.stepMs += performance.timeOrigin + performance.now() - startedMs;
      return { logits, nonfinite };
    },
    planCounts: () => ({ ...planCounts }),
    stats: () => ({ ...structuredClone(stats), deviceMemory: device.memoryCounters() }),
    async dispose() {
      if (trace && opts.traceFile) await trace.write(rankTraceFile(opts.traceFile, comm.rank));
      runner.dispose();
      disposeWeights(weights);
    },
  };
}

/** Rows this rank sends to other ranks in a layer's all-to-alls: its dispatch rows out, its combine rows back. */
function allToAllRows(plan: MoePlan): number {
  let rows = 0;
  for (const c of plan.chunks) {
    c.sentRows.forEach((n, p) => (rows += p === plan.rank ? 0 : n));
    c.recvRows.forEach((n, p) => (rows += p === plan.rank ? 0 : n));
  }
  return rows;
}

/**
 * The weights of one rank must fit the device's free memory (the host's memory on the CPU backend), by an
 * estimate from the config alone: checked before anything is allocated, one line when they do not.
 */
export function checkWeightsFit(spec: ModelSpec, world: number, dtype: DType, device: Device): void {
  const need = weightBytesPerRank(spec, world, dtype);
  const cpu = device.backend === 'cpu';
  const have = cpu ? os.totalmem() : device.freeBytes();
  if (need <= have) return;
  throw new ModelError(
    'MODEL_TOO_LARGE',
    `the model's weights need about ${formatBytes(need)} per rank (${spec.numLayers} layers, ${spec.moe.numExperts} experts over ${world} rank${world === 1 ? '' : 's'}, ${dtype}); ` +
      `${cpu ? 'this host has' : 'the device has'} ${formatBytes(have)}${cpu ? '' : ' free'}`,
  );
}

/**
 * auto (and fixed without a kernel) needs a cost model to choose; with one rank there is nothing to
 * overlap, so without a model auto is one chunk and the kernel is `kernel` (defaultExpertKernel).
 * With several ranks the cluster measures a model first (rankEngineFactory.ts).
 */
export function effectiveSchedule(
  schedule: MoeSchedule,
  costModel: CostModel | undefined,
  world: number,
  kernel: ExpertKernel = 'dense',
): MoeSchedule {
  if (costModel || world !== 1) return schedule;
  if (schedule.kind === 'auto') return { kind: 'fixed', degree: 1, kernel };
  if (schedule.kind === 'fixed' && !schedule.kernel) return { ...schedule, kernel };
  return schedule;
}

/**
 * The expert kernel a rank runs when nothing measured chooses: the Hopper grouped GEMM where this device
 * runs it, it takes both expert GEMMs (gate/up [2I, H] and down [H, I]) and experts are many per chosen
 * one (E >= 8 k: a step of up to 16K tokens gives each expert at most 2048 rows on average); else the
 * per-expert dense GEMMs. Measured on one H100 (BENCHMARKS.md, 2026-12-07, `bench experts`): grouped_sm90
 * was the fastest of the three kernels at 88 of 103 rows, and Qwen3-30B-A3B (E = 128, k = 8) prefilled
 * 49.4K tokens/s on it against 40.4K on dense; dense won by more than 5% only for few large experts at
 * 2048+ rows each (Mixtral-like E4 at 2048 rows 767 vs 706 TFLOP/s), which is where Mixtral (8 experts,
 * top-2) and DBRX (16, top-4) land. Off Hopper cuBLAS's grouped GEMM stays near 300 TFLOP/s where
 * per-expert GEMMs reach 650-750 from 256 rows per expert, so dense.
 */
export function defaultExpertKernel(device: Device, dtype: DType, spec: ModelSpec): ExpertKernel {
  const { hiddenSize: h } = spec;
  const { expertIntermediate: i, numExperts, topK } = spec.moe;
  const sm90 =
    expertKernelsOf(device).includes('grouped_sm90') &&
    groupedSm90Takes(dtype, 2 * i, h) &&
    groupedSm90Takes(dtype, h, i) &&
    numExperts >= 8 * topK;
  return sm90 ? 'grouped_sm90' : 'dense';
}

/** A cost model `eps-moe profile` (or an earlier cluster) left in the cache folder, if any; never measures. */
async function cachedCostModel(device: Device, comm: Communicator, dtype: DType, spec: ModelSpec): Promise<CostModel | undefined> {
  try {
    return await loadCostModel(defaultCostModelDir(), costModelKeyFor({ device, comm, dtype, shape: moeLayerDims(spec) }));
  } catch {
    return undefined; // a damaged file: plan without it
  }
}
