// Numbers for the op tests, computed without the code under test: a seeded PRNG, rounding to the
// storage formats by plain arithmetic (not by bit tricks like the kernels'), and error measures.

/** mulberry32: a small seeded PRNG; next() is uniform in [0, 1). */
export class Rng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  /** An integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.floor((hi - lo) * this.next());
  }
  array(n: number, lo = -1, hi = 1): number[] {
    return Array.from({ length: n }, () => this.uniform(lo, hi));
  }
  ints(n: number, lo: number, hi: number): number[] {
    return Array.from({ length: n }, () => this.int(lo, hi));
  }
}

/** The exponent e with 2^e <= a < 2^(e+1), for finite a > 0. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  return e;
}

interface FloatFormat {
  mantissaBits: number;
  minNormalExp: number;
  maxFinite: number;
}
const BF16: FloatFormat = { mantissaBits: 7, minNormalExp: -126, maxFinite: (2 - 2 ** -7) * 2 ** 127 };
const F16: FloatFormat = { mantissaBits: 10, minNormalExp: -14, maxFinite: 65504 };

/** x (an fp32 value) rounded to the format: nearest, ties to even, overflow to infinity. */
function roundToFormat(x: number, f: FloatFormat): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  const quantum = 2 ** (Math.max(exponentOf(a), f.minNormalExp) - f.mantissaBits);
  const n = a / quantum; // exact: division by a power of two
  let r = Math.floor(n);
  const frac = n - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  const v = r * quantum;
  const rounded = v > f.maxFinite ? Infinity : v;
  return x < 0 ? -rounded : rounded;
}

export function roundBf16(x: number): number {
  return roundToFormat(Math.fround(x), BF16);
}
export function roundF16(x: number): number {
  return roundToFormat(Math.fround(x), F16);
}

/** Bits of a bf16 value (one that roundBf16 returned): the top half of its fp32 bits. */
export function bf16Bits(v: number): number {
  const u = new Uint32Array(new Float32Array([v]).buffer);
  return u[0] >>> 16;
}

/** Bits of an f16 value (one that roundF16 returned), encoded field by field. */
export function f16Bits(v: number): number {
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a === Infinity) return sign | 0x7c00;
  if (a === 0) return sign;
  if (a < 2 ** -14) return sign | (a / 2 ** -24);
  const e = exponentOf(a);
  return sign | ((e + 15) << 10) | ((a / 2 ** e - 1) * 1024);
}

export type FloatStorage = 'f32' | 'bf16' | 'f16';

export function roundTo(dtype: FloatStorage, x: number): number {
  switch (dtype) {
    case 'f32':
      return Math.fround(x);
    case 'bf16':
      return roundBf16(x);
    case 'f16':
      return roundF16(x);
  }
}

/** The raw bytes of already-rounded values in a float storage format. */
export function encodeFloats(dtype: FloatStorage, values: ArrayLike<number>): Float32Array | Uint16Array {
  if (dtype === 'f32') return Float32Array.from(values);
  return Uint16Array.from(values, dtype === 'bf16' ? bf16Bits : f16Bits);
}

/** ||actual - expected|| / ||expected|| (0 when both are zero). */
export function relL2(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; i++) {
    num += (actual[i] - expected[i]) ** 2;
    den += expected[i] ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/** max |actual - expected| / max |expected| (0 when both are zero). */
export function relMaxErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} != ${expected.length}`);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    err = Math.max(err, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return scale === 0 ? err : err / scale;
}
