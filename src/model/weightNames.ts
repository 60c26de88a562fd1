// Where each weight lives in a Hugging Face checkpoint, per family and per expert layout.
//
// Expert layouts (verified against transformers' src/transformers/conversion_mapping.py and
// models/mixtral/modeling_mixtral.py, transformers 5):
//   per_expert (transformers 4, and what transformers 5's save_pretrained writes by default, since it
//   reverts the conversion on save - save_original_format=True):
//     Mixtral: model.layers.L.block_sparse_moe.gate.weight [E, H]
//              model.layers.L.block_sparse_moe.experts.N.{w1 = gate, w3 = up}.weight [I, H], w2 = down [H, I]
//     Qwen:    model.layers.L.mlp.gate.weight [E, H]
//              model.layers.L.mlp.experts.N.{gate_proj, up_proj}.weight [I, H], down_proj.weight [H, I]
//   fused (transformers 5 modules as they are, e.g. save_pretrained(save_original_format=False)):
//     model.layers.L.mlp.gate.weight [E, H]                    (Mixtral: renamed from block_sparse_moe.gate)
//     model.layers.L.mlp.experts.gate_up_proj [E, 2I, H]       (no ".weight" suffix: an nn.Parameter)
//     model.layers.L.mlp.experts.down_proj    [E, H, I]
//   The converter stacks experts along dim 0 (MergeModulelist(dim=0)) and then concatenates
//   [gate; up] along dim 1 (Concatenate(dim=1)); MixtralExperts.forward does
//   `gate, up = linear(x, gate_up_proj[e]).chunk(2, dim=-1)`: the first I rows are gate, the next I
//   are up, not interleaved. So gate_up_proj[e] is exactly the [2I, H] "gate rows then up rows" the
//   engine's swiglu wants, and down_proj[e] is the Linear weight [H, I].
import type { ModelSpec } from './config';

export type ExpertLayout = 'per_expert' | 'fused';

export const EMBED = 'model.embed_tokens.weight';
export const FINAL_NORM = 'model.norm.weight';
export const LM_HEAD = 'lm_head.weight';

const layer = (l: number): string => `model.layers.${l}.`;

export const layerNames = {
  inputNorm: (l: number) => `${layer(l)}input_layernorm.weight`,
  postAttentionNorm: (l: number) => `${layer(l)}post_attention_layernorm.weight`,
  proj: (l: number, p: 'q' | 'k' | 'v' | 'o') => `${layer(l)}self_attn.${p}_proj.weight`,
  projBias: (l: number, p: 'q' | 'k' | 'v' | 'o') => `${layer(l)}self_attn.${p}_proj.bias`,
  qNorm: (l: number) => `${layer(l)}self_attn.q_norm.weight`,
  kNorm: (l: number) => `${layer(l)}self_attn.k_norm.weight`,
  denseMlp: (l: number, p: 'gate' | 'up' | 'down') => `${layer(l)}mlp.${p}_proj.weight`,
  sharedExpert: (l: number, p: 'gate' | 'up' | 'down') => `${layer(l)}mlp.shared_expert.${p}_proj.weight`,
  /** DeepSeek's shared experts: one MLP (moe_intermediate_size * n_shared_experts wide), no gate. */
  sharedExperts: (l: number, p: 'gate' | 'up' | 'down') => `${layer(l)}mlp.shared_experts.${p}_proj.weight`,
  /** DeepSeek-V3's router bias for choosing (a persistent buffer of DeepseekV3TopkRouter). */
  routerBias: (l: number) => `${layer(l)}mlp.gate.e_score_correction_bias`,
  /** Multi-head latent attention (DeepSeek): self_attn.<name>.weight / .bias. */
  mla: (l: number, name: MlaWeightName, what: 'weight' | 'bias' = 'weight') => `${layer(l)}self_attn.${name}.${what}`,
  sharedExpertGate: (l: number) => `${layer(l)}mlp.shared_expert_gate.weight`,
};

/**
 * DBRX (families/dbrx.ts) names, as DbrxForCausalLM holds them (base_model_prefix "transformer"): Wqkv is q, k
 * and v rows stacked [H + 2 * nkv * hd, H]; the experts are fused [E * I, H] (expert e's rows [e*I, (e+1)*I)),
 * w1 the gate and v1 the up projection as Linear weights, w2 the down projection transposed.
 */
export const dbrxNames = {
  embed: 'transformer.wte.weight',
  finalNorm: 'transformer.norm_f.weight',
  norm1: (l: number) => `transformer.blocks.${l}.norm_attn_norm.norm_1.weight`,
  norm2: (l: number) => `transformer.blocks.${l}.norm_attn_norm.norm_2.weight`,
  wqkv: (l: number) => `transformer.blocks.${l}.norm_attn_norm.attn.Wqkv.weight`,
  outProj: (l: number) => `transformer.blocks.${l}.norm_attn_norm.attn.out_proj.weight`,
  router: (l: number) => `transformer.blocks.${l}.ffn.router.layer.weight`,
  experts: (l: number, p: 'w1' | 'v1' | 'w2') => `transformer.blocks.${l}.ffn.experts.mlp.${p}`,
};

