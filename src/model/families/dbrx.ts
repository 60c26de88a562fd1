// DBRX (model_type dbrx) in config.json, read as transformers 5.17 reads it (configuration_dbrx.py,
// modeling_dbrx.py):
//   top level: d_model, n_heads, n_layers, max_seq_len, vocab_size; tie_word_embeddings must be false
//     (DbrxConfig.validate_architecture); the rotary embedding takes its theta from the top-level
//     rope_parameters (rope_scaling, rope_theta; default 10000) as every 5.17 model does. 5.17 no longer
//     reads attn_config.rope_theta for the rotation, but DbrxAttention still requires the field.
//   attn_config: kv_n_heads (GQA; head_dim = d_model / n_heads), clip_qkv (null: no clamp; else Wqkv's
//     output is clamped to [-clip_qkv, clip_qkv] before the q/k/v split).
//   ffn_config: ffn_hidden_size, moe_num_experts, moe_top_k, ffn_act_fn {"name": "silu"},
//     moe_normalize_expert_weights: the softmax top-k weights are divided by their p-norm (null: not at all).
//   Norms are nn.LayerNorm(d_model, bias=False) with torch's default eps 1e-5 (norm_1, norm_2, norm_f).
//   Every layer is a MoE layer; experts are fused: ffn.experts.mlp.{w1, v1, w2} [E * I, d_model], expert e's
//   rows [e*I, (e+1)*I); gate = x @ w1[e]^T, up = x @ v1[e]^T, down = (silu(gate) * up) @ w2[e] (w2[e] is
//   the transpose of a Linear weight).
// Fields that fix a tensor shape have no default (the config classes' defaults are not DBRX's shapes).
import type { ConfigFields } from '../configFields';
import { ModelError } from '../errors';

/** LayerNorm's eps: nn.LayerNorm's default, which DbrxNormAttentionNorm and norm_f keep. */
export const DBRX_NORM_EPS = 1e-5;

export interface DbrxParts {
  hiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  numLayers: number;
  vocabSize: number;
  maxPositions: number;
  /** Wqkv's output clamped to [-clipQkv, clipQkv]; absent: no clamp. */
  clipQkv?: number;
  numExperts: number;
  topK: number;
  expertIntermediate: number;
  /** true: weights divided by their sum (moe_normalize_expert_weights 1); false: null (kept as softmax gives them). */
  normTopkProb: boolean;
}

function unsupported(f: ConfigFields, what: string): ModelError {
  return new ModelError('CONFIG_UNSUPPORTED_FEATURE', `${f.source}: ${what}`, f.source);
}

/** A required nested object (attn_config, ffn_config). */
function section(f: ConfigFields, name: string): ConfigFields {
  const v = f.raw(name);
  if (v === undefined) throw f.missing(name, 'DBRX keeps its attention and FFN shapes there');
  const sub = f.object(name);
  if (!sub) throw f.invalid(name, 'a non-empty object');
  return sub;
}

export function parseDbrx(f: ConfigFields): DbrxParts {
  const hiddenSize = f.int('d_model');
  const numHeads = f.int('n_heads');
  if (hiddenSize % numHeads !== 0) throw f.invalid('n_heads', `a divisor of d_model (${hiddenSize})`);
  if (f.bool('tie_word_embeddings', false)) {
    throw f.invalid('tie_word_embeddings', 'false (transformers refuses tied embeddings for DBRX)');
  }
  const attn = section(f, 'attn_config');
  const numKvHeads = attn.int('kv_n_heads');
  if (numHeads % numKvHeads !== 0) throw attn.invalid('kv_n_heads', `a divisor of n_heads (${numHeads})`);
  // DbrxAttention reads it (and fails without it), though 5.17's rotation takes the top-level theta.
  if (attn.raw('rope_theta') === undefined) throw attn.missing('rope_theta', 'transformers 5.17\'s DbrxAttention requires it');
  attn.positive('rope_theta');
  const clip = attn.raw('clip_qkv') === undefined ? undefined : attn.positive('clip_qkv');

  const ffn = section(f, 'ffn_config');
  const act = ffn.object('ffn_act_fn');
  const actName = act ? act.optionalString('name') ?? 'silu' : 'silu';
  if (actName !== 'silu') throw unsupported(f, `ffn_config.ffn_act_fn.name "${actName}" is not supported (only silu)`);
  if (act && Object.keys(act.json).some((k) => k !== 'name')) {
    throw unsupported(f, 'ffn_config.ffn_act_fn with arguments besides "name" is not supported');
  }
  const numExperts = ffn.int('moe_num_experts');
  const topK = ffn.int('moe_top_k');
  if (topK > numExperts) throw ffn.invalid('moe_top_k', `<= moe_num_experts (${numExperts})`);
  const expertIntermediate = ffn.int('ffn_hidden_size');
  if (ffn.has('hidden_size') && ffn.int('hidden_size') !== hiddenSize) {
    throw ffn.invalid('hidden_size', `equal to d_model (${hiddenSize}), as DbrxConfig sets it`);
  }
  // absent: the class default 1.0; null: no normalisation.
  let normTopkProb = true;
  if ('moe_normalize_expert_weights' in ffn.json) {
    const p = ffn.raw('moe_normalize_expert_weights');
    if (p === undefined) normTopkProb = false;
    else if (ffn.positive('moe_normalize_expert_weights') !== 1) {
      throw unsupported(
        f,
        `ffn_config.moe_normalize_expert_weights=${JSON.stringify(p)} is not supported: 1 (divide by the sum, as DBRX does) or null (no normalisation)`,
      );
    }
  }
  return {
    hiddenSize,
    numHeads,
    numKvHeads,
    numLayers: f.int('n_layers'),
    vocabSize: f.int('vocab_size'),
    maxPositions: f.int('max_seq_len', { default: 2048 }),
    clipQkv: clip,
    numExperts,
    topK,
    expertIntermediate,
    normTopkProb,
  };
}
