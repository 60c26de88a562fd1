// The weights of one rank, on its device. Attention and dense parts are replicated on every rank;
// each MoE layer holds only this rank's experts (see moe/placement.ts).
import type { Tensor } from '../native/device';
import type { MlpWeights, MoeWeights } from '../moe/exec/weights';

export type { MlpWeights, MoeWeights };

export interface LayerWeights {
  inputNorm: Tensor;
  postNorm: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
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
    if (l.mlp.kind === 'dense') all.push(l.mlp.dense.gateUp, l.mlp.dense.down);
    else {
      const m = l.mlp.moe;
      all.push(m.router, m.experts.gateUp, m.experts.down, m.shared?.gateUp, m.shared?.down, m.sharedGate);
    }
  }
  for (const t of all) t?.dispose();
}
