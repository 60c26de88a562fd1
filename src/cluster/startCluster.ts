// Starts this node's part of a cluster from plain options, in this process: resolves the model (a
// checkpoint folder, a preset made on first use, or a preset's config alone with random weights),
// checks the engine options against it once (the RankConfig every rank gets), and runs the launcher
// (the router here on node 0, one child process per rank). `eps-moe launch` is this plus a progress
// bar, signals and the `ready:` line; programs use it through require('eps-moe').
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { loadModelSpec, parseModelConfig, type ModelSpec } from '../model/config';
import { makeModel, presetConfig } from '../model/makeModel';
import { DEFAULT_PRESET, findPreset, listPresets } from '../model/presets';
import { expertLayout } from '../moe/placement';
import { parseDispatchMode, parseMoeSchedule, scheduleLayoutProblem, type DispatchMode } from '../moe/schedule';
import { addon, defaultBackend } from '../native/addon';
import type { BackendKind } from '../native/addonTypes';
import { createLogger, type Logger } from '../rpc/log';
import { readApiKeyFile, readClusterSecretFile, readTlsFiles, SecurityConfigError, type TlsPaths } from '../rpc/security';
import { launchCluster, type LaunchSecurity, type RunningCluster } from './launcher';
import { PrefillClient } from './prefillClient';
import type { EngineConfig } from './rankConfig';
import type { ClusterLoadProgress } from './router';
import { DEFAULT_TUNING, type ClusterTuning } from './tuning';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 50051;

export interface ClusterOptions {
  /** A Hugging Face checkpoint folder; or, without one, `preset` (default: the tiny built-in model). */
  model?: string;
  preset?: string;
  /** Seeded random weights made on each rank's device from the config alone (full-size shapes without a checkpoint). */
  randomWeights?: boolean;
  /** `KEY=VALUE` changes to the preset's config (e.g. num_hidden_layers=8: a full-size shape cut to fit one GPU). */
  overrides?: readonly string[];
  /** Ranks on this node (default: one per GPU on CUDA, one on the CPU backend). */
  ranks?: number;
  /** Default: CUDA when the addon has it and sees a GPU, else the CPU backend. */
  backend?: BackendKind;
  /** The public server (node 0): default 127.0.0.1:50051; port 0 picks a free one. */
  host?: string;
  port?: number;
  /** Several nodes, as torchrun does: every node the same options but its nodeRank. */
  nnodes?: number;
  nodeRank?: number;
  coordinator?: string;
  /** auto | baseline | fixed:D[:grouped|dense][:tokens|experts] (default auto). */
  moeSchedule?: string;
  /** Groups of each rank's experts (the scheduler's expert axis; default 1). */
  expertGroups?: number;
  /** auto (default), pairs or dedup. */
  dispatch?: DispatchMode;
  /** A Chrome/Perfetto trace of every step's MoE ops, FILE.rank<r>.json per rank. */
  trace?: string;
  /** The cluster secret, a file (first line, >= 32 characters) given to every node of a multi-node cluster; required when nnodes > 1. */
  clusterSecretFile?: string;
  /** PEM files: with tlsCert and tlsKey the public server serves TLS; with tlsCa too, internal traffic is mutual TLS. */
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  /** Bearer tokens (one per line) that the public API requires; health probes need none. */
  apiKeyFile?: string;
  /** Count NaN/Inf in every weight as the ranks load (fail naming the tensor); debug: check every layer's MLP output. */
  checkWeights?: boolean;
  checkLayers?: boolean;
  /** Serve Prometheus metrics at http://HOST:PORT/metrics on the public host (0: any free port); default none. */
  metricsPort?: number;
  /** Limits and timeouts (DEFAULT_TUNING otherwise). */
  tuning?: Partial<ClusterTuning>;
  logger?: Logger;
  /** Weights loading on the ranks. */
  onLoadProgress?: (p: ClusterLoadProgress) => void;
  /** The built-in model being written on first use: bytes written of total. */
  onMakeProgress?: (written: number, total: number) => void;
}

/** A mistake in the options (a bad value, an unknown preset, a layout the model cannot take); `eps-moe launch` exits 2. */
export class ClusterOptionError extends Error {
  readonly code = 'EPS_CLUSTER_OPTION';
  constructor(message: string) {
    super(message);
    this.name = 'ClusterOptionError';
  }
}

