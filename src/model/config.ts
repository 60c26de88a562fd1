// Hugging Face config.json -> ModelSpec: the one description of a model that the engine, the
// scheduler and make-model share. Three families, each in its transformers 4 and 5 spellings.
// Defaults are those of the transformers config classes (configuration_mixtral.py,
// configuration_qwen2_moe.py, configuration_qwen3_moe.py); fields that fix a tensor shape have no
// default and are required.
import { promises as fs } from 'fs';
import * as path from 'path';
import { ConfigFields, isJsonObject } from './configFields';
import { ModelError } from './errors';
import { parseRopeSpec, type RopeSpec } from './ropeConfig';
import { mlaSoftmaxScale, parseDeepseek, type DeepseekRouting, type MlaSpec } from './families/deepseek';
import { DBRX_NORM_EPS, parseDbrx } from './families/dbrx';

export type { RopeSpec, RopeType } from './ropeConfig';
export type { DeepseekRouting, MlaSpec, RouterMethod, RouterScoring } from './families/deepseek';

export const SUPPORTED_MODEL_TYPES = ['mixtral', 'qwen2_moe', 'qwen3_moe', 'deepseek_v2', 'deepseek_v3', 'dbrx'] as const;
export type ModelFamily = (typeof SUPPORTED_MODEL_TYPES)[number];
export type FloatDType = 'f32' | 'bf16' | 'f16';

export interface MoeSpec {
  numExperts: number;
  topK: number;
  /** Intermediate size of one routed expert (I). */
  expertIntermediate: number;
  /** Renormalise the top-k softmax weights to sum to 1 (Mixtral always; Qwen: norm_topk_prob). */
  normTopkProb: boolean;
  /** Multiplier of the routed weights (the router op's `scale`); 1 for these families. */
  routedScale: number;
  /** Intermediate size of the shared expert; 0 = no shared expert. */
  sharedIntermediate: number;
  /** The shared expert's output is scaled by sigmoid(x @ shared_expert_gate^T) (Qwen2-MoE). */
  sharedGate: boolean;
  /** Scoring and group-limited choice beyond softmax top-k (DeepSeek); absent: softmax, greedy. */
  routing?: DeepseekRouting;
}

export interface LayerSpec {
  mlp: 'moe' | 'dense';
}

export interface ModelSpec {
  family: ModelFamily;
  /** config.json "architectures"[0] where given, e.g. "MixtralForCausalLM". */
  architecture?: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  rope: RopeSpec;
  maxPositions: number;
  /** Attention window (Mixtral sliding_window); null = full causal. Longer sequences need a window op. */
  slidingWindow: number | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have a bias (Qwen2-MoE: qkv_bias, default true; Qwen3-MoE: attention_bias). */
  attentionBias: boolean;
  /** o_proj has a bias (Qwen3-MoE attention_bias; never for the others). */
  attentionOutputBias: boolean;
  /** RMSNorm over each q and k head before RoPE (Qwen3-MoE). */
  qkNorm: boolean;
  /** The dtype the checkpoint declares (torch_dtype / dtype); f32 when it declares none. */
  dtype: FloatDType;
  layers: LayerSpec[];
  moe: MoeSpec;
  /** Intermediate size of the dense MLP layers (Qwen mlp_only_layers / decoder_sparse_step); 0 if none. */
  denseIntermediate: number;
  /**
   * Multi-head latent attention (DeepSeek), which replaces q/k/v projections; headDim is then the query/key
   * head dim (qk_nope + qk_rope), the value head dim is mla.vHeadDim, and the rope covers qk_rope_head_dim.
   */
  mla?: MlaSpec;
  /** The attention softmax scale; absent: 1/sqrt(headDim) (MLA: qk_head_dim^-0.5 with YaRN's mscale). */
  softmaxScale?: number;
  /** The norms are LayerNorm without bias (DBRX), eps rmsNormEps; absent: RMSNorm. */
  norm?: 'layernorm';
  /** q, k and v clamped to [-clipQkv, clipQkv] after their projection (DBRX clip_qkv); absent: no clamp. */
  clipQkv?: number;
}

const DTYPE_NAMES: Record<string, FloatDType> = {
  float32: 'f32',
  float: 'f32',
  bfloat16: 'bf16',
  float16: 'f16',
  half: 'f16',
};

interface FamilyDefaults {
  ropeTheta: number;
  rmsNormEps: number;
  maxPositions: number;
}

