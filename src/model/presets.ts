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
];

export const DEFAULT_PRESET = 'tiny';

/** Preset names with one-line descriptions, for the CLI. */
export function listPresets(): { name: string; description: string }[] {
  return PRESETS.map(({ name, description }) => ({ name, description }));
}

export function findPreset(name: string): Preset | undefined {
  return PRESETS.find((p) => p.name === name);
}
