// RoPE inverse frequencies. References are the closed forms (theta^(-2i/d), the YaRN paper's ramp),
// computed here in float64, independent of rope.ts's float32 emulation.
import { parseModelConfig, type ModelSpec } from '../src/model/config';
import { ropeInvFreq, rotaryDim } from '../src/model/rope';

function spec(rope: Record<string, unknown> | null, extra: Record<string, unknown> = {}): ModelSpec {
  return parseModelConfig(
    {
      model_type: 'qwen3_moe',
      vocab_size: 16,
      hidden_size: 64,
      moe_intermediate_size: 8,
      num_hidden_layers: 1,
      num_attention_heads: 1,
      head_dim: 128,
      num_experts: 2,
      num_experts_per_tok: 1,
      max_position_embeddings: 32768,
      rope_theta: 1e6,
      rope_scaling: rope,
      ...extra,
    },
    'rope-test.json',
  );
}

/** theta^(-2i/d) in float64. */
function closedForm(theta: number, dim: number): number[] {
  return Array.from({ length: dim / 2 }, (_, i) => Math.pow(theta, (-2 * i) / dim));
}

function expectClose(actual: Float32Array, expected: number[], rel: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / Math.abs(expected[i]);
    if (err > rel) throw new Error(`index ${i}: ${actual[i]} vs ${expected[i]} (relative error ${err})`);
  }
}

