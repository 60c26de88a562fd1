// The model's norm over rows of w: RMSNorm, or LayerNorm without bias where the spec says so (DBRX).
import type { Stream, Tensor } from '../native/device';
import * as ops from '../native/ops';
import type { ModelSpec } from '../model/config';

/** out = norm(x) * w, eps spec.rmsNormEps (the model's norm eps, whichever norm it is); out may be x. */
export function modelNorm(s: Stream, out: Tensor, x: Tensor, w: Tensor, spec: Pick<ModelSpec, 'norm' | 'rmsNormEps'>): void {
  if (spec.norm === 'layernorm') ops.layernorm(s, out, x, w, spec.rmsNormEps);
  else ops.rmsnorm(s, out, x, w, spec.rmsNormEps);
}