export type MlaWeightName = 'q_proj' | 'q_a_proj' | 'q_a_layernorm' | 'q_b_proj' | 'kv_a_proj_with_mqa' | 'kv_a_layernorm' | 'kv_b_proj' | 'o_proj';

/** The shared expert's gate/up/down name of the family (Qwen2-MoE: shared_expert, DeepSeek: shared_experts). */
export function sharedExpertName(spec: Pick<ModelSpec, 'family'>, l: number, p: 'gate' | 'up' | 'down'): string {
  return spec.family === 'deepseek_v2' || spec.family === 'deepseek_v3' ? layerNames.sharedExperts(l, p) : layerNames.sharedExpert(l, p);
}

/** Names to try, in order, for the router gate [E, H]. */
export function routerNames(spec: Pick<ModelSpec, 'family'>, l: number): string[] {
  return spec.family === 'mixtral'
    ? [`${layer(l)}block_sparse_moe.gate.weight`, `${layer(l)}mlp.gate.weight`]
    : [`${layer(l)}mlp.gate.weight`];
}

export interface PerExpertNames {
  gate: string;
  up: string;
  down: string;
}

/** Candidate per-expert names (the first is the one transformers writes). */
export function perExpertNames(spec: Pick<ModelSpec, 'family'>, l: number, e: number): PerExpertNames[] {
  if (spec.family === 'mixtral') {
    return ['block_sparse_moe', 'mlp'].map((block) => {
      const p = `${layer(l)}${block}.experts.${e}.`;
      return { gate: `${p}w1.weight`, up: `${p}w3.weight`, down: `${p}w2.weight` };
    });
  }
  const p = `${layer(l)}mlp.experts.${e}.`;
  return [{ gate: `${p}gate_proj.weight`, up: `${p}up_proj.weight`, down: `${p}down_proj.weight` }];
}

export interface FusedExpertNames {
  gateUp: string;
  down: string;
}

export function fusedExpertNames(l: number): FusedExpertNames {
  return { gateUp: `${layer(l)}mlp.experts.gate_up_proj`, down: `${layer(l)}mlp.experts.down_proj` };
}

/** What a piece of a tensor is, for make-model's initialiser. */
export type WeightRole =
  'embed' | 'lm_head' | 'norm' | 'q' | 'k' | 'v' | 'o' | 'qkv_bias' | 'o_bias' | 'router' | 'gate' | 'up' | 'down' | 'shared_gate';

/**
 * A contiguous run of a tensor's elements with one meaning. A fused gate_up tensor is E x [gate, up]
 * pieces; make-model draws each piece from its own key, so fused and per-expert checkpoints made
 * with the same seed hold the same numbers.
 */
export interface TensorPiece {
  /** Stable identity of the values, independent of layout (e.g. "layers.3.experts.5.gate"). */
  key: string;
  role: WeightRole;
  numel: number;
  /** Input width (fan-in) of the Linear this piece belongs to; 0 for vectors. */
  fanIn: number;
}

export interface PlannedTensor {
  name: string;
  shape: number[];
  pieces: TensorPiece[];
}

function plain(name: string, shape: number[], key: string, role: WeightRole, fanIn: number): PlannedTensor {
  return { name, shape, pieces: [{ key, role, numel: shape.reduce((a, b) => a * b, 1), fanIn }] };
}

