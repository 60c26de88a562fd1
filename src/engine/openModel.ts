// One model on one device in this process: the programmatic twin of `eps-moe forward`. A checkpoint
// folder (or a config with seeded random weights), a backend, a MoE schedule; then forward() batches
// of token sequences to logits, as often as wanted, and dispose() when done.
import { LocalCommunicator } from '../comm/communicator';
import type { ModelSpec } from '../model/config';
import { hasBackend } from '../native/addon';
import type { BackendKind } from '../native/addonTypes';
import { parseMoeSchedule, type DispatchMode } from '../moe/schedule';
import { loadRankEngine } from './rankEngine';

export interface OpenModelOptions {
  /** A Hugging Face checkpoint folder; or, without one, `spec` with seeded random weights. */
  model?: string;
  spec?: ModelSpec;
  randomSeed?: number;
  /** Default: CUDA when the addon has it, else the CPU backend. */
  backend?: BackendKind;
  /** The device's index (default 0). */
  device?: number;
  /** auto | baseline | fixed:D[:grouped|dense][:tokens|experts] (default auto). */
  moeSchedule?: string;
  dispatch?: DispatchMode;
  expertGroups?: number;
  onLoadProgress?: (loaded: number, total: number) => void;
}

export interface OpenModel {
  readonly spec: ModelSpec;
  /** Per sequence: the next-token logits of its last position (vocabSize floats), or of every position with allLogits (row-major). */
  forward(sequences: readonly (readonly number[])[], options?: { allLogits?: boolean }): Promise<Float32Array[]>;
  dispose(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export async function openModel(opts: OpenModelOptions): Promise<OpenModel> {
  const backend = opts.backend ?? (hasBackend('cuda') ? 'cuda' : 'cpu');
  const engine = await loadRankEngine({
    modelDir: opts.model,
    spec: opts.spec,
    randomSeed: opts.randomSeed,
    backend,
    deviceIndex: opts.device ?? 0,
    comm: new LocalCommunicator(),
    schedule: parseMoeSchedule(opts.moeSchedule ?? 'auto'),
    dispatch: opts.dispatch,
    expertGroups: opts.expertGroups,
    onLoadProgress: opts.onLoadProgress,
  });
  const dispose = () => engine.dispose();
  return {
    spec: engine.spec,
    forward: async (sequences, options = {}) => (await engine.runner.forward(sequences, { allLogits: options.allLogits })).logits,
    dispose,
    [Symbol.asyncDispose]: dispose,
  };
}