export interface Cluster extends RunningCluster {
  modelDir: string;
  backend: BackendKind;
  spec: ModelSpec;
  engine: EngineConfig;
  /** A client of the public server (node 0), with the first API key and the TLS CA (or certificate) when set; close it when done. */
  client(): PrefillClient;
  /** Drains, stops every process, and resolves with the launcher's exit code. */
  stop(): Promise<number>;
}

export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  if (opts.model !== undefined && opts.preset !== undefined) throw new ClusterOptionError('give --model or --preset, not both');
  const overrides = opts.overrides ?? [];
  if (opts.model !== undefined && overrides.length > 0) {
    throw new ClusterOptionError("--override changes a preset's config; for a checkpoint folder, edit its config.json");
  }
  const nnodes = opts.nnodes ?? 1;
  const nodeRank = opts.nodeRank ?? 0;
  const logger = opts.logger ?? createLogger({ role: 'launcher', node: nodeRank });
  const backend = opts.backend ?? bestBackend();
  const ranksPerNode = opts.ranks ?? defaultRanks(backend);
  if (!Number.isInteger(ranksPerNode) || ranksPerNode < 1) throw new ClusterOptionError('--ranks must be a positive integer');
  const flags = engineConfigOf(opts);
  const security = securityOf(opts, nnodes);
  const modelDir =
    opts.model !== undefined
      ? path.resolve(opts.model)
      : opts.randomWeights
        ? await presetConfigOnly(opts.preset, overrides)
        : await builtInModel(opts.preset, overrides, logger, opts.onMakeProgress);
  let spec: ModelSpec;
  try {
    spec = await loadModelSpec(modelDir);
  } catch (e) {
    throw new Error(`launch failed: ${(e as Error).message}`);
  }
  const engine = checkedAgainstModel(flags, spec, ranksPerNode * nnodes);
  const tuning: ClusterTuning = { ...DEFAULT_TUNING, ...defined(opts.tuning ?? {}) };
  let running: RunningCluster;
  try {
    running = await launchCluster({
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
      security,
      logger,
      onProgress: opts.onLoadProgress,
      metricsPort: opts.metricsPort ?? null,
    });
  } catch (e) {
    throw new Error(`launch failed: ${(e as Error).message}`);
  }
  const tlsRoot = security.tls ? readTlsFiles(security.tls) : null;
  return Object.assign(running, {
    modelDir,
    backend,
    spec,
    engine,
    client: () =>
      new PrefillClient(running.publicAddress, {
        apiKey: security.apiKeys[0],
        tlsRootCert: tlsRoot ? (tlsRoot.ca ?? tlsRoot.cert) : undefined,
      }),
    stop: () => {
      running.shutdown('stop');
      return running.finished;
    },
  });
}

/** The security options, their files read and checked now (a mistake is an option error, before anything starts). */
function securityOf(opts: ClusterOptions, nnodes: number): LaunchSecurity {
  const { tlsCert, tlsKey, tlsCa } = opts;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new ClusterOptionError('give --tls-cert and --tls-key together');
  if (tlsCa !== undefined && tlsCert === undefined)
    throw new ClusterOptionError('--tls-ca needs --tls-cert and --tls-key (mutual TLS between nodes)');
  if (nnodes > 1 && opts.clusterSecretFile === undefined) {
    throw new ClusterOptionError(
      '--cluster-secret-file is required when --nnodes > 1: the same file on every node (make one with: openssl rand -hex 32 > FILE)',
    );
  }
  try {
    const tls: TlsPaths | null =
      tlsCert !== undefined && tlsKey !== undefined
        ? { cert: path.resolve(tlsCert), key: path.resolve(tlsKey), ca: tlsCa !== undefined ? path.resolve(tlsCa) : null }
        : null;
    if (tls) readTlsFiles(tls);
    return {
      clusterSecret: opts.clusterSecretFile !== undefined ? readClusterSecretFile(opts.clusterSecretFile) : null,
      tls,
      apiKeys: opts.apiKeyFile !== undefined ? readApiKeyFile(opts.apiKeyFile) : [],
    };
  } catch (e) {
    if (e instanceof SecurityConfigError) throw new ClusterOptionError(e.message);
    throw e;
  }
}

