import type { Stream, Tensor } from '../../native/device';
import type { DType } from '../../native/addonTypes';
import * as ops from '../../native/ops';
import type { TensorScope } from '../../native/scope';
import type { ExpertFfn } from './dispatcher';
import type { MlpWeights } from './weights';

/**
 * out[T,H] = down(silu(x @ gate^T) * (x @ up^T)), with gate and up stacked in one [2I, H] matrix: two cuBLAS GEMMs and
 * the swiglu op between them. With EPS_MLP_KERNEL=grouped_sm90, where the device runs that kernel and it
 * fuses the SwiGLU for these shapes, the same MLP as one expert of expertFfn (the [T, 2I] product never written);
 * opt-in until measured against cuBLAS (BENCHMARKS.md, session 9: DeepSeek-V2-Lite's shared expert 1012 us a layer).
 * It serves every dense SwiGLU MLP: the shared experts and the dense layers (forward.ts).
 */
export function swigluMlp(s: Stream, scope: TensorScope, actDtype: DType, w: MlpWeights, x: Tensor, out: Tensor): void {
  const T = x.shape[0];
  const I2 = w.gateUp.shape[0];
  const H = x.shape[1];
  if (
    process.env.EPS_MLP_KERNEL === 'grouped_sm90' &&
    ops.expertKernelsOf(x.device).includes('grouped_sm90') &&
    ops.groupedSm90FusesSwiglu(actDtype, I2, H) &&
    ops.groupedSm90Takes(actDtype, H, I2 / 2) &&
    w.gateUp.dtype === actDtype &&
    w.down.dtype === actDtype
  ) {
    const experts = { gateUp: w.gateUp.reshape([1, I2, H]), down: w.down.reshape([1, H, I2 / 2]) };
    expertFfn(scope, actDtype)(s, x, experts, [T], 'grouped_sm90', out);
    return;
  }
  const gateUp = scope.tensor(actDtype, [T, I2]);
  ops.matmul(s, gateUp, x, w.gateUp);
  const act = scope.tensor(actDtype, [T, I2 / 2]);
  ops.swiglu(s, act, gateUp);
  ops.matmul(s, out, act, w.down);
}

/**
 * The experts' SwiGLU FFN over rows in segments (segment i uses expert i % experts), as the dispatchers call it.
 * The gate/up product and its SwiGLU are one expert_matmul: grouped_sm90 applies the SwiGLU in its epilogue and
 * never writes the [R, 2I] product (the other kernels go through scratch memory: the same cost as two ops).
 * EPS_MOE_FUSED_SWIGLU=0 runs them as two ops, for measurement.
 */
export function expertFfn(scope: TensorScope, actDtype: DType): ExpertFfn {
  return (s, x, experts, segments, kernel, out) => {
    const R = x.shape[0];
    const I2 = experts.gateUp.shape[1];
    const act = scope.tensor(actDtype, [R, I2 / 2]);
    if (process.env.EPS_MOE_FUSED_SWIGLU === '0') {
      const gateUp = scope.tensor(actDtype, [R, I2]);
      ops.expertMatmul(s, gateUp, x, experts.gateUp, segments, kernel);
      ops.swiglu(s, act, gateUp);
    } else {
      ops.expertMatmul(s, act, x, experts.gateUp, segments, kernel, true);
    }
    ops.expertMatmul(s, out, act, experts.down, segments, kernel);
  };
}
