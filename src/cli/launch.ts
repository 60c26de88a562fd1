// `eps-moe launch [--model DIR | --preset NAME] [--ranks N] [--backend cpu|cuda] [--host H] [--port P]
//                 [--nnodes N --node-rank R --coordinator HOST:PORT]`
// Starts this node's part of a cluster (node 0: the router too), shows progress while weights load,
// prints one `ready:` line on stdout once it serves, and on SIGINT/SIGTERM drains and stops. The
// process exits 0 after a planned stop, non-zero when the cluster failed (a rank lost).
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { launchCluster } from '../cluster/launcher';
import type { EngineConfig } from '../cluster/rankConfig';
import { DEFAULT_TUNING, type ClusterTuning } from '../cluster/tuning';
import { createLogger, type Logger } from '../rpc/log';
import type { ClusterLoadProgress } from '../cluster/router';
import type { BackendKind } from '../native/addonTypes';
import type { ModelSpec } from '../model/config';
import type { DispatchMode } from '../moe/schedule';
import { CliError } from './errors';
import { ProgressView } from './progress';

export interface LaunchCommandOptions {
  model?: string;
  preset?: string;
  ranks?: number;
  backend?: BackendKind;
  host?: string;
  port?: number;
  nnodes?: number;
  nodeRank?: number;
  coordinator?: string;
  /** Overrides of the cluster's limits and timeouts (flags such as --max-tokens-per-rank). */
  maxTokensPerRank?: number;
  maxWaitMs?: number;
  queueLimit?: number;
  maxSequencesPerRequest?: number;
  stepTimeoutMs?: number;
  drainTimeoutMs?: number;
  failureLingerMs?: number;
  /** auto | baseline | fixed:D[:grouped|dense][:tokens|experts], as for `eps-moe forward`. */
  moeSchedule?: string;
  /** Groups of each rank's experts (the scheduler's expert axis); every node must give the same. */
  expertGroups?: number;
  /** --dispatch: auto, pairs or dedup. */
  dispatch?: DispatchMode;
  logLevel?: string;
  /** Seeded random weights made on each rank's device from config.json alone (benchmarks of full-size shapes). */
  randomWeights?: boolean;
  /** A Chrome/Perfetto trace of every step's MoE ops on this node's ranks, written when the cluster stops. */
  trace?: string;
}

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 50051;

