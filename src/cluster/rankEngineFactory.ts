// How a rank process builds its engine: the options RankProcess gives at Load (model folder, device,
// communicator) plus the cluster's EngineConfig (rankConfig.ts), and, for the `auto` schedule on
// several ranks, the cost model the EPS scheduler plans with. Every rank obtains it together (from the
// cache folder when every rank has the same file, else measured now by all ranks and saved by rank 0),
// so every rank plans alike and their all-to-alls pair up. The model's config is read once, here.
import type { Logger } from '../rpc/log';
import { loadModelSpec, type ModelSpec } from '../model/config';
import { moeLayerDims, obtainCostModel } from '../moe/cost/costModelCache';
import type { CostModel } from '../moe/cost/costModel';
import { scheduleNeedsCostModel } from '../moe/schedule';
import { defaultDType, loadRankEngine } from '../engine/rankEngine';
import type { RankEngine, RankEngineOptions } from '../engine/types';
import { Device } from '../native/device';
import type { EngineConfig } from './rankConfig';

export function rankEngineFactory(engine: EngineConfig, logger: Logger): (opts: RankEngineOptions) => Promise<RankEngine> {
  return async (opts) => {
    const spec = await loadModelSpec(opts.modelDir);
    // auto, and fixed without a kernel, choose by the cost model: measured (or loaded) by all ranks at start.
    const costModel =
      scheduleNeedsCostModel(engine.schedule) && opts.comm.world > 1 ? await clusterCostModel(opts, spec, logger) : undefined;
    const random = engine.randomWeightsSeed !== null;
    return loadRankEngine({
      ...opts,
      // `eps-moe launch --random-weights`: the folder holds only config.json; weights are made on the device.
      modelDir: random ? undefined : opts.modelDir,
      spec,
      randomSeed: engine.randomWeightsSeed ?? undefined,
      schedule: engine.schedule,
      costModel,
      traceFile: engine.traceFile ?? undefined,
      expertGroups: engine.expertGroups,
      dispatch: engine.dispatch,
      checkWeights: engine.checkWeights,
      checkLayers: engine.checkLayers,
    });
  };
}

async function clusterCostModel(opts: RankEngineOptions, spec: ModelSpec, logger: Logger): Promise<CostModel> {
  const device = Device.open(opts.backend, opts.deviceIndex);
  try {
    const t0 = Date.now();
    const { model, measured } = await obtainCostModel({
      device,
      comm: opts.comm,
      dtype: defaultDType(opts.backend),
      shape: moeLayerDims(spec),
    });
    logger.info({ measured, ms: Date.now() - t0 }, measured ? 'cost model measured (saved for next time)' : 'cost model from the cache');
    return model;
  } finally {
    device.dispose();
  }
}
