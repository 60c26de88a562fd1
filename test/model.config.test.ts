// config.json -> ModelSpec for the three families, in transformers 4 and 5 spellings. The expected
// specs are written out by hand from the transformers config classes and modeling code.
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadModelSpec, parseModelConfig, type ModelSpec } from '../src/model/config';
import { ModelError } from '../src/model/errors';

// Mixtral-8x7B as transformers 4 wrote it.
const mixtralV4 = {
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
  rope_theta: 1000000.0,
  num_local_experts: 8,
  num_experts_per_tok: 2,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.36.0.dev0',
};

// The same model as transformers 5 writes it.
const mixtralV5 = (() => {
  const { rope_theta: theta, torch_dtype: dtype, ...rest } = mixtralV4;
  return { ...rest, head_dim: null, rope_parameters: { rope_theta: theta, rope_type: 'default' }, dtype };
})();

const expectedMixtral: ModelSpec = {
  family: 'mixtral',
  architecture: 'MixtralForCausalLM',
  vocabSize: 32000,
  hiddenSize: 4096,
  numLayers: 32,
  numHeads: 32,
  numKvHeads: 8,
  headDim: 128,
  rmsNormEps: 1e-5,
  rope: { type: 'default', theta: 1e6, partialRotaryFactor: 1, factor: 1, originalMaxPositions: 32768, truncate: true },
  maxPositions: 32768,
  slidingWindow: null,
  tieWordEmbeddings: false,
  attentionBias: false,
  attentionOutputBias: false,
  qkNorm: false,
  dtype: 'bf16',
  layers: Array.from({ length: 32 }, () => ({ mlp: 'moe' as const })),
  moe: {
    numExperts: 8,
    topK: 2,
    expertIntermediate: 14336,
    normTopkProb: true,
    routedScale: 1,
    sharedIntermediate: 0,
    sharedGate: false,
  },
  denseIntermediate: 0,
};

// Qwen1.5-MoE-A2.7B (transformers 4 spelling), with one dense layer added through mlp_only_layers.
const qwen2V4 = {
  architectures: ['Qwen2MoeForCausalLM'],
  model_type: 'qwen2_moe',
  vocab_size: 151936,
  hidden_size: 2048,
  intermediate_size: 5632,
  moe_intermediate_size: 1408,
  shared_expert_intermediate_size: 5632,
  num_hidden_layers: 4,
  num_attention_heads: 16,
  num_key_value_heads: 16,
  max_position_embeddings: 8192,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  rope_scaling: null,
  num_experts: 60,
  num_experts_per_tok: 4,
  norm_topk_prob: false,
  decoder_sparse_step: 1,
  mlp_only_layers: [2],
  use_sliding_window: false,
  sliding_window: 32768,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
};

// Qwen3-30B-A3B (transformers 4 spelling), cut to 3 layers.
const qwen3V4 = {
  architectures: ['Qwen3MoeForCausalLM'],
  model_type: 'qwen3_moe',
  attention_bias: false,
  vocab_size: 151936,
  hidden_size: 2048,
  intermediate_size: 6144,
  moe_intermediate_size: 768,
  head_dim: 128,
  num_hidden_layers: 3,
  num_attention_heads: 32,
  num_key_value_heads: 4,
  max_position_embeddings: 40960,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000.0,
  num_experts: 128,
  num_experts_per_tok: 8,
  norm_topk_prob: true,
  decoder_sparse_step: 1,
  mlp_only_layers: [],
  use_sliding_window: false,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
};

function toV5(v4: Record<string, unknown>): Record<string, unknown> {
  const { rope_theta: theta, rope_scaling: scaling, torch_dtype: dtype, ...rest } = v4;
  return {
    ...rest,
    rope_parameters: { ...((scaling as object | null) ?? { rope_type: 'default' }), rope_theta: theta },
    dtype,
  };
}

