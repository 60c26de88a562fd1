// The RoPE part of config.json, in both spellings:
//   transformers 4: "rope_theta": 1e6, "rope_scaling": null | {"type" | "rope_type": "yarn", "factor": 4, ...}
//   transformers 5: "rope_parameters": {"rope_theta": 1e6, "rope_type": "default", ...}
// Precedence follows transformers 5's RotaryEmbeddingConfigMixin.convert_rope_params_to_dict /
// standardize_rope_params: rope_scaling (when non-empty) replaces rope_parameters; rope_theta inside the
// dict wins over the top-level one, which wins over the family default; a top-level
// original_max_position_embeddings wins over the dict's (the Phi-3 exception), else max_position_embeddings.
import { ConfigFields, isJsonObject } from './configFields';
import { ModelError } from './errors';

export const SUPPORTED_ROPE_TYPES = ['default', 'linear', 'dynamic', 'yarn', 'llama3'] as const;
export type RopeType = (typeof SUPPORTED_ROPE_TYPES)[number];

export interface RopeSpec {
  type: RopeType;
  /** The base of the frequencies (rope_theta). */
  theta: number;
  /** Fraction of head_dim that is rotated; the rest passes through. */
  partialRotaryFactor: number;
  /** Scaling factor (linear, dynamic, yarn, llama3); 1 for default. */
  factor: number;
  /** Pretraining context length (yarn, llama3); max_position_embeddings for the others. */
  originalMaxPositions: number;
  /** yarn: explicit attention scaling (cos/sin multiplier); absent = derived from factor/mscale. */
  attentionFactor?: number;
  betaFast?: number;
  betaSlow?: number;
  mscale?: number;
  /** yarn's attention factor; DeepSeek's softmax scale for any non-default type (yarn_apply_mscale). */
  mscaleAllDim?: number;
  /** yarn: floor/ceil the correction range (transformers default true). */
  truncate: boolean;
  lowFreqFactor?: number;
  highFreqFactor?: number;
}

const LAYER_TYPE_KEYS = new Set(['full_attention', 'sliding_attention']);

/** The rope dict of the config (rope_scaling or rope_parameters), or undefined for plain RoPE. */
function ropeDict(config: ConfigFields): ConfigFields | undefined {
  let dict = config.object('rope_scaling') ?? config.object('rope_parameters');
  if (!dict) return undefined;
  // transformers 5 may nest one dict per attention layer type; we run full attention only.
  const keys = Object.keys(dict.json);
  if (keys.length > 0 && keys.every((k) => LAYER_TYPE_KEYS.has(k))) {
    const full = dict.json['full_attention'];
    if (!isJsonObject(full)) {
      throw new ModelError(
        'CONFIG_UNSUPPORTED_FEATURE',
        `${config.source}: rope parameters are given per layer type (${keys.join(', ')}) without "full_attention"`,
        config.source,
      );
    }
    dict = new ConfigFields(full, config.source, `${dict.prefix}full_attention.`);
  }
  return dict;
}

export function parseRopeSpec(config: ConfigFields, defaultTheta: number, maxPositions: number): RopeSpec {
  const dict = ropeDict(config);
  const typeName = dict?.optionalString('rope_type') ?? dict?.optionalString('type') ?? 'default';
  if (!(SUPPORTED_ROPE_TYPES as readonly string[]).includes(typeName)) {
    throw new ModelError(
      'ROPE_UNSUPPORTED',
      `${config.source}: rope type "${typeName}" is not supported; supported: ${SUPPORTED_ROPE_TYPES.join(', ')}`,
      config.source,
    );
  }
  const type = typeName as RopeType;
  const theta = dict?.has('rope_theta') ? dict.positive('rope_theta') : config.positive('rope_theta', { default: defaultTheta });
  const prfSource = dict?.has('partial_rotary_factor') ? dict : config;
  const partialRotaryFactor = prfSource.positive('partial_rotary_factor', { default: 1 });
  if (partialRotaryFactor > 1) throw prfSource.invalid('partial_rotary_factor', 'in (0, 1]');

  const spec: RopeSpec = {
    type,
    theta,
    partialRotaryFactor,
    factor: 1,
    originalMaxPositions: maxPositions,
    truncate: true,
  };
  if (type === 'default' || !dict) return spec;

  if (type === 'yarn' || type === 'llama3') {
    spec.originalMaxPositions = config.has('original_max_position_embeddings')
      ? config.int('original_max_position_embeddings')
      : dict.int('original_max_position_embeddings', { default: maxPositions });
  }
  // yarn may leave factor out (DeepSeek-V3 style): it is then the context extension ratio.
  spec.factor =
    type === 'yarn' && !dict.has('factor') ? maxPositions / spec.originalMaxPositions : dict.positive('factor', { default: undefined });
  if (type === 'yarn') {
    spec.attentionFactor = dict.optionalNumber('attention_factor');
    spec.betaFast = dict.optionalNumber('beta_fast');
    spec.betaSlow = dict.optionalNumber('beta_slow');
    spec.mscale = dict.optionalNumber('mscale');
    spec.truncate = dict.bool('truncate', true);
  }
  // Read for every non-default type: DeepSeek's attention scales its softmax by it (yarn_apply_mscale).
  spec.mscaleAllDim = dict.optionalNumber('mscale_all_dim');
  if (type === 'llama3') {
    spec.lowFreqFactor = dict.positive('low_freq_factor');
    spec.highFreqFactor = dict.positive('high_freq_factor');
    if (spec.highFreqFactor <= spec.lowFreqFactor) throw dict.invalid('high_freq_factor', '> low_freq_factor');
  }
  return spec;
}
