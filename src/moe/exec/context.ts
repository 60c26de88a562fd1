// What one MoE layer runs with on one rank: its streams, its tensor scope, the communicator, the
// routing settings, the expert layout and how to plan. The engine makes one per layer call.
import type { Communicator } from '../../comm/communicator';
import type { Stream } from '../../native/device';
import type { DType } from '../../native/addonTypes';
import type { TensorScope } from '../../native/scope';
import type { RouterSelection } from '../../native/ops';
import type { CostModel } from '../cost/costModel';
import type { ExpertLayout } from '../placement';
import type { DispatchMode, MoeSchedule } from '../schedule';
import type { OpSpan } from './spans';

export interface MoeRouting {
  numExperts: number;
  topK: number;
  normTopkProb: boolean;
  routedScale: number;
  expertIntermediate: number;
  sharedIntermediate: number;
  /** DeepSeek scoring and group-limited choice (the router op's); absent: softmax greedy. */
  selection?: RouterGroups;
}

/** How the router op scores and picks (ops.RouterSelection without the per-layer bias tensor). */
export type RouterGroups = Omit<RouterSelection, 'bias'>;

export interface MoeLayerContext {
  /** The compute stream: the layer's input is ready on it and its output will be. */
  compute: Stream;
  /** The communication stream (the compute stream itself when nothing may overlap). */
  comm: Stream;
  scope: TensorScope;
  communicator: Communicator;
  actDtype: DType;
  routing: MoeRouting;
  /** Every rank's experts and their groups; expert ids (router rows, topkIdx) are its virtual ids. */
  layout: ExpertLayout;
  schedule: MoeSchedule;
  costModel?: CostModel;
  /** Called with spans (start/end events per op) when tracing. */
  onSpan?: (span: OpSpan) => void;
  /** Called once per layer, after planning, with what the host saw of it (metrics). */
  onStats?: (stats: MoeLayerStats) => void;
  /**
   * How the dispatch sends rows: once per (token, expert) pair, once per (token, destination rank), or
   * (auto, the default) as the auto schedule's cost model predicts faster.
   */
  dispatch?: DispatchMode;
}

/** What one MoE layer's host sync saw (for metrics; no device reads beyond the sync itself). */
export interface MoeLayerStats {
  /** Milliseconds from enqueueing the counts' read to having every rank's counts and a plan (the layer's host sync). */
  hostSyncMs: number;
  /** Tokens routed to each expert (virtual ids), summed over every rank's micro-chunks. */
  expertTokens: number[];
}
