// Model presets for make-model, as config.json objects in transformers 5 spelling (rope_parameters,
// dtype). The tiny ones are small enough for CPU tests; the real ones copy the shapes of the
// published config.json files (mistralai/Mixtral-8x7B-v0.1, Qwen/Qwen3-30B-A3B).
import type { JsonObject } from './configFields';

export interface Preset {
  name: string;
  description: string;
  config: JsonObject;
}

const tinyMixtral: JsonObject = {
  architectures: ['MixtralForCausalLM'],
  model_type: 'mixtral',
  vocab_size: 512,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: null,
  hidden_act: 'silu',
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-5,
  rope_parameters: { rope_theta: 1000000.0, rope_type: 'default' },
  num_local_experts: 8,
  num_experts_per_tok: 2,
  sliding_window: null,
  tie_word_embeddings: false,
  attention_dropout: 0.0,
  router_aux_loss_coef: 0.02,
  output_router_logits: false,
  bos_token_id: 1,
  eos_token_id: 2,
  dtype: 'float32',
};

const tinyQwen2Moe: JsonObject = {
  architectures: ['Qwen2MoeForCausalLM'],
  model_type: 'qwen2_moe',
  vocab_size: 384,
  hidden_size: 64,
  intermediate_size: 128, // the dense MLP of mlp_only_layers
  moe_intermediate_size: 32,
  shared_expert_intermediate_size: 96,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 4,
  hidden_act: 'silu',
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-6,
  rope_parameters: { rope_theta: 1000000.0, rope_type: 'default' },
  num_experts: 8,
  num_experts_per_tok: 4,
  norm_topk_prob: false,
  decoder_sparse_step: 1,
  mlp_only_layers: [1],
  qkv_bias: true,
  use_sliding_window: false,
  sliding_window: null,
  max_window_layers: 3,
  tie_word_embeddings: false,
  attention_dropout: 0.0,
  router_aux_loss_coef: 0.001,
  output_router_logits: false,
  dtype: 'float32',
};

const tinyQwen3Moe: JsonObject = {
  architectures: ['Qwen3MoeForCausalLM'],
  model_type: 'qwen3_moe',
  vocab_size: 256,
  hidden_size: 64,
  intermediate_size: 128,
  moe_intermediate_size: 48,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 32, // != hidden / heads, as in Qwen3-30B-A3B (2048 / 32 = 64, head_dim 128)
  hidden_act: 'silu',
  max_position_embeddings: 4096,
  rms_norm_eps: 1e-6,
  rope_parameters: { rope_theta: 1000000.0, rope_type: 'default' },
  num_experts: 8,
  num_experts_per_tok: 2,
  norm_topk_prob: true,
  decoder_sparse_step: 1,
  mlp_only_layers: [],
  attention_bias: false,
  use_sliding_window: false,
  sliding_window: null,
  tie_word_embeddings: true,
  attention_dropout: 0.0,
  router_aux_loss_coef: 0.001,
  output_router_logits: false,
  dtype: 'float32',
};

// mistralai/Mixtral-8x7B-v0.1 config.json (rope_theta moved into rope_parameters).
const mixtral8x7b: JsonObject = {
  architectures: ['MixtralForCausalLM'],
  model_type: 'mixtral',
  vocab_size: 32000,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  hidden_act: 'silu',
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-5,
  rope_parameters: { rope_theta: 1000000.0, rope_type: 'default' },
  num_local_experts: 8,
  num_experts_per_tok: 2,
  sliding_window: null,
  tie_word_embeddings: false,
  attention_dropout: 0.0,
  router_aux_loss_coef: 0.02,
  output_router_logits: false,
  initializer_range: 0.02,
  bos_token_id: 1,
  eos_token_id: 2,
  dtype: 'bfloat16',
};

