// The attention block of one layer: norm, q/k/v projections (+bias), per-head q/k norm, rotary,
// causal attention over the packed sequences, output projection, residual add into x.
import type { Stream, Tensor } from '../native/device';
import type { DType } from '../native/addonTypes';
import * as ops from '../native/ops';
import type { ModelSpec } from '../model/config';
import type { TensorScope } from '../native/scope';
import type { LayerWeights } from './weightTypes';

/** Where the packed tokens of a step sit: positions [T] i32, sequence starts [B+1] (device and host). */
export interface StepLayout {
  positions: Tensor;
  cuSeqlens: Tensor;
  cuSeqlensHost: number[];
}

export interface AttentionContext {
  stream: Stream;
  scope: TensorScope;
  spec: ModelSpec;
  actDtype: DType;
  layout: StepLayout;
  invFreq: Tensor;
  attentionScaling: number;
}

/** x[T,H] += Attention(RMSNorm(x)). */
export function attentionBlock(ctx: AttentionContext, w: LayerWeights, x: Tensor): void {
  const { stream: s, scope, spec } = ctx;
  const T = x.shape[0];
  const { numHeads: nq, numKvHeads: nkv, headDim: hd } = spec;
  const hn = scope.tensor(ctx.actDtype, x.shape);
  ops.rmsnorm(s, hn, x, w.inputNorm, spec.rmsNormEps);

  const q = scope.tensor(ctx.actDtype, [T, nq * hd]);
  const k = scope.tensor(ctx.actDtype, [T, nkv * hd]);
  const v = scope.tensor(ctx.actDtype, [T, nkv * hd]);
  ops.matmul(s, q, hn, w.q, w.qBias);
  ops.matmul(s, k, hn, w.k, w.kBias);
  ops.matmul(s, v, hn, w.v, w.vBias);
  if (w.qNorm && w.kNorm) {
    const qh = q.reshape([T * nq, hd]);
    const kh = k.reshape([T * nkv, hd]);
    ops.rmsnorm(s, qh, qh, w.qNorm, spec.rmsNormEps);
    ops.rmsnorm(s, kh, kh, w.kNorm, spec.rmsNormEps);
  }
  const q3 = q.reshape([T, nq, hd]);
  const k3 = k.reshape([T, nkv, hd]);
  ops.rope(s, q3, ctx.layout.positions, ctx.invFreq, ctx.attentionScaling);
  ops.rope(s, k3, ctx.layout.positions, ctx.invFreq, ctx.attentionScaling);

  const attn = scope.tensor(ctx.actDtype, [T, nq, hd]);
  ops.attention(s, attn, q3, k3, v.reshape([T, nkv, hd]), ctx.layout.cuSeqlens, ctx.layout.cuSeqlensHost, 1 / Math.sqrt(hd));
  const o = scope.tensor(ctx.actDtype, [T, spec.hiddenSize]);
  ops.matmul(s, o, attn.reshape([T, nq * hd]), w.o, w.oBias);
  ops.add(s, x, x, o);
}