describe('ropeInvFreq', () => {
  test('default: exact small case (theta 10000, head_dim 4) = [1, 0.01] in float32', () => {
    const s = spec(null, { head_dim: 4, rope_theta: 10000 });
    const { invFreq, attentionScaling } = ropeInvFreq(s);
    expect(Array.from(invFreq)).toEqual([1, Math.fround(0.01)]);
    expect(attentionScaling).toBe(1);
  });

  test('default: matches theta^(-2i/d) to float32 precision (theta 1e6, d 128)', () => {
    const { invFreq } = ropeInvFreq(spec(null));
    expectClose(invFreq, closedForm(1e6, 128), 4e-7);
    expect(invFreq[0]).toBe(1);
  });

  test('default: theta from transformers 5 rope_parameters', () => {
    const s = spec(null, { rope_theta: undefined, rope_parameters: { rope_type: 'default', rope_theta: 5e5 } });
    expectClose(ropeInvFreq(s).invFreq, closedForm(5e5, 128), 4e-7);
  });

  test('partial_rotary_factor rotates a prefix of the head', () => {
    const s = spec(null, { partial_rotary_factor: 0.5 });
    expect(rotaryDim(s)).toBe(64);
    expectClose(ropeInvFreq(s).invFreq, closedForm(1e6, 64), 4e-7);
  });

  test('linear: default / factor', () => {
    const { invFreq } = ropeInvFreq(spec({ rope_type: 'linear', factor: 4 }));
    expectClose(
      invFreq,
      closedForm(1e6, 128).map((x) => x / 4),
      4e-7,
    );
  });

  test('dynamic: the default frequencies up to max_position_embeddings', () => {
    const s = spec({ rope_type: 'dynamic', factor: 2 });
    expect(Array.from(ropeInvFreq(s, 1000).invFreq)).toEqual(Array.from(ropeInvFreq(spec(null)).invFreq));
    expect(Array.from(ropeInvFreq(s).invFreq)).toEqual(Array.from(ropeInvFreq(spec(null)).invFreq));
  });

  test('dynamic: beyond max positions the base grows by (f*L/max - (f-1))^(d/(d-2))', () => {
    const s = spec({ rope_type: 'dynamic', factor: 2 });
    const base = 1e6 * Math.pow((2 * 65536) / 32768 - 1, 128 / 126);
    expectClose(ropeInvFreq(s, 65536).invFreq, closedForm(base, 128), 4e-7);
  });

  describe('yarn', () => {
    // YaRN (arXiv 2309.00071) in float64: dims rotating fast (i <= low) keep the original
    // frequency, slow ones (i >= high) are interpolated (divided by factor), a linear ramp between.
    function yarnReference(theta: number, dim: number, factor: number, original: number, betaFast = 32, betaSlow = 1): number[] {
      const corr = (rot: number): number => (dim * Math.log(original / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
      const low = Math.max(Math.floor(corr(betaFast)), 0);
      const high = Math.min(Math.ceil(corr(betaSlow)), dim - 1);
      return closedForm(theta, dim).map((f, i) => {
        const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
        return (f / factor) * ramp + f * (1 - ramp);
      });
    }

    test('matches the float64 reference; attention factor 0.1 ln(f) + 1', () => {
      const s = spec({ rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 }, { max_position_embeddings: 131072 });
      const { invFreq, attentionScaling } = ropeInvFreq(s);
      expectClose(invFreq, yarnReference(1e6, 128, 4, 32768), 1e-6);
      expect(attentionScaling).toBeCloseTo(0.1 * Math.log(4) + 1, 12);
    });

    test('ends of the ramp: fast dims unchanged, slow dims / factor', () => {
      // low = floor(128 ln(32768 / (64 pi)) / (2 ln 1e6)) = 23, high = ceil(128 ln(32768 / (2 pi)) / (2 ln 1e6)) = 40.
      const s = spec({ rope_type: 'yarn', factor: 4, original_max_position_embeddings: 32768 });
      const { invFreq } = ropeInvFreq(s);
      const plain = ropeInvFreq(spec(null)).invFreq;
      for (let i = 0; i <= 23; i++) expect(invFreq[i]).toBe(plain[i]);
      for (let i = 40; i < 64; i++) expect(invFreq[i] / plain[i]).toBeCloseTo(0.25, 6);
      expect(invFreq[30] / plain[30]).toBeGreaterThan(0.25);
      expect(invFreq[30] / plain[30]).toBeLessThan(1);
    });

    test('explicit attention_factor, and mscale / mscale_all_dim', () => {
      const a = spec({ rope_type: 'yarn', factor: 4, attention_factor: 1.5 });
      expect(ropeInvFreq(a).attentionScaling).toBe(1.5);
      const b = spec({ rope_type: 'yarn', factor: 40, mscale: 1, mscale_all_dim: 0.707 });
      const m = (scale: number, k: number): number => 0.1 * k * Math.log(scale) + 1;
      expect(ropeInvFreq(b).attentionScaling).toBeCloseTo(m(40, 1) / m(40, 0.707), 12);
    });

    test('factor absent: max_position_embeddings / original', () => {
      const s = spec({ rope_type: 'yarn', original_max_position_embeddings: 8192 }, { max_position_embeddings: 32768 });
      expect(s.rope.factor).toBe(4);
    });
  });

  test('llama3: high frequencies kept, low frequencies / factor', () => {
    const s = spec({ rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
    const { invFreq } = ropeInvFreq(s);
    const plain = ropeInvFreq(spec(null)).invFreq;
    for (let i = 0; i < 64; i++) {
      const wavelen = (2 * Math.PI) / plain[i];
      if (wavelen < 8192 / 4) expect(invFreq[i]).toBe(plain[i]);
      else if (wavelen > 8192) expect(invFreq[i] / plain[i]).toBeCloseTo(1 / 8, 6);
      else {
        const smooth = (8192 / wavelen - 1) / 3;
        expect(invFreq[i] / plain[i]).toBeCloseTo((1 - smooth) / 8 + smooth, 5);
      }
    }
  });

  test('unsupported type is an error', () => {
    const s = spec(null);
    const bad = { ...s, rope: { ...s.rope, type: 'longrope' } } as unknown as ModelSpec;
    expect(() => ropeInvFreq(bad)).toThrow(expect.objectContaining({ code: 'ROPE_UNSUPPORTED' }));
  });
});