// Qwen/Qwen3-30B-A3B config.json (rope_theta moved into rope_parameters).
const qwen3_30bA3b: JsonObject = {
  architectures: ['Qwen3MoeForCausalLM'],
  model_type: 'qwen3_moe',
  vocab_size: 151936,
  hidden_size: 2048,
  intermediate_size: 6144,
  moe_intermediate_size: 768,
  num_hidden_layers: 48,
  num_attention_heads: 32,
  num_key_value_heads: 4,
  head_dim: 128,
  hidden_act: 'silu',
  max_position_embeddings: 40960,
  max_window_layers: 48,
  rms_norm_eps: 1e-6,
  rope_parameters: { rope_theta: 1000000.0, rope_type: 'default' },
  num_experts: 128,
  num_experts_per_tok: 8,
  norm_topk_prob: true,
  decoder_sparse_step: 1,
  mlp_only_layers: [],
  attention_bias: false,
  use_sliding_window: false,
  sliding_window: null,
  tie_word_embeddings: false,
  attention_dropout: 0.0,
  router_aux_loss_coef: 0.001,
  output_router_logits: false,
  initializer_range: 0.02,
  bos_token_id: 151643,
  eos_token_id: 151645,
  dtype: 'bfloat16',
};

// The DeepSeek and DBRX presets copy deepseek-ai/DeepSeek-V2-Lite, deepseek-ai/DeepSeek-V2,
// deepseek-ai/DeepSeek-V3 and databricks/dbrx-base config.json (rope_theta and rope_scaling moved into
// rope_parameters, DBRX's rope_theta stated at the top level too, where transformers 5.17 reads it).
const deepseekYarn = (mscale: number): JsonObject => ({
  rope_type: 'yarn',
  rope_theta: 10000.0,
  factor: 40,
  original_max_position_embeddings: 4096,
  beta_fast: 32,
  beta_slow: 1,
  mscale,
  mscale_all_dim: mscale,
});

const deepseekCommon: JsonObject = {
  hidden_act: 'silu',
  qk_rope_head_dim: 64,
  qk_nope_head_dim: 128,
  v_head_dim: 128,
  kv_lora_rank: 512,
  max_position_embeddings: 163840,
  rms_norm_eps: 1e-6,
  moe_layer_freq: 1,
  attention_bias: false,
  tie_word_embeddings: false,
  initializer_range: 0.02,
  dtype: 'bfloat16',
};

const deepseekV2Lite: JsonObject = {
  ...deepseekCommon,
  architectures: ['DeepseekV2ForCausalLM'],
  model_type: 'deepseek_v2',
  vocab_size: 102400,
  hidden_size: 2048,
  intermediate_size: 10944,
  moe_intermediate_size: 1408,
  num_hidden_layers: 27,
  num_attention_heads: 16,
  num_key_value_heads: 16,
  q_lora_rank: null,
  n_routed_experts: 64,
  n_shared_experts: 2,
  num_experts_per_tok: 6,
  topk_method: 'greedy',
  n_group: 1,
  topk_group: 1,
  routed_scaling_factor: 1.0,
  norm_topk_prob: false,
  first_k_dense_replace: 1,
  rope_parameters: deepseekYarn(0.707),
};

const deepseekV2: JsonObject = {
  ...deepseekCommon,
  architectures: ['DeepseekV2ForCausalLM'],
  model_type: 'deepseek_v2',
  vocab_size: 102400,
  hidden_size: 5120,
  intermediate_size: 12288,
  moe_intermediate_size: 1536,
  num_hidden_layers: 60,
  num_attention_heads: 128,
  num_key_value_heads: 128,
  q_lora_rank: 1536,
  n_routed_experts: 160,
  n_shared_experts: 2,
  num_experts_per_tok: 6,
  topk_method: 'group_limited_greedy',
  n_group: 8,
  topk_group: 3,
  routed_scaling_factor: 16.0,
  norm_topk_prob: false,
  first_k_dense_replace: 1,
  rope_parameters: deepseekYarn(0.707),
};

