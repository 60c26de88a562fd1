// Gets every rank the same cost model for a MoE layer shape: from the cache folder when every rank
// has the same file, else measured now by all ranks together (the profiler gives every rank the
// same medians) and saved by rank 0. Ranks must agree, or they would plan different chunkings
// whose all-to-alls do not pair up.
import type { Communicator } from '../../comm/communicator';
import { addon } from '../../native/addon';
import type { DType } from '../../native/addonTypes';
import type { Device } from '../../native/device';
import type { ModelSpec } from '../../model/config';
import type { CostModel, CostModelKey, MoeLayerDims } from './costModel';
import { costModelFingerprint, defaultCostModelDir, loadCostModel, saveCostModel } from './costModelStore';
import { measureCostModel, type MeasureProgress } from './profiler';

/** A model's MoE layer dimensions, as cost models are keyed by them. */
export function moeLayerDims(spec: ModelSpec): MoeLayerDims {
  const { moe } = spec;
  return {
    hidden: spec.hiddenSize,
    expertIntermediate: moe.expertIntermediate,
    sharedIntermediate: moe.sharedIntermediate,
    numExperts: moe.numExperts,
    topK: moe.topK,
  };
}

export interface ObtainCostModelOptions {
  device: Device;
  comm: Communicator;
  dtype: DType;
  shape: MoeLayerDims;
  dir?: string;
  onProgress?: (p: MeasureProgress) => void;
}

export function costModelKeyFor(o: ObtainCostModelOptions): CostModelKey {
  return {
    device: o.device.name,
    backend: o.device.backend,
    dtype: o.dtype,
    ...o.shape,
    versions: addon().versions(),
    worlds: [o.comm.world],
  };
}

export async function obtainCostModel(o: ObtainCostModelOptions): Promise<{ model: CostModel; measured: boolean }> {
  const dir = o.dir ?? defaultCostModelDir();
  const key = costModelKeyFor(o);
  let cached: CostModel | undefined;
  try {
    cached = await loadCostModel(dir, key);
  } catch {
    cached = undefined; // a damaged file: measure again and overwrite it
  }
  const mine = cached ? costModelFingerprint(cached) | 0 : 0; // as the Int32Array carries it
  const all = o.comm.world > 1 ? await o.comm.allGather(Int32Array.of(mine)) : [Int32Array.of(mine)];
  if (cached && all.every((f) => f[0] === mine)) return { model: cached, measured: false };
  const model = await measureCostModel({
    device: o.device,
    comm: o.comm.world > 1 ? o.comm : undefined,
    dtype: o.dtype,
    ...o.shape,
    versions: key.versions,
    onProgress: o.onProgress,
  });
  if (o.comm.rank === 0) await saveCostModel(dir, model);
  return { model, measured: true };
}
