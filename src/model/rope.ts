// RoPE inverse frequencies, as transformers' ROPE_INIT_FUNCTIONS compute them (modeling_rope_utils.py,
// transformers 5). transformers builds inv_freq in float32 tensors: the int64 arange is cast to
// float32, every elementwise op rounds to float32, and Python-float scalars (theta, factor) enter the
// op as float32. We do the same in float64 with Math.fround after every op, so the table matches
// torch's to the last bit except where torch's powf and Math.pow round differently (<= 1 ulp).
// Only the scalars transformers computes in Python (dynamic's base, yarn's correction range and
// attention factor) stay in float64.
import type { ModelSpec } from './config';
import { ModelError } from './errors';

const f32 = Math.fround;

export interface RopeTable {
  /** rotaryDim / 2 frequencies, float32. */
  invFreq: Float32Array;
  /** Multiplier of cos and sin (yarn); 1 for the others. */
  attentionScaling: number;
}

/** Number of leading dims of each head that are rotated. */
export function rotaryDim(spec: Pick<ModelSpec, 'headDim' | 'rope' | 'mla'>): number {
  // MLA: transformers' rotary embedding sees head_dim = qk_rope_head_dim (DeepseekV2Config.__post_init__).
  return Math.floor((spec.mla ? spec.mla.qkRopeHeadDim : spec.headDim) * spec.rope.partialRotaryFactor);
}

/** 1 / base^(2i/dim) for i < dim/2, in float32 steps (the default RoPE). */
function defaultInvFreq(base: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  const b = f32(base);
  for (let i = 0; i < dim / 2; i++) {
    const exponent = f32((2 * i) / dim);
    out[i] = f32(1 / f32(Math.pow(b, exponent)));
  }
  return out;
}

function yarn(spec: ModelSpec, dim: number): RopeTable {
  const r = spec.rope;
  const base = r.theta;
  const factor = r.factor;
  const getMscale = (scale: number, m = 1): number => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
  let attentionScaling = r.attentionFactor;
  if (attentionScaling === undefined) {
    attentionScaling = r.mscale && r.mscaleAllDim ? getMscale(factor, r.mscale) / getMscale(factor, r.mscaleAllDim) : getMscale(factor);
  }
  const betaFast = r.betaFast || 32;
  const betaSlow = r.betaSlow || 1;
  const correctionDim = (rotations: number): number =>
    (dim * Math.log(r.originalMaxPositions / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(betaFast);
  let high = correctionDim(betaSlow);
  if (r.truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  low = Math.max(low, 0);
  high = Math.min(high, dim - 1);
  if (low === high) high += 0.001; // transformers: prevent a zero-width ramp

  const half = dim / 2;
  const out = new Float32Array(half);
  const b = f32(base);
  const fac = f32(factor);
  const lo = f32(low);
  const width = f32(high - low);
  for (let i = 0; i < half; i++) {
    const pos = f32(Math.pow(b, f32((2 * i) / dim)));
    const extrapolation = f32(1 / pos);
    const interpolation = f32(1 / f32(fac * pos));
    const ramp = Math.min(1, Math.max(0, f32(f32(i - lo) / width)));
    const extrapolationFactor = f32(1 - ramp);
    out[i] = f32(f32(interpolation * f32(1 - extrapolationFactor)) + f32(extrapolation * extrapolationFactor));
  }
  return { invFreq: out, attentionScaling };
}

function llama3(spec: ModelSpec, dim: number): RopeTable {
  const r = spec.rope;
  const inv = defaultInvFreq(r.theta, dim);
  const factor = f32(r.factor);
  const low = r.lowFreqFactor as number;
  const high = r.highFreqFactor as number;
  const oldContext = r.originalMaxPositions;
  const lowFreqWavelen = oldContext / low;
  const highFreqWavelen = oldContext / high;
  const twoPi = f32(2 * Math.PI);
  for (let i = 0; i < inv.length; i++) {
    const wavelen = f32(twoPi / inv[i]);
    const scaled = wavelen > lowFreqWavelen ? f32(inv[i] / factor) : inv[i];
    if (wavelen < highFreqWavelen || wavelen > lowFreqWavelen) {
      inv[i] = scaled;
    } else {
      const smooth = f32(f32(f32(oldContext / wavelen) - f32(low)) / f32(high - low));
      inv[i] = f32(f32(f32(f32(1 - smooth) * scaled) / factor) + f32(smooth * scaled));
    }
  }
  return { invFreq: inv, attentionScaling: 1 };
}

/**
 * The inverse frequencies and cos/sin scaling of a model's RoPE. `seqLen` matters only for
 * `dynamic` (NTK): up to max_position_embeddings it is the default RoPE, beyond it the base grows
 * as transformers' dynamic_rope_update does for that length.
 */
export function ropeInvFreq(spec: ModelSpec, seqLen?: number): RopeTable {
  const dim = rotaryDim(spec);
  if (dim < 2 || dim % 2 !== 0) {
    throw new ModelError('ROPE_UNSUPPORTED', `rotary dim ${dim} (head_dim ${spec.headDim}) must be even and >= 2`);
  }
  const r = spec.rope;
  switch (r.type) {
    case 'default':
      return { invFreq: defaultInvFreq(r.theta, dim), attentionScaling: 1 };
    case 'linear': {
      const inv = defaultInvFreq(r.theta, dim);
      const factor = f32(r.factor);
      for (let i = 0; i < inv.length; i++) inv[i] = f32(inv[i] / factor);
      return { invFreq: inv, attentionScaling: 1 };
    }
    case 'dynamic': {
      const maxPos = spec.maxPositions;
      const seq = Math.max(seqLen ?? maxPos, maxPos);
      const base = r.theta * Math.pow((r.factor * seq) / maxPos - (r.factor - 1), dim / (dim - 2));
      return { invFreq: defaultInvFreq(base, dim), attentionScaling: 1 };
    }
    case 'yarn':
      return yarn(spec, dim);
    case 'llama3':
      return llama3(spec, dim);
    default: {
      const unknownType: string = r.type;
      throw new ModelError('ROPE_UNSUPPORTED', `rope type "${unknownType}" is not supported`);
    }
  }
}