const deepseekV3: JsonObject = {
  ...deepseekCommon,
  architectures: ['DeepseekV3ForCausalLM'],
  model_type: 'deepseek_v3',
  vocab_size: 129280,
  hidden_size: 7168,
  intermediate_size: 18432,
  moe_intermediate_size: 2048,
  num_hidden_layers: 61,
  num_attention_heads: 128,
  num_key_value_heads: 128,
  q_lora_rank: 1536,
  n_routed_experts: 256,
  n_shared_experts: 1,
  num_experts_per_tok: 8,
  topk_method: 'noaux_tc',
  n_group: 8,
  topk_group: 4,
  routed_scaling_factor: 2.5,
  norm_topk_prob: true,
  first_k_dense_replace: 3,
  rope_parameters: deepseekYarn(1.0),
};

const dbrx: JsonObject = {
  architectures: ['DbrxForCausalLM'],
  model_type: 'dbrx',
  vocab_size: 100352,
  d_model: 6144,
  n_heads: 48,
  n_layers: 40,
  max_seq_len: 32768,
  rope_parameters: { rope_type: 'default', rope_theta: 500000.0 },
  attn_config: { clip_qkv: 8, kv_n_heads: 8, rope_theta: 500000.0 },
  ffn_config: {
    ffn_act_fn: { name: 'silu' },
    ffn_hidden_size: 10752,
    moe_num_experts: 16,
    moe_top_k: 4,
    moe_normalize_expert_weights: 1,
  },
  tie_word_embeddings: false,
  initializer_range: 0.02,
  dtype: 'bfloat16',
};

export const PRESETS: readonly Preset[] = [
  { name: 'tiny', description: 'alias of tiny-mixtral: the default CPU test model', config: tinyMixtral },
  {
    name: 'tiny-mixtral',
    description: 'Mixtral family, hidden 64, 2 layers, 8 experts top-2, vocab 512, f32 (CPU tests)',
    config: tinyMixtral,
  },
  {
    name: 'tiny-qwen2-moe',
    description: 'Qwen2-MoE family, hidden 64, 3 layers (layer 1 dense), 8 experts top-4 + gated shared expert, qkv bias, f32',
    config: tinyQwen2Moe,
  },
  {
    name: 'tiny-qwen3-moe',
    description: 'Qwen3-MoE family, hidden 64, 4 layers, head_dim 32, q/k norm, 8 experts top-2, tied embeddings, f32',
    config: tinyQwen3Moe,
  },
  {
    name: 'mixtral-8x7b',
    description: 'Mixtral-8x7B shapes: 32 layers, hidden 4096, 8 experts top-2 (46.7B params, ~93 GB in bf16)',
    config: mixtral8x7b,
  },
  {
    name: 'qwen3-30b-a3b',
    description: 'Qwen3-30B-A3B shapes: 48 layers, hidden 2048, 128 experts top-8 (30.5B params, ~61 GB in bf16)',
    config: qwen3_30bA3b,
  },
  {
    name: 'deepseek-v2-lite',
    description: 'DeepSeek-V2-Lite shapes: 27 layers, hidden 2048, MLA (q_proj), 64 experts top-6 + 2 shared (15.7B params, ~31 GB in bf16)',
    config: deepseekV2Lite,
  },
  {
    name: 'deepseek-v2',
    description: 'DeepSeek-V2 shapes: 60 layers, hidden 5120, MLA, 160 experts top-6 group-limited + 2 shared (236B params, ~472 GB in bf16)',
    config: deepseekV2,
  },
  {
    name: 'deepseek-v3',
    description: 'DeepSeek-V3 shapes: 61 layers, hidden 7168, MLA, 256 experts top-8 noaux_tc + 1 shared (671B params, ~1.34 TB in bf16)',
    config: deepseekV3,
  },
  {
    name: 'dbrx',
    description: 'DBRX shapes: 40 layers, d_model 6144, GQA 48/8, clip_qkv 8, 16 experts top-4 (132B params, ~263 GB in bf16)',
    config: dbrx,
  },
];

export const DEFAULT_PRESET = 'tiny';

/** Preset names with one-line descriptions, for the CLI. */
export function listPresets(): { name: string; description: string }[] {
  return PRESETS.map(({ name, description }) => ({ name, description }));
}

export function findPreset(name: string): Preset | undefined {
  return PRESETS.find((p) => p.name === name);
}
