// One rank's configuration, whole: where the rank stands in the cluster and what its engine runs.
// Made once where the command line is read (cli/launch.ts turns the flags into an EngineConfig; the
// launcher adds each rank's place), sent to the rank process as one JSON document on its stdin
// (rpc/processConfig.ts), and parsed and validated once there (parseRankConfig). Nothing else
// reaches a rank: its environment is the launcher's (NCCL_*, CUDA_VISIBLE_DEVICES, the log level),
// never a channel of settings. The MoE benchmark's ranks (bench/moe/) get theirs the same way.
import type { BackendKind } from '../native/addonTypes';
import { FRAME_BYTES } from '../comm/dataPlane';
import { MIN_SECRET_CHARS, type TlsPaths } from '../rpc/security';
import { DISPATCH_MODES, formatMoeSchedule, parseMoeSchedule, type DispatchMode, type MoeSchedule } from '../moe/schedule';

/** What the engine of every rank runs with; the same on every rank of a cluster. */
export interface EngineConfig {
  /** How MoE layers run (`--moe-schedule`; auto when not given). */
  schedule: MoeSchedule;
  /** Groups of each rank's experts, the unit of the scheduler's expert axis (`--expert-groups`; 1). */
  expertGroups: number;
  /** How the MoE dispatch sends rows (`--dispatch`; auto). */
  dispatch: DispatchMode;
  /** Seeded random weights made on the device from config.json alone (`--random-weights`), or null: the checkpoint's. */
  randomWeightsSeed: number | null;
  /** Trace every step's MoE ops into FILE.rank<r>.json, written when the engine is disposed (`--trace`), or null. */
  traceFile: string | null;
  /** Count NaN/Inf in every weight as it loads; fail the load naming the tensor (`--check-weights`; absent: false). */
  checkWeights: boolean;
  /** Debug: name the first layer whose MLP output went non-finite (`--check-layers`; absent: false). */
  checkLayers: boolean;
}

export const DEFAULT_ENGINE_CONFIG: EngineConfig = {
  schedule: { kind: 'auto' },
  expertGroups: 1,
  dispatch: 'auto',
  randomWeightsSeed: null,
  traceFile: null,
  checkWeights: false,
  checkLayers: false,
};

export interface RankConfig {
  /** host:port of the router's rendezvous server. */
  coordinator: string;
  rank: number;
  world: number;
  nodeRank: number;
  localRank: number;
  backend: BackendKind;
  deviceIndex: number;
  /** Where RankService listens (0.0.0.0 when other hosts must reach it). */
  bindHost: string;
  /** The host peers reach this rank at; empty: the address the router sees the Join come from. */
  advertiseHost: string;
  collectiveTimeoutMs: number;
  rendezvousTimeoutMs: number;
  /** Milliseconds between checks that the launcher is still alive (0: do not check). */
  parentCheckMs: number;
  /** The cluster secret every internal call must carry (made by the launcher, or --cluster-secret-file). Here, on stdin only: never argv or environment. */
  clusterSecret: string;
  /** PEM files of mutual TLS on internal traffic (certificate, key, the cluster CA), or null: plaintext. */
  tls: TlsPaths | null;
  /** RankService's receive limit: a step of the most tokens a rank takes, or one data-plane frame. */
  maxReceiveBytes: number;
  engine: EngineConfig;
}

/** RankService's receive limit for steps of at most `maxTokensPerRank` tokens (int32 ids, 5 bytes at most, and
 *  per-sequence framing) and data-plane frames of FRAME_BYTES. */
export function rankReceiveLimit(maxTokensPerRank: number): number {
  return Math.max(maxTokensPerRank * 16, FRAME_BYTES) + (64 << 10);
}

export class RankConfigError extends Error {
  readonly code = 'EPS_BAD_RANK_CONFIG';
  constructor(message: string) {
    super(`rank configuration: ${message}`);
    this.name = 'RankConfigError';
  }
}

