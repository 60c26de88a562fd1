// `eps-moe profile`: measures the EPS scheduler's cost model for a model's MoE layer shape on this
// machine and saves it in the cache folder, where ranks find it at start. With --ranks on the CPU the
// ranks share this process; on GPUs with more than one rank, `eps-moe launch` measures it at start
// (all ranks together, one process per GPU) the first time.
import * as path from 'path';
import { InProcessCommunicator } from '../comm/inProcessCommunicator';
import { LocalCommunicator } from '../comm/communicator';
import { defaultDType } from '../engine/rankEngine';
import { loadModelSpec } from '../model/config';
import { defaultCostModelDir, costModelKey } from '../moe/cost/costModelStore';
import { costModelKeyFor, moeLayerDims, obtainCostModel } from '../moe/cost/costModelCache';
import { defaultBackend, hasBackend } from '../native/addon';
import type { BackendKind } from '../native/addonTypes';
import { Device } from '../native/device';
import { CliError } from './errors';
import { ProgressView } from './progress';

export interface ProfileCliOptions {
  model: string;
  backend?: BackendKind;
  ranks?: number;
}

export async function profileCommand(o: ProfileCliOptions): Promise<void> {
  const backend = o.backend ?? defaultBackend();
  if (!hasBackend(backend)) throw new CliError(`backend '${backend}' is not available in this build`);
  const world = o.ranks ?? 1;
  if (backend === 'cuda' && world > 1) {
    throw new CliError('on GPUs a cost model of several ranks is measured by `eps-moe launch` at its first start (one process per GPU)');
  }
  const spec = await loadModelSpec(o.model);
  const shape = moeLayerDims(spec);
  const comms = world > 1 ? InProcessCommunicator.group(world) : [new LocalCommunicator()];
  const view = new ProgressView('profiling', 'measurements');
  const results = await Promise.all(
    comms.map((comm) => {
      const device = Device.open(backend, 0);
      return obtainCostModel({
        device,
        comm,
        dtype: defaultDType(backend),
        shape,
        onProgress: (p) => comm.rank === 0 && view.update(p.done, p.total, p.label),
      }).then((r) => ({ ...r, key: costModelKeyFor({ device, comm, dtype: defaultDType(backend), shape }) }));
    }),
  );
  view.stop();
  const { model, measured, key } = results[0];
  const file = path.join(defaultCostModelDir(), costModelKey(key));
  process.stdout.write(
    `${measured ? 'measured' : 'already cached'}: ${file} (${model.gemm.length} GEMM tables, ${model.allToAll.length} all-to-all curves)\n`,
  );
}
