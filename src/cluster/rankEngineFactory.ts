// How a rank process builds its engine: createRankEngine's options plus the MoE schedule, the expert
// groups (EPS_EXPERT_GROUPS, set by `eps-moe launch --expert-groups G`), and, for
// the `auto` schedule on several ranks, the cost model the EPS scheduler plans with. Every rank
// obtains it together (from the cache folder when every rank has the same file, else measured now
// by all ranks and saved by rank 0), so every rank plans alike and their all-to-alls pair up.
import type { Logger } from '../rpc/log';
import { loadModelSpec } from '../model/config';
import { moeLayerDims, obtainCostModel } from '../moe/cost/costModelCache';
import type { CostModel } from '../moe/cost/costModel';
import { ExpertLayoutError, expertLayout } from '../moe/placement';
import { parseDispatchMode, parseMoeSchedule, scheduleNeedsCostModel, type DispatchMode, type MoeSchedule } from '../moe/schedule';
import { defaultDType, loadRankEngine } from '../engine/rankEngine';
import type { RankEngine, RankEngineOptions } from '../engine/types';
import { Device } from '../native/device';

export function rankEngineFactory(moeSchedule: string | undefined, logger: Logger): (opts: RankEngineOptions) => Promise<RankEngine> {
  const schedule: MoeSchedule = moeSchedule ? parseMoeSchedule(moeSchedule) : { kind: 'auto' };
  return async (opts) => {
    // `eps-moe launch --expert-groups G`: the launcher's environment, inherited. Checked against the
    // model before a cost model is measured, so a G the ranks cannot hold fails at once.
    const expertGroups = opts.expertGroups ?? expertGroupsFromEnv();
    if (expertGroups !== undefined) {
      const { moe } = await loadModelSpec(opts.modelDir);
      expertLayout(moe.numExperts, opts.comm.world, expertGroups);
    }
    // `eps-moe launch --dispatch MODE`: EPS_DISPATCH, inherited.
    const dispatch = opts.dispatch ?? dispatchFromEnv();
    // auto, and fixed without a kernel, choose by the cost model: measured (or loaded) by all ranks at start.
    const costModel = scheduleNeedsCostModel(schedule) && opts.comm.world > 1 ? await clusterCostModel(opts, logger) : undefined;
    // `eps-moe launch --random-weights`: the folder holds only config.json; weights are made on the device.
    const traceFile = process.env.EPS_TRACE_FILE || undefined; // `eps-moe launch --trace FILE`
    const seed = process.env.EPS_RANDOM_WEIGHTS;
    if (seed !== undefined) {
      const spec = await loadModelSpec(opts.modelDir);
      return loadRankEngine({
        ...opts,
        modelDir: undefined,
        spec,
        randomSeed: Number(seed) || 0,
        schedule,
        costModel,
        traceFile,
        expertGroups,
        dispatch,
      });
    }
    return loadRankEngine({ ...opts, schedule, costModel, traceFile, expertGroups, dispatch });
  };
}

/** EPS_EXPERT_GROUPS (set by `eps-moe launch --expert-groups G`), or undefined (one group). */
export function expertGroupsFromEnv(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const text = env.EPS_EXPERT_GROUPS;
  if (text === undefined || text === '') return undefined;
  const groups = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(groups) || groups < 1) throw new ExpertLayoutError(`EPS_EXPERT_GROUPS must be a positive integer, got "${text}"`);
  return groups;
}

/** EPS_DISPATCH (set by `eps-moe launch --dispatch MODE`), or undefined (auto). */
export function dispatchFromEnv(env: NodeJS.ProcessEnv = process.env): DispatchMode | undefined {
  const text = env.EPS_DISPATCH ?? '';
  return text.trim() === '' ? undefined : parseDispatchMode(text, 'EPS_DISPATCH');
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
      shape: moeLayerDims(spec),
    });
    logger.info({ measured, ms: Date.now() - t0 }, measured ? 'cost model measured (saved for next time)' : 'cost model from the cache');
    return model;
  } finally {
    device.dispose();
  }
}
