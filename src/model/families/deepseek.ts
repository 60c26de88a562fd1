// DeepSeek-V2 and DeepSeek-V3 (model_type deepseek_v2, deepseek_v3) in config.json, read as transformers
// 5.17 reads them (configuration_deepseek_v2.py / _v3.py, modeling_deepseek_v2.py / _v3.py):
//   attention: multi-head latent attention (MLA). q = q_proj(x), or q_b_proj(rmsnorm(q_a_proj(x))) with
//     q_lora_rank; kv_a_proj_with_mqa(x) = [latent (kv_lora_rank) | shared rope key (qk_rope_head_dim)];
//     kv_b_proj(rmsnorm(latent)) = per head [nope key (qk_nope_head_dim) | value (v_head_dim)]. RoPE on the
//     rope part only, over pairs (x0, x1), (x2, x3)... (V2: complex multiply; V3: rope_interleave, default
//     true) or rotate-half (V3 with rope_interleave false). Softmax scale qk_head_dim^-0.5, times
//     yarn_get_mscale(factor, mscale_all_dim)^2 when the rope type is not default and mscale_all_dim is set.
//     The rotary embedding's head_dim is qk_rope_head_dim (the config's __post_init__ sets head_dim to it).
//   routing: V2 softmax, topk_method greedy or group_limited_greedy (group score = its max; n_group,
//     topk_group), times routed_scaling_factor, never renormalised (5.17's DeepseekV2TopkRouter ignores
//     norm_topk_prob). V3 sigmoid, e_score_correction_bias added for choosing only, group score = sum of
//     its top two, the unbiased weights renormalised (norm_topk_prob) and scaled.
//   layers: layer l is MoE when l >= first_k_dense_replace (5.17 ignores moe_layer_freq, which we accept
//     only as 1); every MoE layer has shared experts, an MLP of moe_intermediate_size * n_shared_experts
//     without a gate.
// Defaults are the config classes'; fields that fix a tensor shape are required.
import type { ConfigFields } from '../configFields';
import { ModelError } from '../errors';
import type { RopeSpec } from '../ropeConfig';

export const DEEPSEEK_MODEL_TYPES = ['deepseek_v2', 'deepseek_v3'] as const;
export type DeepseekFamily = (typeof DEEPSEEK_MODEL_TYPES)[number];

export type RouterScoring = 'softmax' | 'sigmoid';
export type RouterMethod = 'greedy' | 'group_limited_greedy' | 'noaux_tc';

/** Multi-head latent attention's shapes and how its rope and softmax scale are computed. */
export interface MlaSpec {
  /** Rank of the query's low-rank path (q_a_proj, q_a_layernorm, q_b_proj); null: a plain q_proj. */
  qLoraRank: number | null;
  kvLoraRank: number;
  qkNopeHeadDim: number;
  qkRopeHeadDim: number;
  vHeadDim: number;
  /** The rope dims come as pairs (x0, x1), (x2, x3)...; false: rotate-half (x_i with x_{i + d/2}). */
  ropeInterleave: boolean;
  /** q_a_proj, kv_a_proj_with_mqa and o_proj have a bias (attention_bias). */
  attentionBias: boolean;
}

/** The routing a DeepSeek MoE layer adds to MoeSpec. */
export interface DeepseekRouting {
  scoring: RouterScoring;
  method: RouterMethod;
  groups: number;
  topkGroup: number;
  /** The router has e_score_correction_bias [E] (V3), added to the scores for choosing only. */
  scoreCorrectionBias: boolean;
}

export interface DeepseekParts {
  mla: MlaSpec;
  numExperts: number;
  topK: number;
  expertIntermediate: number;
  normTopkProb: boolean;
  routedScale: number;
  sharedIntermediate: number;
  routing: DeepseekRouting;
  /** Dense MLP layers: those below first_k_dense_replace. */
  firstDense: number;
  denseIntermediate: number;
}

const DEFAULTS: Record<DeepseekFamily, { routedScale: number; normTopkProb: boolean; firstDense: number; nShared: number }> = {
  deepseek_v2: { routedScale: 1, normTopkProb: false, firstDense: 0, nShared: 2 },
  deepseek_v3: { routedScale: 2.5, normTopkProb: true, firstDense: 3, nShared: 1 },
};

function unsupported(f: ConfigFields, what: string): ModelError {
  return new ModelError('CONFIG_UNSUPPORTED_FEATURE', `${f.source}: ${what}`, f.source);
}

/** q_lora_rank: a positive integer, or null for q_proj. Absent is an error (the classes default to 1536). */
function qLoraRank(f: ConfigFields): number | null {
  if (!(('q_lora_rank' in f.json) as boolean)) {
    throw f.missing('q_lora_rank', 'a positive integer for q_a_proj/q_b_proj, or null for q_proj');
  }
  return f.json['q_lora_rank'] === null ? null : f.int('q_lora_rank');
}