/** The engine options, each parsed and checked on its own, before a model is made: every rank gets them in its RankConfig. */
function engineConfigOf(opts: ClusterOptions): EngineConfig {
  let schedule;
  let dispatch: DispatchMode;
  try {
    schedule = parseMoeSchedule(opts.moeSchedule ?? 'auto');
    dispatch = parseDispatchMode(opts.dispatch ?? 'auto', '--dispatch');
  } catch (e) {
    throw new ClusterOptionError((e as Error).message);
  }
  const expertGroups = opts.expertGroups ?? 1;
  if (!Number.isInteger(expertGroups) || expertGroups < 1) throw new ClusterOptionError('--expert-groups must be a positive integer');
  return {
    schedule,
    expertGroups,
    dispatch,
    randomWeightsSeed: opts.randomWeights ? 0 : null,
    traceFile: opts.trace !== undefined ? path.resolve(opts.trace) : null,
    checkWeights: opts.checkWeights ?? false,
    checkLayers: opts.checkLayers ?? false,
  };
}

/** The engine options checked against the model: its experts split over `world` ranks in the groups asked, the schedule runs on them. */
function checkedAgainstModel(flags: EngineConfig, spec: ModelSpec, world: number): EngineConfig {
  let problem: string | undefined;
  try {
    problem = scheduleLayoutProblem(flags.schedule, expertLayout(spec.moe.numExperts, world, flags.expertGroups).groups);
  } catch (e) {
    problem = (e as Error).message;
  }
  if (problem) throw new ClusterOptionError(problem);
  return flags;
}

/** CUDA when the addon has it (and sees a GPU), else the CPU backend. */
function bestBackend(): BackendKind {
  const kind = defaultBackend();
  return kind === 'cuda' && addon().devices('cuda').length === 0 ? 'cpu' : kind;
}

/** One rank per GPU on CUDA; one rank on the CPU backend. */
function defaultRanks(backend: BackendKind): number {
  if (backend === 'cpu') return 1;
  return Math.max(1, addon().devices('cuda').length);
}

/** The cache folder of built-in models: $EPS_CACHE_DIR, else $XDG_CACHE_HOME/eps-moe, else ~/.cache/eps-moe. */
export function cacheDir(): string {
  if (process.env.EPS_CACHE_DIR) return path.resolve(process.env.EPS_CACHE_DIR);
  return path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'eps-moe');
}

/** A folder holding only a preset's config.json: enough for ranks that make random weights. */
async function presetConfigOnly(preset: string | undefined, overrides: readonly string[]): Promise<string> {
  const name = preset ?? DEFAULT_PRESET;
  if (!findPreset(name)) throw new ClusterOptionError(`unknown preset ${JSON.stringify(name)}`);
  const config = overriddenConfig(name, overrides);
  const dir = path.join(cacheDir(), 'configs', name + overridesSuffix(overrides));
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return dir;
}

/** The preset's config with the overrides applied and checked like any config.json (a mistake is an option error). */
function overriddenConfig(name: string, overrides: readonly string[]): ReturnType<typeof presetConfig> {
  try {
    const config = presetConfig(name, undefined, overrides);
    if (overrides.length) parseModelConfig(config, `preset ${name} with --override ${overrides.join(' ')}`);
    return config;
  } catch (e) {
    throw new ClusterOptionError((e as Error).message);
  }
}

/** A folder-name suffix telling overridden presets apart: a short hash of the overrides, in order. */
function overridesSuffix(overrides: readonly string[]): string {
  return overrides.length ? `-${createHash('sha256').update(JSON.stringify(overrides)).digest('hex').slice(0, 10)}` : '';
}

/** The built-in model of a preset, made on first use (into a temporary folder, renamed when complete). */
async function builtInModel(
  preset: string | undefined,
  overrides: readonly string[],
  logger: Logger,
  onProgress: ((written: number, total: number) => void) | undefined,
): Promise<string> {
  const name = preset ?? DEFAULT_PRESET;
  if (!findPreset(name)) {
    throw new ClusterOptionError(
      `unknown preset ${JSON.stringify(name)}; presets: ${listPresets()
        .map((p) => p.name)
        .join(', ')}`,
    );
  }
  overriddenConfig(name, overrides);
  const dir = path.join(cacheDir(), 'models', `${name}-seed0${overridesSuffix(overrides)}`);
  if (await exists(path.join(dir, 'config.json'))) return dir;
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const partial = await fs.mkdtemp(`${dir}.partial-`);
  logger.info({ preset: name, dir }, 'making the built-in model (first run)');
  try {
    await makeModel({ preset: name, out: partial, seed: 0, force: true, overrides }, onProgress);
    await fs.rename(partial, dir).catch(async (e: NodeJS.ErrnoException) => {
      // Another launch made it at the same time: keep theirs.
      if (!(await exists(path.join(dir, 'config.json')))) throw e;
      await fs.rm(partial, { recursive: true, force: true });
    });
  } catch (e) {
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
