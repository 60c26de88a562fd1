// The programmatic API: require('eps-moe'). Start a cluster (its router in this process, one process
// per rank) and talk to it with a typed client; run a model in this process; read and make
// checkpoints. The README shows a short example.
export { startCluster, ClusterOptionError, DEFAULT_HOST, DEFAULT_PORT, type Cluster, type ClusterOptions } from './cluster/startCluster';
export { PrefillClient, type CallOptions, type HealthStatus } from './cluster/prefillClient';
export type { ClusterTuning } from './cluster/tuning';
export type { PrefillRequestMsg as PrefillRequest, PrefillResponseMsg as PrefillResponse } from './rpc/protos';
export { openModel, type OpenModel, type OpenModelOptions } from './engine/openModel';
export { loadModelSpec, parseModelConfig, SUPPORTED_MODEL_TYPES, type ModelSpec } from './model/config';
export { makeModel, presetConfig, type MakeModelOptions } from './model/makeModel';
export { listPresets } from './model/presets';
export { parseMoeSchedule, type DispatchMode, type MoeSchedule } from './moe/schedule';
export { planMoeLayer, type MoePlanInput } from './moe/plan/planner';
export type { MoePlan } from './moe/plan/plan';
export { defaultBackend, hasBackend } from './native/addon';
export type { BackendKind } from './native/addonTypes';