export function parseDeepseek(f: ConfigFields, family: DeepseekFamily, numHeads: number, numLayers: number): DeepseekParts {
  const d = DEFAULTS[family];
  if (f.has('num_key_value_heads') && f.int('num_key_value_heads') !== numHeads) {
    // MLA expands one latent into every head's key and value; transformers' repeat_kv would break otherwise.
    throw f.invalid('num_key_value_heads', `equal to num_attention_heads (${numHeads}) for MLA`);
  }
  if (f.bool('mlp_bias', false)) throw unsupported(f, 'mlp_bias=true is not supported');
  const ropeInterleave = family === 'deepseek_v2' ? true : f.bool('rope_interleave', true);
  const mla: MlaSpec = {
    qLoraRank: qLoraRank(f),
    kvLoraRank: f.int('kv_lora_rank'),
    qkNopeHeadDim: f.int('qk_nope_head_dim'),
    qkRopeHeadDim: f.int('qk_rope_head_dim'),
    vHeadDim: f.int('v_head_dim'),
    ropeInterleave,
    attentionBias: f.bool('attention_bias', false),
  };
  if (mla.qkRopeHeadDim % 2 !== 0) throw f.invalid('qk_rope_head_dim', 'an even integer (rope rotates pairs)');

  const numExperts = f.int('n_routed_experts');
  const topK = f.int('num_experts_per_tok');
  if (topK > numExperts) throw f.invalid('num_experts_per_tok', `<= n_routed_experts (${numExperts})`);

  let method: RouterMethod;
  if (family === 'deepseek_v3') {
    method = 'noaux_tc';
    if (f.has('topk_method') && f.optionalString('topk_method') !== 'noaux_tc') {
      throw f.invalid('topk_method', '"noaux_tc" (the only method transformers 5.17 runs for deepseek_v3)');
    }
  } else {
    const m = f.optionalString('topk_method') ?? 'greedy';
    if (m !== 'greedy' && m !== 'group_limited_greedy') throw f.invalid('topk_method', '"greedy" or "group_limited_greedy"');
    method = m;
  }
  let groups = 1;
  let topkGroup = 1;
  if (method !== 'greedy') {
    const v3 = family === 'deepseek_v3';
    const why = `topk_method ${method} needs it`;
    groups = v3 ? f.int('n_group', { default: 8 }) : f.int('n_group', { why });
    topkGroup = v3 ? f.int('topk_group', { default: 4 }) : f.int('topk_group', { why });
    if (numExperts % groups !== 0) throw f.invalid('n_group', `a divisor of n_routed_experts (${numExperts})`);
    if (topkGroup > groups) throw f.invalid('topk_group', `<= n_group (${groups})`);
    const per = numExperts / groups;
    if (method === 'noaux_tc' && per < 2) throw f.invalid('n_group', `at most n_routed_experts / 2 (${numExperts / 2}): a group's score sums its two best`);
    if (topkGroup * per < topK) {
      throw f.invalid('topk_group', `large enough that topk_group * n_routed_experts / n_group >= num_experts_per_tok (${topK})`);
    }
  }

  const freq = f.int('moe_layer_freq', { default: 1 });
  if (freq !== 1) {
    throw unsupported(f, `moe_layer_freq=${freq} is not supported: transformers 5.17 makes every layer from first_k_dense_replace on a MoE layer (it reads moe_layer_freq as 1)`);
  }
  const firstDense = f.int('first_k_dense_replace', { default: d.firstDense, min: 0 });
  if (firstDense > numLayers) throw f.invalid('first_k_dense_replace', `<= num_hidden_layers (${numLayers})`);
  const nShared = f.int('n_shared_experts', { min: 0, why: 'the shared experts\' MLP is moe_intermediate_size * n_shared_experts wide' });
  const expertIntermediate = f.int('moe_intermediate_size');
  return {
    mla,
    numExperts,
    topK,
    expertIntermediate,
    // 5.17's DeepseekV2TopkRouter never renormalises, whatever norm_topk_prob says (the field is still typed).
    normTopkProb: family === 'deepseek_v3' ? f.bool('norm_topk_prob', d.normTopkProb) : (f.bool('norm_topk_prob', false), false),
    routedScale: f.positive('routed_scaling_factor', { default: d.routedScale }),
    sharedIntermediate: expertIntermediate * nShared,
    routing: { scoring: family === 'deepseek_v3' ? 'sigmoid' : 'softmax', method, groups, topkGroup, scoreCorrectionBias: family === 'deepseek_v3' },
    firstDense,
    denseIntermediate: firstDense > 0 ? f.int('intermediate_size', { why: 'layers below first_k_dense_replace have a dense MLP' }) : 0,
  };
}

/** MLA's softmax scale: qk_head_dim^-0.5, times yarn_get_mscale(factor, mscale_all_dim)^2 for a non-default rope. */
export function mlaSoftmaxScale(mla: MlaSpec, rope: RopeSpec): number {
  let scale = 1 / Math.sqrt(mla.qkNopeHeadDim + mla.qkRopeHeadDim);
  if (rope.type !== 'default' && rope.mscaleAllDim) {
    const m = rope.factor <= 1 ? 1 : 0.1 * rope.mscaleAllDim * Math.log(rope.factor) + 1;
    scale *= m * m;
  }
  return scale;
}