export async function launchCommand(opts: LaunchCommandOptions): Promise<void> {
  if (opts.model !== undefined && opts.preset !== undefined) throw new CliError('give --model or --preset, not both', 2);
  const nnodes = opts.nnodes ?? 1;
  const nodeRank = opts.nodeRank ?? 0;
  // Ranks inherit the environment: they log at the same level.
  if (opts.logLevel !== undefined) process.env.EPS_LOG_LEVEL = opts.logLevel;
  const logger = createLogger({ role: 'launcher', node: nodeRank });
  const backend = opts.backend ?? (await bestBackend());
  const ranksPerNode = opts.ranks ?? (await defaultRanks(backend));
  if (!Number.isInteger(ranksPerNode) || ranksPerNode < 1) throw new CliError('--ranks must be a positive integer', 2);
  const flags = await engineConfigOf(opts);
  const modelDir =
    opts.model !== undefined
      ? path.resolve(opts.model)
      : opts.randomWeights
        ? await presetConfigOnly(opts.preset)
        : await builtInModel(opts.preset, logger);
  const { loadModelSpec } = await import('../model/config');
  let spec: ModelSpec;
  try {
    spec = await loadModelSpec(modelDir);
  } catch (e) {
    throw new CliError(`launch failed: ${(e as Error).message}`);
  }
  const engine = await checkedAgainstModel(flags, spec, ranksPerNode * nnodes);
  const traceFile = engine.traceFile ?? undefined;

  const tuning: ClusterTuning = {
    ...DEFAULT_TUNING,
    ...defined({
      maxTokensPerRank: opts.maxTokensPerRank,
      maxWaitMs: opts.maxWaitMs,
      maxQueuedSequences: opts.queueLimit,
      maxSequencesPerRequest: opts.maxSequencesPerRequest,
      stepTimeoutMs: opts.stepTimeoutMs,
      drainTimeoutMs: opts.drainTimeoutMs,
      failureLingerMs: opts.failureLingerMs,
    }),
  };
  const progress = new ProgressView('loading weights', 'tensors', (fields, msg) => logger.info(fields, msg));
  let cluster;
  try {
    cluster = await launchCluster({
      modelDir,
      backend,
      ranksPerNode,
      nnodes,
      nodeRank,
      coordinator: opts.coordinator ?? null,
      host: opts.host ?? DEFAULT_HOST,
      port: opts.port ?? DEFAULT_PORT,
      tuning,
      spec,
      engine,
      logger,
      onProgress: (p: ClusterLoadProgress) => progress.update(p.loaded, p.total, `${p.ranksDone}/${p.world} ranks`),
    });
  } catch (e) {
    progress.stop();
    throw new CliError(`launch failed: ${(e as Error).message}`);
  }
  progress.stop();

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    logger.info({ signal }, signals === 1 ? 'draining, then stopping (signal again to stop at once)' : 'stopping now');
    cluster.shutdown(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  if (nodeRank === 0) {
    const pids = cluster.ranks.map((r) => r.pid).join(',');
    process.stdout.write(
      `ready: ${cluster.publicAddress} model=${path.basename(modelDir)} ranks=${cluster.world} backend=${backend} launcher_pid=${process.pid} rank_pids=${pids}\n`,
    );
  } else {
    logger.info({ coordinator: cluster.coordinatorAddress, ranks: cluster.ranks }, 'node ranks started');
  }
  const code = await cluster.finished;
  if (traceFile) {
    const { mergeRankTraces } = await import('../trace/merge');
    const parts = await mergeRankTraces(traceFile, cluster.world);
    logger.info({ traceFile, parts }, 'trace written');
  }
  logger.info({ code }, 'launcher exiting');
  process.exit(code);
}

/**
 * The engine flags, each parsed and checked on its own (exit 2 on a mistake), before a model is made:
 * every rank gets them from here, in its RankConfig.
 */
async function engineConfigOf(opts: LaunchCommandOptions): Promise<EngineConfig> {
  const { parseDispatchMode, parseMoeSchedule } = await import('../moe/schedule');
  let schedule;
  try {
    schedule = parseMoeSchedule(opts.moeSchedule ?? 'auto');
  } catch (e) {
    throw new CliError((e as Error).message, 2);
  }
  const expertGroups = opts.expertGroups ?? 1;
  if (!Number.isInteger(expertGroups) || expertGroups < 1) throw new CliError('--expert-groups must be a positive integer', 2);
  let dispatch: DispatchMode;
  try {
    dispatch = parseDispatchMode(opts.dispatch ?? 'auto', '--dispatch');
  } catch (e) {
    throw new CliError((e as Error).message, 2);
  }
  return {
    schedule,
    expertGroups,
    dispatch,
    randomWeightsSeed: opts.randomWeights ? 0 : null,
    traceFile: opts.trace !== undefined ? path.resolve(opts.trace) : null,
  };
}

/** The engine flags checked against the model: its experts split over `world` ranks in the groups asked, the schedule runs on them. */
async function checkedAgainstModel(flags: EngineConfig, spec: ModelSpec, world: number): Promise<EngineConfig> {
  const { expertLayout } = await import('../moe/placement');
  const { scheduleLayoutProblem } = await import('../moe/schedule');
  let problem: string | undefined;
  try {
    problem = scheduleLayoutProblem(flags.schedule, expertLayout(spec.moe.numExperts, world, flags.expertGroups).groups);
  } catch (e) {
    problem = (e as Error).message;
  }
  if (problem) throw new CliError(problem, 2);
  return flags;
}

/** CUDA when the addon has it (and sees a GPU), else the CPU backend. */
async function bestBackend(): Promise<BackendKind> {
  const { addon, defaultBackend } = await import('../native/addon');
  try {
    const kind = defaultBackend();
    return kind === 'cuda' && addon().devices('cuda').length === 0 ? 'cpu' : kind;
  } catch (e) {
    throw new CliError((e as Error).message);
  }
}

/** One rank per GPU on CUDA; one rank on the CPU backend. */
async function defaultRanks(backend: BackendKind): Promise<number> {
  if (backend === 'cpu') return 1;
  const { addon } = await import('../native/addon');
  return Math.max(1, addon().devices('cuda').length);
}

/** The cache folder of built-in models: $EPS_CACHE_DIR, else $XDG_CACHE_HOME/eps-moe, else ~/.cache/eps-moe. */
export function cacheDir(): string {
  if (process.env.EPS_CACHE_DIR) return path.resolve(process.env.EPS_CACHE_DIR);
  return path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'eps-moe');
}

/** A folder holding only a preset's config.json: enough for ranks that make random weights. */
async function presetConfigOnly(preset: string | undefined): Promise<string> {
  const { presetConfig } = await import('../model/makeModel');
  const { DEFAULT_PRESET, findPreset } = await import('../model/presets');
  const name = preset ?? DEFAULT_PRESET;
  if (!findPreset(name)) throw new CliError(`unknown preset ${JSON.stringify(name)}`, 2);
  const dir = path.join(cacheDir(), 'configs', name);
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(presetConfig(name), null, 2));
  return dir;
}

/** The built-in model of a preset, made on first use (into a temporary folder, renamed when complete). */
async function builtInModel(preset: string | undefined, logger: Logger): Promise<string> {
  const { makeModel } = await import('../model/makeModel');
  const { DEFAULT_PRESET, findPreset, listPresets } = await import('../model/presets');
  const name = preset ?? DEFAULT_PRESET;
  if (!findPreset(name)) {
    throw new CliError(
      `unknown preset ${JSON.stringify(name)}; presets: ${listPresets()
        .map((p) => p.name)
        .join(', ')}`,
      2,
    );
  }
  const dir = path.join(cacheDir(), 'models', `${name}-seed0`);
  if (await exists(path.join(dir, 'config.json'))) return dir;
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const partial = await fs.mkdtemp(`${dir}.partial-`);
  logger.info({ preset: name, dir }, 'making the built-in model (first run)');
  const view = new ProgressView(`making ${name}`, 'MB', (fields, msg) => logger.info(fields, msg));
  try {
    await makeModel({ preset: name, out: partial, seed: 0, force: true }, (written, total) => view.update(written, total, ''));
    view.stop();
    await fs.rename(partial, dir).catch(async (e: NodeJS.ErrnoException) => {
      // Another launch made it at the same time: keep theirs.
      if (!(await exists(path.join(dir, 'config.json')))) throw e;
      await fs.rm(partial, { recursive: true, force: true });
    });
  } catch (e) {
    view.stop();
    await fs.rm(partial, { recursive: true, force: true });
    throw e;
  }
  return dir;
}

function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
