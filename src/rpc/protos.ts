// The eps.v1 protocols, loaded at run time with @grpc/proto-loader, and the TypeScript shapes of
// their messages as proto-loader hands them over (camelCase fields, 64-bit ints as numbers, bytes
// as Buffers, every field present).
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** proto/ sits two folders above this file both in src/cluster (ts-jest) and dist/cluster (build). */
export const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

let prefillPackage: protoLoader.PackageDefinition | undefined;
let rankPackage: protoLoader.PackageDefinition | undefined;

/** The public package alone: what server reflection describes (the internal services stay out of it). */
export function prefillPackageDefinition(): protoLoader.PackageDefinition {
  prefillPackage ??= protoLoader.loadSync('eps/v1/prefill.proto', LOADER_OPTIONS);
  return prefillPackage;
}

function rankPackageDefinition(): protoLoader.PackageDefinition {
  rankPackage ??= protoLoader.loadSync('eps/v1/rank.proto', LOADER_OPTIONS);
  return rankPackage;
}

function service(pkg: protoLoader.PackageDefinition, name: string): grpc.ServiceDefinition {
  const def = pkg[name];
  // Message and enum definitions carry a `format`; services are plain maps of methods.
  if (!def || 'format' in def) throw new Error(`${name} is not a service in the loaded protos`);
  return def as unknown as grpc.ServiceDefinition;
}

export const prefillService = (): grpc.ServiceDefinition => service(prefillPackageDefinition(), 'eps.v1.PrefillService');
export const coordinatorService = (): grpc.ServiceDefinition => service(rankPackageDefinition(), 'eps.v1.CoordinatorService');
export const rankService = (): grpc.ServiceDefinition => service(rankPackageDefinition(), 'eps.v1.RankService');

// ---- eps.v1.PrefillService -------------------------------------------------------------------

export interface TokenSequenceMsg {
  ids: number[];
}

export interface PrefillRequestMsg {
  sequences: TokenSequenceMsg[];
  texts: string[];
  topLogprobs: number;
  requestId: string;
}

export interface TokenLogprobMsg {
  token: number;
  logprob: number;
}

export interface SequenceResultMsg {
  nextToken: number;
  topLogprobs: TokenLogprobMsg[];
  tokenCount: number;
}

export interface PrefillResponseMsg {
  requestId: string;
  sequences: SequenceResultMsg[];
  queueMs: number;
  computeMs: number;
}

export interface ModelInfoMsg {
  name: string;
  modelType: string;
  vocabSize: number;
  maxSequenceTokens: number;
  worldSize: number;
  backend: string;
  hasTokenizer: boolean;
  maxTopLogprobs: number;
  numLayers: number;
  numExperts: number;
  expertsPerToken: number;
}

// ---- eps.v1.CoordinatorService / eps.v1.RankService ----------------------------------------

export interface JoinRequestMsg {
  rank: number;
  worldSize: number;
  nodeRank: number;
  localRank: number;
  host: string;
  port: number;
  backend: string;
  pid: number;
  hostname: string;
  commBootstrap: Buffer;
}

export interface PeerAddressMsg {
  rank: number;
  address: string;
}

export interface ClusterAssignmentMsg {
  rank: number;
  worldSize: number;
  peers: PeerAddressMsg[];
  commBootstrap: Buffer;
  clusterId: string;
}

export interface JoinEventMsg {
  assignment?: ClusterAssignmentMsg | null;
  event?: 'assignment';
}

export interface LoadRequestMsg {
  modelDir: string;
}

export interface LoadProgressMsg {
  loaded: number;
  total: number;
  done: boolean;
}

export interface StepSequenceMsg {
  ids: number[];
  topLogprobs: number;
}

export interface StepRequestMsg {
  stepId: number;
  sequences: StepSequenceMsg[];
}

export interface StepResponseMsg {
  stepId: number;
  results: SequenceResultMsg[];
  computeMs: number;
  /** Sequences of this rank's share whose logits were not finite (absent or empty: none). */
  nonfinite?: { index: number; message: string }[];
}

export type RankState = 'starting' | 'loading' | 'ready' | 'failed' | 'stopping';

export interface RankHealthMsg {
  state: RankState;
  rank: number;
  stepsDone: number;
  planCounts: Record<string, number>;
  /** Per MoE layer, counters since the rank loaded (absent from ranks that have not loaded). */
  moeLayers?: MoeLayerMetricsMsg[];
  stepMs?: number;
  /** How the rank's device memory was got and kept (absent before the rank opened its device). */
  deviceMemory?: DeviceMemoryMsg;
}

/** eps.v1.DeviceMemory (the native device's MemoryCounters). */
export interface DeviceMemoryMsg {
  allocations: number;
  allocatedBytes: number;
  allocateMs: number;
  outOfMemoryFlushes: number;
  reservedBytes: number;
  cachedBytes: number;
}

export interface MoeLayerMetricsMsg {
  layer: number;
  steps: number;
  hostSyncMs: number;
  allToAllBytes: number;
  expertTokens: number[];
}

export interface ClusterMetricsMsg {
  ranks: RankHealthMsg[];
}

export interface ShutdownRequestMsg {
  reason: string;
  failed: boolean;
}

export interface DataFrameMsg {
  fromRank: number;
  collective: number;
  chunk: number;
  chunks: number;
  data: Buffer;
  clusterId: string;
}

export interface ExchangeSummaryMsg {
  frames: number;
}