// From the transformers config classes (v5; v4 has the same values except Mixtral's max positions,
// which a real config.json always states).
const FAMILY_DEFAULTS: Record<ModelFamily, FamilyDefaults> = {
  mixtral: { ropeTheta: 1e6, rmsNormEps: 1e-5, maxPositions: 4096 * 32 },
  qwen2_moe: { ropeTheta: 10000, rmsNormEps: 1e-6, maxPositions: 32768 },
  qwen3_moe: { ropeTheta: 10000, rmsNormEps: 1e-6, maxPositions: 32768 },
  deepseek_v2: { ropeTheta: 10000, rmsNormEps: 1e-6, maxPositions: 2048 },
  deepseek_v3: { ropeTheta: 10000, rmsNormEps: 1e-6, maxPositions: 4096 },
  dbrx: { ropeTheta: 10000, rmsNormEps: DBRX_NORM_EPS, maxPositions: 2048 },
};

function unsupported(source: string, what: string): ModelError {
  return new ModelError('CONFIG_UNSUPPORTED_FEATURE', `${source}: ${what}`, source);
}

function parseDType(f: ConfigFields): FloatDType {
  const key = f.has('dtype') ? 'dtype' : 'torch_dtype';
  const name = f.optionalString(key);
  if (name === undefined) return 'f32';
  const dtype = DTYPE_NAMES[name.replace(/^torch\./, '')];
  if (!dtype) throw f.invalid(key, `one of ${Object.keys(DTYPE_NAMES).join(', ')}`);
  return dtype;
}

function parseFamily(f: ConfigFields): ModelFamily {
  const modelType = f.raw('model_type');
  const supported = SUPPORTED_MODEL_TYPES.join(', ');
  if (modelType === undefined) throw f.missing('model_type', `supported model types: ${supported}`);
  if (typeof modelType !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new ModelError(
      'CONFIG_UNSUPPORTED_MODEL_TYPE',
      `${f.source}: model_type ${JSON.stringify(modelType)} is not supported; supported model types: ${supported}`,
      f.source,
    );
  }
  return modelType as ModelFamily;
}

function parseMoe(f: ConfigFields, family: ModelFamily): MoeSpec {
  const numExperts =
    family === 'mixtral'
      ? f.has('num_experts') && !f.has('num_local_experts')
        ? f.int('num_experts')
        : f.int('num_local_experts')
      : f.has('num_local_experts') && !f.has('num_experts')
        ? f.int('num_local_experts')
        : f.int('num_experts');
  const topK = f.int('num_experts_per_tok');
  if (topK > numExperts) throw f.invalid('num_experts_per_tok', `<= the number of experts (${numExperts})`);
  if (family === 'mixtral') {
    // MixtralTopKRouter: softmax, top-k, then always divide by the top-k sum.
    return {
      numExperts,
      topK,
      expertIntermediate: f.int('intermediate_size'),
      normTopkProb: true,
      routedScale: 1,
      sharedIntermediate: 0,
      sharedGate: false,
    };
  }
  const shared = family === 'qwen2_moe';
  return {
    numExperts,
    topK,
    expertIntermediate: f.int('moe_intermediate_size'),
    // Qwen2MoeTopKRouter / Qwen3MoeTopKRouter: renormalise only when norm_topk_prob (default false in
    // both config classes; Qwen3-30B-A3B's config.json sets true).
    normTopkProb: f.bool('norm_topk_prob', false),
    routedScale: 1,
    // Qwen2MoeSparseMoeBlock always has a shared expert, gated by sigmoid(shared_expert_gate(x)).
    sharedIntermediate: shared ? f.int('shared_expert_intermediate_size') : 0,
    sharedGate: shared,
  };
}

/**
 * Which layers are MoE: Qwen2MoeDecoderLayer uses the sparse block when
 * `layer not in mlp_only_layers and num_experts > 0 and (layer + 1) % decoder_sparse_step == 0`,
 * else a dense MLP of intermediate_size. Mixtral layers are all MoE.
 */
function parseLayers(f: ConfigFields, family: ModelFamily, numLayers: number): LayerSpec[] {
  if (family === 'mixtral') return Array.from({ length: numLayers }, () => ({ mlp: 'moe' as const }));
  const mlpOnly = new Set(f.intList('mlp_only_layers'));
  for (const l of mlpOnly) {
    if (l >= numLayers) throw f.invalid('mlp_only_layers', `layer indices < num_hidden_layers (${numLayers})`);
  }
  const step = f.int('decoder_sparse_step', { default: 1 });
  return Array.from({ length: numLayers }, (_, l) => ({
    mlp: !mlpOnly.has(l) && (l + 1) % step === 0 ? ('moe' as const) : ('dense' as const),
  }));
}