/** A RankConfig from the JSON the launcher sent; every field checked, the schedule parsed. */
export function parseRankConfig(json: string): RankConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch (e) {
    throw new RankConfigError(`not JSON: ${(e as Error).message}`);
  }
  const o = record(doc, 'the document');
  const backend = o.backend;
  if (backend !== 'cpu' && backend !== 'cuda') throw new RankConfigError(`backend must be cpu or cuda, got ${show(backend)}`);
  const world = positiveInt(o.world, 'world');
  const rank = nonNegativeInt(o.rank, 'rank');
  if (rank >= world) throw new RankConfigError(`rank ${rank} is outside [0, ${world})`);
  return {
    coordinator: text(o.coordinator, 'coordinator'),
    rank,
    world,
    nodeRank: nonNegativeInt(o.nodeRank, 'nodeRank'),
    localRank: nonNegativeInt(o.localRank, 'localRank'),
    backend,
    deviceIndex: nonNegativeInt(o.deviceIndex, 'deviceIndex'),
    bindHost: text(o.bindHost, 'bindHost'),
    advertiseHost: text(o.advertiseHost, 'advertiseHost'),
    collectiveTimeoutMs: positiveInt(o.collectiveTimeoutMs, 'collectiveTimeoutMs'),
    rendezvousTimeoutMs: positiveInt(o.rendezvousTimeoutMs, 'rendezvousTimeoutMs'),
    parentCheckMs: nonNegativeInt(o.parentCheckMs, 'parentCheckMs'),
    clusterSecret: secret(o.clusterSecret),
    tls: tlsPaths(o.tls),
    maxReceiveBytes: positiveInt(o.maxReceiveBytes, 'maxReceiveBytes'),
    engine: engineConfig(o.engine),
  };
}

function secret(value: unknown): string {
  // The value itself never goes into a message.
  if (typeof value !== 'string' || value.length < MIN_SECRET_CHARS)
    throw new RankConfigError(`clusterSecret must be a string of at least ${MIN_SECRET_CHARS} characters`);
  return value;
}

function tlsPaths(value: unknown): TlsPaths | null {
  if (value === null) return null;
  const o = record(value, 'tls');
  const ca = text(o.ca, 'tls.ca');
  return { cert: text(o.cert, 'tls.cert'), key: text(o.key, 'tls.key'), ca };
}

function engineConfig(value: unknown): EngineConfig {
  const o = record(value, 'engine');
  const dispatch = o.dispatch;
  if (!(DISPATCH_MODES as readonly unknown[]).includes(dispatch)) {
    throw new RankConfigError(`engine.dispatch must be one of ${DISPATCH_MODES.join(', ')}, got ${show(dispatch)}`);
  }
  const seed = o.randomWeightsSeed;
  const traceFile = o.traceFile;
  if (traceFile !== null && (typeof traceFile !== 'string' || traceFile === '')) {
    throw new RankConfigError(`engine.traceFile must be a file name or null, got ${show(traceFile)}`);
  }
  return {
    schedule: schedule(o.schedule),
    expertGroups: positiveInt(o.expertGroups, 'engine.expertGroups'),
    dispatch: dispatch as DispatchMode,
    randomWeightsSeed: seed === null ? null : nonNegativeInt(seed, 'engine.randomWeightsSeed'),
    traceFile,
    checkWeights: flag(o.checkWeights, 'engine.checkWeights'),
    checkLayers: flag(o.checkLayers, 'engine.checkLayers'),
  };
}

/** An optional boolean: absent is false. */
function flag(value: unknown, what: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw new RankConfigError(`${what} must be true or false, got ${show(value)}`);
  return value;
}

/** The schedule as parseMoeSchedule makes it from its own text: any other shape is refused. */
function schedule(value: unknown): MoeSchedule {
  const o = record(value, 'engine.schedule');
  let parsed: MoeSchedule;
  try {
    parsed = parseMoeSchedule(formatMoeSchedule(o as unknown as MoeSchedule));
  } catch (e) {
    throw new RankConfigError(`engine.schedule ${show(value)}: ${(e as Error).message}`);
  }
  if (JSON.stringify(sorted(parsed)) !== JSON.stringify(sorted(o)))
    throw new RankConfigError(`engine.schedule ${show(value)} is not a schedule`);
  return parsed;
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new RankConfigError(`${what} must be an object, got ${show(value)}`);
  return value as Record<string, unknown>;
}

function text(value: unknown, name: string): string {
  if (typeof value !== 'string') throw new RankConfigError(`${name} must be a string, got ${show(value)}`);
  return value;
}

function nonNegativeInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new RankConfigError(`${name} must be a non-negative integer, got ${show(value)}`);
  }
  return value;
}

function positiveInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1)
    throw new RankConfigError(`${name} must be a positive integer, got ${show(value)}`);
  return value;
}

function sorted(o: object): [string, unknown][] {
  return Object.entries(o).sort(([a], [b]) => a.localeCompare(b));
}

function show(value: unknown): string {
  return value === undefined ? 'nothing' : JSON.stringify(value);
}
