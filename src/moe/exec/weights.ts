// The weights one MoE layer runs with on one rank: the router over all experts, this rank's experts
// stacked, and the shared expert. The engine loads them (engine/weights.ts); the executor reads them.
import type { Tensor } from '../../native/device';
import type { ExpertRange } from '../placement';

/** A SwiGLU MLP: gateUp is [2I, H] (gate rows, then up rows), down is [H, I]. */
export interface MlpWeights {
  gateUp: Tensor;
  down: Tensor;
}

export interface MoeWeights {
  /** Router [E, H] over all experts, row v = virtual expert v (moe/placement.ts; the checkpoint's order with one group). */
  router: Tensor;
  /** DeepSeek-V3's e_score_correction_bias [E] f32, in the router's (virtual) order: added for choosing only. */
  routerBias?: Tensor;
  /** This rank's experts in local (checkpoint) order: gateUp [Elocal, 2I, H], down [Elocal, H, I]. */
  experts: MlpWeights;
  /** This rank's experts: checkpoint ids [first, first + count). */
  local: ExpertRange;
  /** Qwen2-MoE's shared expert and its sigmoid gate [1, H]. */
  shared?: MlpWeights;
  sharedGate?: Tensor;
}
