// float32 <-> bfloat16 / float16 conversion of host arrays, for make-model and tests (never on the
// hot path: the engine hands raw checkpoint bytes to the device). Rounding is round-to-nearest-even,
// as torch's .to(torch.bfloat16) / .half() do. The widening side lives in src/native/bf16.ts (the
// device's reads use it) and is re-exported here.
export { bf16ArrayToF32, bf16BitsToF32, f16ArrayToF32, f16BitsToF32 } from '../native/bf16';

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** bfloat16 bits of one float (round to nearest even; NaN stays a quiet NaN). */
export function f32ToBf16Bits(x: number): number {
  scratchF32[0] = x;
  const u = scratchU32[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x007fffff) !== 0) return ((u >>> 16) | 0x0040) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Rounds src to bfloat16 into dst (dst.length >= src.length). */
export function f32ArrayToBf16(src: Float32Array, dst: Uint16Array): void {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    dst[i] =
      (x & 0x7f800000) === 0x7f800000 && (x & 0x007fffff) !== 0
        ? ((x >>> 16) | 0x0040) & 0xffff
        : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
}

/** IEEE half bits of one float (round to nearest even, overflow to infinity, subnormals kept). */
export function f32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  const u = scratchU32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && (h & 1) === 1)) h += 1;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h += 1; // may carry into the exponent: correct
  return sign | h;
}

export function f32ArrayToF16(src: Float32Array, dst: Uint16Array): void {
  for (let i = 0; i < src.length; i++) dst[i] = f32ToF16Bits(src[i]);
}
