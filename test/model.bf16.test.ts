// float32 -> bfloat16 / float16 rounding, against bit patterns worked out from the IEEE formats.
import { bf16BitsToF32, f16BitsToF32, f32ArrayToBf16, f32ToBf16Bits, f32ToF16Bits } from '../src/model/bf16';

describe('bfloat16', () => {
  test.each([
    [1.0, 0x3f80],
    [-2.0, 0xc000],
    [0, 0x0000],
    [1 + 2 ** -7, 0x3f81], // exactly representable
    [1 + 2 ** -8, 0x3f80], // halfway between 0x3f80 and 0x3f81: ties to even
    [1 + 3 * 2 ** -8, 0x3f82], // halfway between 0x3f81 and 0x3f82: ties to even
    [1 + 2 ** -8 + 2 ** -20, 0x3f81], // just above halfway: up
    [Infinity, 0x7f80],
    [3.4e38, 0x7f80], // rounds past the largest finite bfloat16
  ])('%p -> %s', (x, bits) => {
    expect(f32ToBf16Bits(x)).toBe(bits);
    const arr = new Uint16Array(1);
    f32ArrayToBf16(new Float32Array([x]), arr);
    expect(arr[0]).toBe(bits);
  });

  test('NaN stays NaN', () => {
    expect(Number.isNaN(bf16BitsToF32(f32ToBf16Bits(NaN)))).toBe(true);
  });

  test('bits back to float', () => {
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(bf16BitsToF32(0xc0a0)).toBe(-5);
  });
});

describe('float16', () => {
  test.each([
    [1.0, 0x3c00],
    [-2.0, 0xc000],
    [65504, 0x7bff], // largest finite
    [65520, 0x7c00], // halfway to 65536: rounds to even = infinity
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // halfway to the smallest subnormal: ties to even (zero)
    [3 * 2 ** -25, 0x0002], // 1.5 subnormal steps: ties to even (2)
    [0.1, 0x2e66],
    [1 + 2 ** -11, 0x3c00], // halfway: even
    [1 + 3 * 2 ** -11, 0x3c02],
  ])('%p -> %s', (x, bits) => {
    expect(f32ToF16Bits(x)).toBe(bits);
  });

  test('bits back to float', () => {
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0xfc00)).toBe(-Infinity);
  });
});
