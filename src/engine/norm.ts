// The model's norm over rows of w: RMSNorm, or LayerNorm without bias where the spec says so (DBRX).
import type { Stream, Tensor } from '../native/device';
import * as ops from '../native/ops';
import type { ModelSpec } from '../model/config';

/**
 * out = norm(x) * w, eps spec.rmsNormEps (the model's norm eps, whichever norm it is); out may be x. With `residual`,
 * x += residual first (the residual stream's add before the next norm: one pass for RMSNorm, native/ops.md), and out
 * must be another tensor. EPS_FUSED_RESIDUAL=0 runs the add as its own op, for measurement.
 */
export function modelNorm(
  s: Stream,
  out: Tensor,
  x: Tensor,
  w: Tensor,
  spec: Pick<ModelSpec, 'norm' | 'rmsNormEps'>,
  residual?: Tensor,
): void {
  if (spec.norm === 'layernorm' || process.env.EPS_FUSED_RESIDUAL === '0') {
    if (residual) ops.add(s, x, x, residual);
    if (spec.norm === 'layernorm') ops.layernorm(s, out, x, w, spec.rmsNormEps);
    else ops.rmsnorm(s, out, x, w, spec.rmsNormEps);
  } else {
    ops.rmsnorm(s, out, x, w, spec.rmsNormEps, residual);
  }
}
