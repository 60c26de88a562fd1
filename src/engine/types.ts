// What the cluster sees of the engine of one rank. The engine (rankEngine.ts) runs the same forward
// for one or many ranks; the cluster only feeds it steps.
import type { Communicator } from '../comm/communicator';
import type { BackendKind, MemoryCounters } from '../native/addonTypes';
import type { ModelSpec } from '../model/config';
import type { DispatchMode } from '../moe/schedule';
import type { NonFinite } from './nonFinite';

export interface RankEngineOptions {
  /** A Hugging Face checkpoint folder (config.json + safetensors). */
  modelDir: string;
  backend: BackendKind;
  deviceIndex: number;
  comm: Communicator;
  /**
   * Groups of each rank's experts (moe/placement.ts), the unit of the scheduler's expert axis
   * (`fixed:D:...:experts`, and auto's search); default 1 (token chunks only). Every rank must load
   * with the same value.
   */
  expertGroups?: number;
  /**
   * How the MoE dispatch sends rows: per (token, expert) pair, per (token, rank) (moe/exec/dedupDispatcher.ts),
   * or auto (default). Every rank must load with the same value.
   */
  dispatch?: DispatchMode;
  /** Called while weights load: tensors loaded so far, of total. */
  onLoadProgress?: (loaded: number, total: number) => void;
}

/** What one step gives back: per sequence the logits of its last position, and those that were not finite. */
export interface StepOutput {
  logits: Float32Array[];
  /** Sequences (indices into the step's) whose logits hold NaN or Inf; the step itself ran to the end. */
  nonfinite: NonFinite[];
}

/** What a rank's steps added up to since it loaded. */
export interface RankStats {
  stepMs: number;
  /** The device's memory counters when stats() was called (Device.memoryCounters). */
  deviceMemory?: MemoryCounters;
  moeLayers: { layer: number; steps: number; hostSyncMs: number; allToAllBytes: number; expertTokens: number[] }[];
}

export interface StepOptions {
  /** Called once the step's device work is all enqueued (ForwardOptions.onEnqueued): the next step may begin. */
  onEnqueued?: () => void;
}

export interface RankEngine {
  readonly spec: ModelSpec;
  readonly rank: number;
  readonly world: number;
  /**
   * One forward step. Every rank of the cluster calls step together (MoE layers exchange tokens);
   * a rank may have no sequences and still takes part. Returns, per sequence, the logits of its
   * last position (vocabSize floats), and which sequences' logits are not finite.
   */
  step(sequences: readonly (readonly number[])[], options?: StepOptions): Promise<StepOutput>;
  /** How many steps ran each MoE layer with each plan: "layer L: D=d kernel" -> count. */
  planCounts(): Record<string, number>;
  /** Counters of the steps run so far, per MoE layer (metrics). */
  stats(): RankStats;
  dispose(): Promise<void>;
}
