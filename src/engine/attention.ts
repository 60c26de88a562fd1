// The attention block of one layer: norm, q/k/v projections (+bias), per-head q/k norm, rotary,
// causal attention over the packed sequences, output projection, residual add into x.
import type { Stream, Tensor } from '../native/device';
import type { DType } from '../native/addonTypes';
import * as ops from '../native/ops';
import type { ModelSpec } from '../model/config';
import type { TensorScope } from '../native/scope';
import type { LayerWeights } from './weightTypes';
import { modelNorm } from './norm';
import { traced, type OpSpan } from '../moe/exec/spans';
import { projection } from './projection';

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
  /** When tracing: the attention core (the `attention` op) and the projections and norms around it become spans of their own. */
  onSpan?: (span: OpSpan) => void;
}

/**
 * Attention(Norm(x)) [T,H], for the caller to add into x (with the post-attention norm: forward.ts). With `residual`
 * (the previous layer's MLP output), x += residual first, in the input norm's pass.
 */
export function attentionBlock(ctx: AttentionContext, w: LayerWeights, x: Tensor, residual?: Tensor): Tensor {
  const { stream: s, scope, spec } = ctx;
  const T = x.shape[0];
  const { numHeads: nq, numKvHeads: nkv, headDim: hd } = spec;
  const hn = scope.tensor(ctx.actDtype, x.shape);
  const tokens = { tokens: T };
  traced(ctx.onSpan, s, 'input_norm', tokens, () => modelNorm(s, hn, x, w.inputNorm, spec, residual));
  if (w.mla) return mlaAttention(ctx, w, hn);
  const { q: wq, k: wk, v: wv } = w;
  if (!wq || !wk || !wv) throw new Error('attention: a layer without MLA needs q, k and v projections');

  const q = scope.tensor(ctx.actDtype, [T, nq * hd]);
  const k = scope.tensor(ctx.actDtype, [T, nkv * hd]);
  const v = scope.tensor(ctx.actDtype, [T, nkv * hd]);
  traced(ctx.onSpan, s, 'qkv_proj', tokens, () => {
    projection(s, q, hn, wq, w.qBias);
    projection(s, k, hn, wk, w.kBias);
    projection(s, v, hn, wv, w.vBias);
    if (spec.clipQkv !== undefined) {
      // DBRX clamps Wqkv's output before the split: the same as clamping q, k and v each.
      for (const t of [q, k, v]) ops.clamp(s, t, t, -spec.clipQkv, spec.clipQkv);
    }
  });
  const q3 = q.reshape([T, nq, hd]);
  const k3 = k.reshape([T, nkv, hd]);
  // Qwen3's per-head q/k RMSNorm rides in the rope op: one pass over q and k instead of two.
  const eps = spec.rmsNormEps;
  const [qNorm, kNorm] = w.qNorm && w.kNorm ? [{ weight: w.qNorm, eps }, { weight: w.kNorm, eps }] : [undefined, undefined];
  traced(ctx.onSpan, s, 'qk_norm_rope', tokens, () => {
    ops.rope(s, q3, ctx.layout.positions, ctx.invFreq, ctx.attentionScaling, qNorm);
    ops.rope(s, k3, ctx.layout.positions, ctx.invFreq, ctx.attentionScaling, kNorm);
  });

  const attn = scope.tensor(ctx.actDtype, [T, nq, hd]);
  const scale = spec.softmaxScale ?? 1 / Math.sqrt(hd);
  traced(ctx.onSpan, s, 'attention', { tokens: T, heads: nq }, () =>
    ops.attention(s, attn, q3, k3, v.reshape([T, nkv, hd]), ctx.layout.cuSeqlens, ctx.layout.cuSeqlensHost, scale),
  );
  const o = scope.tensor(ctx.actDtype, [T, spec.hiddenSize]);
  traced(ctx.onSpan, s, 'o_proj', tokens, () => projection(s, o, attn.reshape([T, nq * hd]), w.o, w.oBias));
  return o;
}