describe('parseModelConfig: Mixtral', () => {
  test('transformers 4 spelling', () => {
    expect(parseModelConfig(mixtralV4, 'mixtral/config.json')).toEqual(expectedMixtral);
  });

  test('transformers 5 spelling gives the same spec', () => {
    expect(parseModelConfig(mixtralV5, 'mixtral/config.json')).toEqual(expectedMixtral);
  });

  test('num_key_value_heads null means multi-head attention', () => {
    const spec = parseModelConfig({ ...mixtralV4, num_key_value_heads: null }, 'c.json');
    expect(spec.numKvHeads).toBe(32);
  });

  test('sliding_window is carried for the engine to enforce', () => {
    expect(parseModelConfig({ ...mixtralV4, sliding_window: 4096 }, 'c.json').slidingWindow).toBe(4096);
  });

  test('missing dtype defaults to f32', () => {
    const { torch_dtype: _dtype, ...noDtype } = mixtralV4;
    expect(parseModelConfig(noDtype, 'c.json').dtype).toBe('f32');
  });
});

describe('parseModelConfig: Qwen2-MoE', () => {
  const expectQwen2 = (spec: ModelSpec): void => {
    expect(spec.family).toBe('qwen2_moe');
    expect(spec.headDim).toBe(128); // 2048 / 16
    expect(spec.numKvHeads).toBe(16);
    // Qwen2MoeAttention: q/k/v with bias, o_proj without.
    expect(spec.attentionBias).toBe(true);
    expect(spec.attentionOutputBias).toBe(false);
    expect(spec.qkNorm).toBe(false);
    expect(spec.rmsNormEps).toBe(1e-6);
    expect(spec.rope).toEqual({
      type: 'default',
      theta: 1e6,
      partialRotaryFactor: 1,
      factor: 1,
      originalMaxPositions: 8192,
      truncate: true,
    });
    expect(spec.moe).toEqual({
      numExperts: 60,
      topK: 4,
      expertIntermediate: 1408,
      normTopkProb: false,
      routedScale: 1,
      sharedIntermediate: 5632,
      sharedGate: true,
    });
    // mlp_only_layers [2] -> layer 2 dense, the others sparse (decoder_sparse_step 1).
    expect(spec.layers.map((l) => l.mlp)).toEqual(['moe', 'moe', 'dense', 'moe']);
    expect(spec.denseIntermediate).toBe(5632);
    expect(spec.slidingWindow).toBeNull();
    expect(spec.dtype).toBe('bf16');
  };

  test('transformers 4 spelling', () => expectQwen2(parseModelConfig(qwen2V4, 'q2.json')));
  test('transformers 5 spelling', () => expectQwen2(parseModelConfig({ ...toV5(qwen2V4), qkv_bias: true }, 'q2.json')));

  test('decoder_sparse_step 2 makes even layers (0-based) dense', () => {
    // Qwen2MoeDecoderLayer: sparse iff (layer + 1) % decoder_sparse_step == 0.
    const spec = parseModelConfig({ ...qwen2V4, mlp_only_layers: [], decoder_sparse_step: 2 }, 'q2.json');
    expect(spec.layers.map((l) => l.mlp)).toEqual(['dense', 'moe', 'dense', 'moe']);
  });

  test('norm_topk_prob defaults to false', () => {
    const { norm_topk_prob: _n, ...rest } = qwen2V4;
    expect(parseModelConfig(rest, 'q2.json').moe.normTopkProb).toBe(false);
  });

  test('qkv_bias false (transformers 5) drops the biases', () => {
    expect(parseModelConfig({ ...qwen2V4, qkv_bias: false }, 'q2.json').attentionBias).toBe(false);
  });

  test('all-MoE model does not need intermediate_size', () => {
    const { intermediate_size: _i, ...rest } = qwen2V4;
    const spec = parseModelConfig({ ...rest, mlp_only_layers: [] }, 'q2.json');
    expect(spec.denseIntermediate).toBe(0);
  });

  test('a dense layer without intermediate_size is an error naming the field', () => {
    const { intermediate_size: _i, ...rest } = qwen2V4;
    expect(() => parseModelConfig(rest, 'q2.json')).toThrow(/q2\.json.*"intermediate_size"/);
  });

  test('use_sliding_window is rejected', () => {
    expect(() => parseModelConfig({ ...qwen2V4, use_sliding_window: true }, 'q2.json')).toThrow(
      expect.objectContaining({ code: 'CONFIG_UNSUPPORTED_FEATURE' }),
    );
  });
});

