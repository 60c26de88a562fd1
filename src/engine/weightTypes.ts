// The weights of one rank, on its device. Attention and dense parts are replicated on every rank;
// each MoE layer holds only this rank's experts (see moe/placement.ts).
import type { Tensor } from '../native/device';
import type { MlpWeights, MoeWeights } from '../moe/exec/weights';

export type { MlpWeights, MoeWeights };

/**
 * Multi-head latent attention (DeepSeek). q (or qB) rows are reordered per head to [rope | nope], the rope
 * rows de-interleaved (even dims, then odd) where the model pairs them (x0, x1), (x2, x3)...; kvA's rope rows
 * likewise: the rope op then rotates the first qk_rope_head_dim dims of each head (rotate-half), which is
 * the interleaved rotation on the original order, and q.k is the same sum over a permuted head.
 */
export interface MlaWeights {
  /** q_proj [nq*qk, H], or the low-rank path: qA [r_q, H], qANorm [r_q], qB [nq*qk, r_q]. */
  q?: Tensor;
  qA?: Tensor;
  qABias?: Tensor;
  qANorm?: Tensor;
  qB?: Tensor;
  /**
   * kv_a_proj_with_mqa [r_kv + rope, H] and its norm [r_kv]; kv_b_proj [nq*(nope+v), r_kv] with its rows regrouped:
   * rows [0, nq*nope) every head's nope rows, rows [nq*nope, nq*(nope+v)) every head's v rows (weights.ts).
   */
  kvA: Tensor;
  kvABias?: Tensor;
  kvANorm: Tensor;
  kvB: Tensor;
}

export interface LayerWeights {
  inputNorm: Tensor;
  postNorm: Tensor;
  /** q/k/v projections (absent with MLA: see mla). */
  q?: Tensor;
  k?: Tensor;
  v?: Tensor;
  /** o_proj [H, nq*v_head_dim]. */
  o: Tensor;
  mla?: MlaWeights;
  qBias?: Tensor;
  kBias?: Tensor;
  vBias?: Tensor;
  oBias?: Tensor;
  qNorm?: Tensor;
  kNorm?: Tensor;
  mlp: { kind: 'dense'; dense: MlpWeights } | { kind: 'moe'; moe: MoeWeights };
}

export interface ModelWeights {
  embed: Tensor;
  finalNorm: Tensor;
  /** [V, H]; the embedding itself when tied. */
  lmHead: Tensor;
  /** RoPE inverse frequencies (f32) and the attention scaling of the rope type. */
  invFreq: Tensor;
  attentionScaling: number;
  layers: LayerWeights[];
  /** The expert groups the routers were ordered for (moe/placement.ts); 1: the checkpoint's order. */
  expertGroups: number;
}

export function disposeWeights(w: ModelWeights): void {
  const all: (Tensor | undefined)[] = [w.embed, w.finalNorm, w.invFreq];
  if (w.lmHead !== w.embed) all.push(w.lmHead);
  for (const l of w.layers) {
    all.push(l.inputNorm, l.postNorm, l.q, l.k, l.v, l.o, l.qBias, l.kBias, l.vBias, l.oBias, l.qNorm, l.kNorm);
    if (l.mla) all.push(...Object.values(l.mla));
    if (l.mlp.kind === 'dense') all.push(l.mlp.dense.gateUp, l.mlp.dense.down);
    else {
      const m = l.mlp.moe;
      all.push(m.router, m.routerBias, m.experts.gateUp, m.experts.down, m.shared?.gateUp, m.shared?.down, m.sharedGate);
    }
  }
  for (const t of all) t?.dispose();
}