/** Every tensor of a checkpoint of `spec`, in the order save_pretrained would list them. */
export function checkpointTensors(spec: ModelSpec, layout: ExpertLayout): PlannedTensor[] {
  const { hiddenSize: H, vocabSize: V, headDim: hd, numHeads: nh, numKvHeads: nkv } = spec;
  if (spec.family === 'dbrx') return dbrxCheckpointTensors(spec);
  const out: PlannedTensor[] = [plain(EMBED, [V, H], 'embed', 'embed', H)];
  for (let l = 0; l < spec.numLayers; l++) {
    const k = `layers.${l}.`;
    out.push(plain(layerNames.inputNorm(l), [H], `${k}input_norm`, 'norm', 0));
    const projRows = { q: nh * hd, k: nkv * hd, v: nkv * hd } as const;
    for (const p of ['q', 'k', 'v'] as const) {
      out.push(plain(layerNames.proj(l, p), [projRows[p], H], `${k}${p}`, p, H));
      if (spec.attentionBias) out.push(plain(layerNames.projBias(l, p), [projRows[p]], `${k}${p}_bias`, 'qkv_bias', 0));
    }
    out.push(plain(layerNames.proj(l, 'o'), [H, nh * hd], `${k}o`, 'o', nh * hd));
    if (spec.attentionOutputBias) out.push(plain(layerNames.projBias(l, 'o'), [H], `${k}o_bias`, 'o_bias', 0));
    if (spec.qkNorm) {
      out.push(plain(layerNames.qNorm(l), [hd], `${k}q_norm`, 'norm', 0));
      out.push(plain(layerNames.kNorm(l), [hd], `${k}k_norm`, 'norm', 0));
    }
    out.push(plain(layerNames.postAttentionNorm(l), [H], `${k}post_norm`, 'norm', 0));
    if (spec.layers[l].mlp === 'dense') {
      const I = spec.denseIntermediate;
      out.push(plain(layerNames.denseMlp(l, 'gate'), [I, H], `${k}mlp.gate`, 'gate', H));
      out.push(plain(layerNames.denseMlp(l, 'up'), [I, H], `${k}mlp.up`, 'up', H));
      out.push(plain(layerNames.denseMlp(l, 'down'), [H, I], `${k}mlp.down`, 'down', I));
      continue;
    }
    const { numExperts: E, expertIntermediate: I, sharedIntermediate: Is } = spec.moe;
    const routerName = layout === 'fused' ? `model.layers.${l}.mlp.gate.weight` : routerNames(spec, l)[0];
    out.push(plain(routerName, [E, H], `${k}router`, 'router', H));
    if (layout === 'per_expert') {
      for (let e = 0; e < E; e++) {
        const n = perExpertNames(spec, l, e)[0];
        const ek = `${k}experts.${e}.`;
        out.push(plain(n.gate, [I, H], `${ek}gate`, 'gate', H));
        out.push(plain(n.up, [I, H], `${ek}up`, 'up', H));
        out.push(plain(n.down, [H, I], `${ek}down`, 'down', I));
      }
    } else {
      const n = fusedExpertNames(l);
      const gateUp: TensorPiece[] = [];
      const down: TensorPiece[] = [];
      for (let e = 0; e < E; e++) {
        const ek = `${k}experts.${e}.`;
        gateUp.push({ key: `${ek}gate`, role: 'gate', numel: I * H, fanIn: H });
        gateUp.push({ key: `${ek}up`, role: 'up', numel: I * H, fanIn: H });
        down.push({ key: `${ek}down`, role: 'down', numel: H * I, fanIn: I });
      }
      out.push({ name: n.gateUp, shape: [E, 2 * I, H], pieces: gateUp });
      out.push({ name: n.down, shape: [E, H, I], pieces: down });
    }
    if (Is > 0) {
      out.push(plain(sharedExpertName(spec, l, 'gate'), [Is, H], `${k}shared.gate`, 'gate', H));
      out.push(plain(sharedExpertName(spec, l, 'up'), [Is, H], `${k}shared.up`, 'up', H));
      out.push(plain(sharedExpertName(spec, l, 'down'), [H, Is], `${k}shared.down`, 'down', Is));
    }
    if (spec.moe.sharedGate) {
      out.push(plain(layerNames.sharedExpertGate(l), [1, H], `${k}shared_gate`, 'shared_gate', H));
    }
  }
  out.push(plain(FINAL_NORM, [H], 'final_norm', 'norm', 0));
  if (!spec.tieWordEmbeddings) out.push(plain(LM_HEAD, [V, H], 'lm_head', 'lm_head', H));
  return out;
}

/** DBRX's tensors (dbrxNames), in DbrxForCausalLM's order; the piece keys are the other families'. */
function dbrxCheckpointTensors(spec: ModelSpec): PlannedTensor[] {
  const { hiddenSize: H, vocabSize: V, headDim: hd, numHeads: nh, numKvHeads: nkv } = spec;
  const { numExperts: E, expertIntermediate: I } = spec.moe;
  const out: PlannedTensor[] = [plain(dbrxNames.embed, [V, H], 'embed', 'embed', H)];
  for (let l = 0; l < spec.numLayers; l++) {
    const k = `layers.${l}.`;
    out.push(plain(dbrxNames.norm1(l), [H], `${k}input_norm`, 'norm', 0));
    const qkv: TensorPiece[] = [
      { key: `${k}q`, role: 'q', numel: nh * hd * H, fanIn: H },
      { key: `${k}k`, role: 'k', numel: nkv * hd * H, fanIn: H },
      { key: `${k}v`, role: 'v', numel: nkv * hd * H, fanIn: H },
    ];
    out.push({ name: dbrxNames.wqkv(l), shape: [(nh + 2 * nkv) * hd, H], pieces: qkv });
    out.push(plain(dbrxNames.outProj(l), [H, nh * hd], `${k}o`, 'o', nh * hd));
    out.push(plain(dbrxNames.norm2(l), [H], `${k}post_norm`, 'norm', 0));
    out.push(plain(dbrxNames.router(l), [E, H], `${k}router`, 'router', H));
    const roles = { w1: 'gate', v1: 'up', w2: 'down' } as const;
    for (const p of ['w1', 'v1', 'w2'] as const) {
      const pieces: TensorPiece[] = [];
      for (let e = 0; e < E; e++) {
        pieces.push({ key: `${k}experts.${e}.${roles[p]}`, role: roles[p], numel: I * H, fanIn: p === 'w2' ? I : H });
      }
      out.push({ name: dbrxNames.experts(l, p), shape: [E * I, H], pieces });
    }
  }
  out.push(plain(dbrxNames.finalNorm, [H], 'final_norm', 'norm', 0));
  out.push(plain(LM_HEAD, [V, H], 'lm_head', 'lm_head', H));
  return out;
}