describe('parseModelConfig: Qwen3-MoE', () => {
  const expectQwen3 = (spec: ModelSpec): void => {
    expect(spec.family).toBe('qwen3_moe');
    expect(spec.headDim).toBe(128); // explicit, != 2048 / 32
    expect(spec.numHeads).toBe(32);
    expect(spec.numKvHeads).toBe(4);
    expect(spec.qkNorm).toBe(true);
    expect(spec.attentionBias).toBe(false);
    expect(spec.attentionOutputBias).toBe(false);
    expect(spec.maxPositions).toBe(40960);
    expect(spec.moe).toEqual({
      numExperts: 128,
      topK: 8,
      expertIntermediate: 768,
      normTopkProb: true,
      routedScale: 1,
      sharedIntermediate: 0,
      sharedGate: false,
    });
    expect(spec.layers.map((l) => l.mlp)).toEqual(['moe', 'moe', 'moe']);
    expect(spec.rope.theta).toBe(1e6);
  };

  test('transformers 4 spelling', () => expectQwen3(parseModelConfig(qwen3V4, 'q3.json')));
  test('transformers 5 spelling', () => expectQwen3(parseModelConfig(toV5(qwen3V4), 'q3.json')));

  test('head_dim null falls back to hidden / heads', () => {
    expect(parseModelConfig({ ...qwen3V4, head_dim: null }, 'q3.json').headDim).toBe(64);
    const { head_dim: _h, ...rest } = qwen3V4;
    expect(parseModelConfig(rest, 'q3.json').headDim).toBe(64);
  });

  test('norm_topk_prob defaults to false (Qwen3MoeConfig)', () => {
    const { norm_topk_prob: _n, ...rest } = qwen3V4;
    expect(parseModelConfig(rest, 'q3.json').moe.normTopkProb).toBe(false);
  });

  test('attention_bias puts biases on q, k, v and o', () => {
    const spec = parseModelConfig({ ...qwen3V4, attention_bias: true }, 'q3.json');
    expect(spec.attentionBias).toBe(true);
    expect(spec.attentionOutputBias).toBe(true);
  });

  test('rope theta: transformers default 10000 when absent', () => {
    const { rope_theta: _t, ...rest } = qwen3V4;
    expect(parseModelConfig(rest, 'q3.json').rope.theta).toBe(10000);
  });

  test('yarn rope_scaling (v4) and rope_parameters (v5) agree', () => {
    const scaling = { rope_type: 'yarn', factor: 4.0, original_max_position_embeddings: 32768 };
    const v4 = parseModelConfig({ ...qwen3V4, rope_scaling: scaling }, 'q3.json');
    const v5 = parseModelConfig(toV5({ ...qwen3V4, rope_scaling: scaling }), 'q3.json');
    const expected = {
      type: 'yarn',
      theta: 1e6,
      partialRotaryFactor: 1,
      factor: 4,
      originalMaxPositions: 32768,
      truncate: true,
      attentionFactor: undefined,
      betaFast: undefined,
      betaSlow: undefined,
      mscale: undefined,
      mscaleAllDim: undefined,
    };
    expect(v4.rope).toEqual(expected);
    expect(v5.rope).toEqual(expected);
  });

  test('old "type" key of rope_scaling is read', () => {
    const spec = parseModelConfig({ ...qwen3V4, rope_scaling: { type: 'linear', factor: 2 } }, 'q3.json');
    expect(spec.rope.type).toBe('linear');
    expect(spec.rope.factor).toBe(2);
  });
});

