// The attention block's projections, out[T,N] = a[T,K] @ w[N,K]^T (+ bias): cuBLAS (ops.matmul). With
// EPS_PROJ_KERNEL=grouped_sm90, where the device runs that kernel and it takes the shape (bf16, no bias, N and K
// multiples of 8), the same product as one expert of expert_matmul instead: for measurement, to tell whether the
// in-step slowness of the first GEMM after each norm (BENCHMARKS.md, session 10: DeepSeek-V2-Lite's q_proj 875 us in
// the step, 267 alone) is cuBLAS's or any GEMM's there. Read at each call, so one process can compare.
import type { Stream, Tensor } from '../native/device';
import * as ops from '../native/ops';

export function projection(s: Stream, out: Tensor, a: Tensor, w: Tensor, bias?: Tensor): void {
  const [T, K] = a.shape;
  const N = w.shape[0];
  if (
    process.env.EPS_PROJ_KERNEL === 'grouped_sm90' &&
    !bias &&
    T > 0 &&
    a.dtype === w.dtype &&
    out.dtype === w.dtype &&
    ops.groupedSm90Takes(w.dtype, N, K) &&
    ops.expertKernelsOf(a.device).includes('grouped_sm90')
  ) {
    ops.expertMatmul(s, out, a, w.reshape([1, N, K]), [T], 'grouped_sm90');
    return;
  }
  ops.matmul(s, out, a, w, bias);
}
