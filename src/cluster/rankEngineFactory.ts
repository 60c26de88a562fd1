// How a rank process builds its engine: createRankEngine's options plus the MoE schedule, and, for
// the `auto` schedule on several ranks, the cost model the EPS scheduler plans with. Every rank
// obtains it together (from the cache folder when every rank has the same file, else measured now
// by all ranks and saved by rank 0), so every rank plans alike and their all-to-alls pair up.
import type { Logger } from './log';
import { loadModelSpec } from '../model/config';
import { obtainCostModel } from '../moe/costModelCache';
import type { CostModel } from '../moe/costModel';
import { parseMoeSchedule, type MoeSchedule } from '../moe/schedule';
import { defaultDType, loadRankEngine } from '../engine/rankEngine';
import type { RankEngine, RankEngineOptions } from '../engine/types';
import { Device } from '../native/device';

export function rankEngineFactory(moeSchedule: string | undefined, logger: Logger): (opts: RankEngineOptions) => Promise<RankEngine> {
  const schedule: MoeSchedule = moeSchedule ? parseMoeSchedule(moeSchedule) : { kind: 'auto' };
  return async (opts) => {
    const costModel = schedule.kind === 'auto' && opts.comm.world > 1 ? await clusterCostModel(opts, logger) : undefined;
    // `eps-moe launch --random-weights`: the folder holds only config.json; weights are made on the device.
    const traceFile = process.env.EPS_TRACE_FILE || undefined; // `eps-moe launch --trace FILE`
    const seed = process.env.EPS_RANDOM_WEIGHTS;
    if (seed !== undefined) {
      const spec = await loadModelSpec(opts.modelDir);
      return loadRankEngine({ ...opts, modelDir: undefined, spec, randomSeed: Number(seed) || 0, schedule, costModel, traceFile });
    }
    return loadRankEngine({ ...opts, schedule, costModel, traceFile });
  };
}

async function clusterCostModel(opts: RankEngineOptions, logger: Logger): Promise<CostModel> {
  const spec = await loadModelSpec(opts.modelDir);
  const device = Device.open(opts.backend, opts.deviceIndex);
  try {
    const t0 = Date.now();
    const { model, measured } = await obtainCostModel({
      device,
      comm: opts.comm,
      dtype: defaultDType(opts.backend),
      shape: {
        hidden: spec.hiddenSize,
        expertIntermediate: spec.moe.expertIntermediate,
        sharedIntermediate: spec.moe.sharedIntermediate,
        numExperts: spec.moe.numExperts,
        topK: spec.moe.topK,
      },
    });
    logger.info({ measured, ms: Date.now() - t0 }, measured ? 'cost model measured (saved for next time)' : 'cost model from the cache');
    return model;
  } finally {
    device.dispose();
  }
}