/**
 * Multi-head latent attention (DeepSeek), keys and values expanded from the latent (docs/ARCHITECTURE.md says
 * why for prefill). Heads are laid out [rope | nope] (engine/weightTypes.ts MlaWeights), so the rope op
 * rotates the first qk_rope_head_dim dims of q's heads and of the one shared rope key:
 *   q = q_proj(h) | q_b_proj(rmsnorm(q_a_proj(h)))        [T, nq, rope + nope]
 *   [latent | kpe] = kv_a_proj_with_mqa(h)                [T, r_kv + rope]
 *   kNope, v = kv_b_proj(rmsnorm(latent))                  [T, nq, nope], [T, nq, v] (two GEMMs over kvB's row blocks)
 *   k[t, h] = [rope(kpe[t]) | kNope[t, h]]  (the attention op's kShared: never assembled here)
 * The values and the keys' nope parts come out of their GEMMs in the layout the attention op reads.
 */
function mlaAttention(ctx: AttentionContext, w: LayerWeights, hn: Tensor): Tensor {
  const { stream: s, scope, spec, actDtype } = ctx;
  const m = w.mla!;
  const mla = spec.mla!;
  const T = hn.shape[0];
  const nq = spec.numHeads;
  const rope = mla.qkRopeHeadDim;
  const nope = mla.qkNopeHeadDim;
  const qk = rope + nope;
  const vd = mla.vHeadDim;
  const r = mla.kvLoraRank;
  const tokens = { tokens: T };
  const q = scope.tensor(actDtype, [T, nq * qk]);
  const kva = scope.tensor(actDtype, [T, r + rope]);
  const latent = scope.tensor(actDtype, [T, r]);
  const kpe = scope.tensor(actDtype, [T, rope]);
  const kNope = scope.tensor(actDtype, [T * nq, nope]);
  const v = scope.tensor(actDtype, [T * nq, vd]);
  // The spans match the other families' where the work matches: projections (here with the latent's norm and the
  // expansion from it), rotary, attention. Inside qkv_proj, spans of its three parts (a trace's summary lists them
  // beside it).
  traced(ctx.onSpan, s, 'qkv_proj', tokens, () => {
    traced(ctx.onSpan, s, 'mla_q', tokens, () => {
      if (m.q) {
        projection(s, q, hn, m.q);
      } else {
        const qa = scope.tensor(actDtype, [T, mla.qLoraRank!]);
        projection(s, qa, hn, m.qA!, m.qABias);
        ops.rmsnorm(s, qa, qa, m.qANorm!, 1e-6);
        projection(s, q, qa, m.qB!);
      }
    });
    traced(ctx.onSpan, s, 'mla_kv_a', tokens, () => {
      projection(s, kva, hn, m.kvA, m.kvABias);
      ops.copyCols(s, latent, kva, 0, 0, r);
      ops.rmsnorm(s, latent, latent, m.kvANorm, 1e-6);
      ops.copyCols(s, kpe, kva, 0, r, rope);
    });
    traced(ctx.onSpan, s, 'mla_kv_b', tokens, () => {
      projection(s, kNope.reshape([T, nq * nope]), latent, m.kvB.rows(0, nq * nope));
      projection(s, v.reshape([T, nq * vd]), latent, m.kvB.rows(nq * nope, nq * vd));
    });
  });
  const q3 = q.reshape([T, nq, qk]);
  traced(ctx.onSpan, s, 'qk_norm_rope', tokens, () => {
    ops.rope(s, q3, ctx.layout.positions, ctx.invFreq, ctx.attentionScaling);
    ops.rope(s, kpe.reshape([T, 1, rope]), ctx.layout.positions, ctx.invFreq, ctx.attentionScaling);
  });
  // The shared rope key goes to the attention op as it is: each head's key is [kpe | kNope[h]] there, never
  // assembled here ([T, nq, qk] written and read again, ~0.2 ms a layer at 16K tokens x 16 heads on an H100).
  const attn = scope.tensor(actDtype, [T, nq, vd]);
  const scale = spec.softmaxScale ?? 1 / Math.sqrt(qk);
  traced(ctx.onSpan, s, 'attention', { tokens: T, heads: nq }, () =>
    ops.attention(s, attn, q3, kNope.reshape([T, nq, nope]), v.reshape([T, nq, vd]), ctx.layout.cuSeqlens, ctx.layout.cuSeqlensHost, scale, kpe),
  );
  const o = scope.tensor(actDtype, [T, spec.hiddenSize]);
  traced(ctx.onSpan, s, 'o_proj', tokens, () => projection(s, o, attn.reshape([T, nq * vd]), w.o, w.oBias));
  return o;
}