describe('parseModelConfig: errors', () => {
  const catchError = (fn: () => unknown): ModelError => {
    try {
      fn();
    } catch (e) {
      return e as ModelError;
    }
    throw new Error('expected an error');
  };

  test('unsupported model_type names the file and the supported types', () => {
    const e = catchError(() => parseModelConfig({ ...mixtralV4, model_type: 'llama' }, '/m/config.json'));
    expect(e).toBeInstanceOf(ModelError);
    expect(e.code).toBe('CONFIG_UNSUPPORTED_MODEL_TYPE');
    expect(e.message).toContain('/m/config.json');
    expect(e.message).toContain('"llama"');
    for (const t of ['mixtral', 'qwen2_moe', 'qwen3_moe']) expect(e.message).toContain(t);
  });

  test('missing model_type', () => {
    const { model_type: _m, ...rest } = mixtralV4;
    const e = catchError(() => parseModelConfig(rest, '/m/config.json'));
    expect(e.code).toBe('CONFIG_MISSING_FIELD');
    expect(e.message).toContain('"model_type"');
  });

  test.each([
    'vocab_size',
    'hidden_size',
    'num_hidden_layers',
    'num_attention_heads',
    'num_local_experts',
    'num_experts_per_tok',
    'intermediate_size',
  ])('missing %s names the field and the file', (field) => {
    const cfg: Record<string, unknown> = { ...mixtralV4 };
    delete cfg[field];
    const e = catchError(() => parseModelConfig(cfg, '/m/config.json'));
    expect(e.code).toBe('CONFIG_MISSING_FIELD');
    expect(e.message).toContain(`"${field}"`);
    expect(e.message).toContain('/m/config.json');
  });

  test.each([
    ['hidden_size', 0],
    ['hidden_size', 64.5],
    ['hidden_size', '64'],
    ['num_hidden_layers', -1],
    ['rms_norm_eps', 0],
    ['num_key_value_heads', 5], // 32 heads are not a multiple of 5
    ['num_experts_per_tok', 9], // more than the 8 experts
    ['tie_word_embeddings', 'no'],
    ['torch_dtype', 'int8'],
  ])('invalid %s = %p is an error naming the field', (field, value) => {
    const e = catchError(() => parseModelConfig({ ...mixtralV4, [field]: value }, '/m/config.json'));
    expect(e.code).toBe('CONFIG_INVALID_FIELD');
    expect(e.message).toContain(`"${field}"`);
  });

  test('qwen2_moe without shared_expert_intermediate_size', () => {
    const { shared_expert_intermediate_size: _s, ...rest } = qwen2V4;
    const e = catchError(() => parseModelConfig(rest, 'q2.json'));
    expect(e.code).toBe('CONFIG_MISSING_FIELD');
    expect(e.message).toContain('shared_expert_intermediate_size');
  });

  test('mlp_only_layers out of range', () => {
    const e = catchError(() => parseModelConfig({ ...qwen2V4, mlp_only_layers: [7] }, 'q2.json'));
    expect(e.code).toBe('CONFIG_INVALID_FIELD');
  });

  test('unsupported rope type names the supported ones', () => {
    const e = catchError(() =>
      parseModelConfig({ ...qwen3V4, rope_scaling: { rope_type: 'longrope', short_factor: [1], long_factor: [1] } }, 'q3.json'),
    );
    expect(e.code).toBe('ROPE_UNSUPPORTED');
    expect(e.message).toContain('longrope');
    expect(e.message).toContain('yarn');
  });

  test('other activations are rejected', () => {
    const e = catchError(() => parseModelConfig({ ...mixtralV4, hidden_act: 'gelu' }, 'c.json'));
    expect(e.code).toBe('CONFIG_UNSUPPORTED_FEATURE');
  });

  test('not an object', () => {
    expect(() => parseModelConfig([1, 2], 'c.json')).toThrow(ModelError);
  });
});

describe('loadModelSpec', () => {
  test('reads <dir>/config.json; unreadable JSON names the file', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'eps-config-'));
    try {
      await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(mixtralV5));
      expect(await loadModelSpec(dir)).toEqual(expectedMixtral);
      await fs.writeFile(path.join(dir, 'config.json'), '{"model_type": ');
      await expect(loadModelSpec(dir)).rejects.toMatchObject({
        code: 'CONFIG_UNREADABLE',
        message: expect.stringContaining(path.join(dir, 'config.json')),
      });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