function parseSlidingWindow(f: ConfigFields, family: ModelFamily): number | null {
  if (family === 'mixtral') {
    return f.has('sliding_window') ? f.int('sliding_window') : null;
  }
  // Qwen: the window applies only with use_sliding_window, and then per layer (max_window_layers,
  // layer_types); the engine has full causal attention only.
  if (f.bool('use_sliding_window', false)) {
    throw unsupported(f.source, 'use_sliding_window=true (per-layer sliding-window attention) is not supported');
  }
  return null;
}

/** Parses a config.json object. `source` names the file in error messages. */
export function parseModelConfig(json: unknown, source: string): ModelSpec {
  if (!isJsonObject(json)) {
    throw new ModelError('CONFIG_INVALID_FIELD', `${source}: config must be a JSON object`, source);
  }
  const f = new ConfigFields(json, source);
  const family = parseFamily(f);
  const defaults = FAMILY_DEFAULTS[family];

  const hiddenAct = f.optionalString('hidden_act') ?? 'silu';
  if (hiddenAct !== 'silu') throw unsupported(source, `hidden_act "${hiddenAct}" is not supported (only silu)`);
  if (family === 'deepseek_v2' || family === 'deepseek_v3') return parseDeepseekModel(f, family, defaults);
  if (family === 'dbrx') return parseDbrxModel(f, defaults);

  const vocabSize = f.int('vocab_size');
  const hiddenSize = f.int('hidden_size');
  const numLayers = f.int('num_hidden_layers');
  const numHeads = f.int('num_attention_heads');
  // transformers: num_key_value_heads None -> num_attention_heads (MHA).
  const numKvHeads = f.int('num_key_value_heads', { default: numHeads });
  if (numHeads % numKvHeads !== 0) {
    throw f.invalid('num_key_value_heads', `a divisor of num_attention_heads (${numHeads})`);
  }
  // head_dim absent or null: hidden_size // num_attention_heads (as the attention modules do).
  let headDim: number;
  if (f.has('head_dim')) {
    headDim = f.int('head_dim');
  } else {
    if (hiddenSize % numHeads !== 0) {
      throw f.missing('head_dim', `hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
    }
    headDim = hiddenSize / numHeads;
  }
  const maxPositions = f.int('max_position_embeddings', { default: defaults.maxPositions });
  const rope = parseRopeSpec(f, defaults.ropeTheta, maxPositions);
  const rotaryDim = Math.floor(headDim * rope.partialRotaryFactor);
  if (rotaryDim < 2 || rotaryDim % 2 !== 0) {
    throw f.invalid('partial_rotary_factor', `a fraction giving an even rotary dim (head_dim ${headDim})`);
  }

  const moe = parseMoe(f, family);
  const layers = parseLayers(f, family, numLayers);
  const anyDense = layers.some((l) => l.mlp === 'dense');
  const denseIntermediate =
    family === 'mixtral' ? 0 : anyDense ? f.int('intermediate_size', { why: 'layers with a dense MLP need it' }) : 0;

  const qwen3Bias = family === 'qwen3_moe' && f.bool('attention_bias', false);
  const architectures = f.raw('architectures');

  return {
    family,
    architecture: Array.isArray(architectures) && typeof architectures[0] === 'string' ? architectures[0] : undefined,
    vocabSize,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: f.positive('rms_norm_eps', { default: defaults.rmsNormEps }),
    rope,
    maxPositions,
    slidingWindow: parseSlidingWindow(f, family),
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias: family === 'qwen2_moe' ? f.bool('qkv_bias', true) : qwen3Bias,
    attentionOutputBias: qwen3Bias,
    qkNorm: family === 'qwen3_moe',
    dtype: parseDType(f),
    layers,
    moe,
    denseIntermediate,
  };
}

/** DeepSeek-V2/V3 (families/deepseek.ts): MLA attention, DeepSeek routing, dense layers first. */
function parseDeepseekModel(f: ConfigFields, family: 'deepseek_v2' | 'deepseek_v3', defaults: FamilyDefaults): ModelSpec {
  const hiddenSize = f.int('hidden_size');
  const numHeads = f.int('num_attention_heads');
  if (hiddenSize % numHeads !== 0) {
    // DeepseekV2Config/V3Config.validate_architecture
    throw f.invalid('num_attention_heads', `a divisor of hidden_size (${hiddenSize})`);
  }
  const numLayers = f.int('num_hidden_layers');
  const d = parseDeepseek(f, family, numHeads, numLayers);
  const maxPositions = f.int('max_position_embeddings', { default: defaults.maxPositions });
  const rope = parseRopeSpec(f, defaults.ropeTheta, maxPositions);
  if (Math.floor(d.mla.qkRopeHeadDim * rope.partialRotaryFactor) < 2 || Math.floor(d.mla.qkRopeHeadDim * rope.partialRotaryFactor) % 2 !== 0) {
    throw f.invalid('partial_rotary_factor', `a fraction giving an even rotary dim (qk_rope_head_dim ${d.mla.qkRopeHeadDim})`);
  }
  if (rope.partialRotaryFactor !== 1) throw unsupported(f.source, 'partial_rotary_factor != 1 with MLA is not supported');
  const architectures = f.raw('architectures');
  const headDim = d.mla.qkNopeHeadDim + d.mla.qkRopeHeadDim;
  return {
    family,
    architecture: Array.isArray(architectures) && typeof architectures[0] === 'string' ? architectures[0] : undefined,
    vocabSize: f.int('vocab_size'),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    headDim,
    rmsNormEps: f.positive('rms_norm_eps', { default: defaults.rmsNormEps }),
    rope,
    maxPositions,
    slidingWindow: null,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias: false,
    attentionOutputBias: false,
    qkNorm: false,
    dtype: parseDType(f),
    layers: Array.from({ length: numLayers }, (_, l) => ({ mlp: l >= d.firstDense ? ('moe' as const) : ('dense' as const) })),
    moe: {
      numExperts: d.numExperts,
      topK: d.topK,
      expertIntermediate: d.expertIntermediate,
      normTopkProb: d.normTopkProb,
      routedScale: d.routedScale,
      sharedIntermediate: d.sharedIntermediate,
      sharedGate: false,
      routing: d.routing,
    },
    denseIntermediate: d.denseIntermediate,
    mla: d.mla,
    softmaxScale: mlaSoftmaxScale(d.mla, rope),
  };
}



/** DBRX (families/dbrx.ts): fused Wqkv with clip_qkv, LayerNorm without bias, fused w1/v1/w2 experts. */
function parseDbrxModel(f: ConfigFields, defaults: FamilyDefaults): ModelSpec {
  const d = parseDbrx(f);
  const rope = parseRopeSpec(f, defaults.ropeTheta, d.maxPositions);
  const headDim = d.hiddenSize / d.numHeads;
  if (Math.floor(headDim * rope.partialRotaryFactor) < 2 || Math.floor(headDim * rope.partialRotaryFactor) % 2 !== 0) {
    throw f.invalid('partial_rotary_factor', `a fraction giving an even rotary dim (head_dim ${headDim})`);
  }
  const architectures = f.raw('architectures');
  const spec: ModelSpec = {
    family: 'dbrx',
    architecture: Array.isArray(architectures) && typeof architectures[0] === 'string' ? architectures[0] : undefined,
    vocabSize: d.vocabSize,
    hiddenSize: d.hiddenSize,
    numLayers: d.numLayers,
    numHeads: d.numHeads,
    numKvHeads: d.numKvHeads,
    headDim,
    rmsNormEps: defaults.rmsNormEps,
    rope,
    maxPositions: d.maxPositions,
    slidingWindow: null,
    tieWordEmbeddings: false,
    attentionBias: false,
    attentionOutputBias: false,
    qkNorm: false,
    dtype: parseDType(f),
    layers: Array.from({ length: d.numLayers }, () => ({ mlp: 'moe' as const })),
    moe: {
      numExperts: d.numExperts,
      topK: d.topK,
      expertIntermediate: d.expertIntermediate,
      normTopkProb: d.normTopkProb,
      routedScale: 1,
      sharedIntermediate: 0,
      sharedGate: false,
    },
    denseIntermediate: 0,
    norm: 'layernorm',
  };
  if (d.clipQkv !== undefined) spec.clipQkv = d.clipQkv;
  return spec;
}

/** True when config.json states a dtype (torch_dtype or dtype); otherwise spec.dtype is a default. */
export function configDeclaresDType(json: unknown): boolean {
  return isJsonObject(json) && ((json['dtype'] ?? null) !== null || (json['torch_dtype'] ?? null) !== null);
}

/** Reads and parses the raw JSON of `<dir>/config.json`. */
export async function readConfigJson(dir: string): Promise<{ json: unknown; file: string }> {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new ModelError('CONFIG_UNREADABLE', `${file}: cannot read (${(e as Error).message})`, file);
  }
  try {
    return { json: JSON.parse(text) as unknown, file };
  } catch (e) {
    throw new ModelError('CONFIG_UNREADABLE', `${file}: not valid JSON (${(e as Error).message})`, file);
  }
}

/** The ModelSpec of a checkpoint folder (its config.json). */
export async function loadModelSpec(dir: string): Promise<ModelSpec> {
  const { json, file } = await readConfigJson(dir);
  return parseModelConfig(json, file);
}
