// The ops DBRX added (native/ops.md): layernorm (LayerNorm without bias) and clamp (clip_qkv), on the CPU
// backend against float64 references written here, for f32 and bf16 storage, plus their contract checks.
// Bounds as ops.cpu.test.ts: f32 storage relative L2 and max error <= 1e-5; bf16 relative L2 <= 1e-2 against
// the reference run on the bf16-rounded inputs.
import * as ops from '../src/native/ops';
import { cpuTestDevice } from './helpers/cpuDevice';
import { Rng, encodeFloats, relL2, relMaxErr, roundTo, type FloatStorage } from './reference/numeric';

const { device, stream: s, keep } = cpuTestDevice();

function floats(dtype: FloatStorage, shape: number[], values: ArrayLike<number>) {
  const v = Float64Array.from(values, (x) => roundTo(dtype, x));
  const t = keep(device.tensor(dtype, shape));
  t.upload(s, encodeFloats(dtype, v));
  return { t, v };
}

function random(rng: Rng, dtype: FloatStorage, shape: number[], lo: number, hi: number) {
  return floats(dtype, shape, rng.array(shape.reduce((a, b) => a * b, 1), lo, hi));
}

/** float64 LayerNorm without bias over rows of w.length: (x - mean) / sqrt(biased var + eps) * w. */
function layernormRef(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  const H = w.length;
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / H; r++) {
    let mean = 0;
    for (let h = 0; h < H; h++) mean += x[r * H + h];
    mean /= H;
    let v = 0;
    for (let h = 0; h < H; h++) v += (x[r * H + h] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / H + eps);
    for (let h = 0; h < H; h++) out[r * H + h] = (x[r * H + h] - mean) * inv * w[h];
  }
  return out;
}

function expectClose(got: Float32Array, want: Float64Array, dtype: FloatStorage): void {
  expect(got).toHaveLength(want.length);
  if (dtype === 'f32') {
    expect(relL2(got, want)).toBeLessThanOrEqual(1e-5);
    expect(relMaxErr(got, want)).toBeLessThanOrEqual(1e-5);
  } else {
    expect(relL2(got, want)).toBeLessThanOrEqual(1e-2);
  }
}

describe.each(['f32', 'bf16'] as const)('%s storage', (dtype) => {
  test('layernorm over rows, with an offset the mean must remove, and in place', async () => {
    const rng = new Rng(31);
    // A large common offset: a one-pass E[x^2] - E[x]^2 would lose the variance in fp32.
    const x = floats(dtype, [6, 37], rng.array(6 * 37, -2, 2).map((v) => v + 30));
    const w = random(rng, dtype, [37], 0.5, 1.5);
    const out = keep(device.tensor(dtype, [6, 37]));
    ops.layernorm(s, out, x.t, w.t, 1e-5);
    expectClose((await out.read(s)) as Float32Array, layernormRef(x.v, w.v, 1e-5), dtype);

    const y = random(rng, dtype, [3, 4, 16], -3, 3);
    const wy = random(rng, dtype, [16], 0.5, 1.5);
    ops.layernorm(s, y.t, y.t, wy.t, 1e-6);
    expectClose((await y.t.read(s)) as Float32Array, layernormRef(y.v, wy.v, 1e-6), dtype);
  });

  test('layernorm of a constant row is 0 (variance 0, eps keeps it finite)', async () => {
    const x = floats(dtype, [2, 8], new Array(16).fill(1.5));
    const w = floats(dtype, [8], new Array(8).fill(2));
    const out = keep(device.tensor(dtype, [2, 8]));
    ops.layernorm(s, out, x.t, w.t, 1e-5);
    expect(Array.from((await out.read(s)) as Float32Array)).toEqual(new Array(16).fill(0));
  });

  test('clamp, out of place and in place; NaN stays NaN', async () => {
    const rng = new Rng(32);
    const values = rng.array(5 * 33, -3, 3);
    values[7] = NaN;
    const x = floats(dtype, [5, 33], values);
    const out = keep(device.tensor(dtype, [5, 33]));
    ops.clamp(s, out, x.t, -1.25, 1.25);
    const want = x.v.map((v) => (Number.isNaN(v) ? v : Math.min(Math.max(v, -1.25), 1.25)));
    const got = (await out.read(s)) as Float32Array;
    expect(Number.isNaN(got[7])).toBe(true);
    got.forEach((g, i) => {
      if (i !== 7) expect(g).toBe(roundTo(dtype, want[i]));
    });
    // The engine clamps q, k and v in place, each viewed as it is.
    ops.clamp(s, x.t, x.t, -0.5, 2);
    const inPlace = (await x.t.read(s)) as Float32Array;
    inPlace.forEach((g, i) => {
      if (i !== 7) expect(g).toBe(roundTo(dtype, Math.min(Math.max(x.v[i], -0.5), 2)));
    });
  });
});

describe('contract checks', () => {
  test('layernorm: w must match the rows, out must match x, eps >= 0', () => {
    const x = keep(device.tensor('f32', [4, 8]));
    const w = keep(device.tensor('f32', [8]));
    expect(() => ops.layernorm(s, x, x, keep(device.tensor('f32', [7])), 1e-5)).toThrow(/layernorm: x must be \[\.\.,H\] with H=7/);
    expect(() => ops.layernorm(s, keep(device.tensor('f32', [4, 7])), x, w, 1e-5)).toThrow(/layernorm: out must be \[\.\.,H\]/);
    expect(() => ops.layernorm(s, x, x, w, -1)).toThrow(/layernorm: eps must be >= 0/);
  });

  test('clamp: same number of elements, lo <= hi, both finite', () => {
    const x = keep(device.tensor('f32', [4, 8]));
    expect(() => ops.clamp(s, keep(device.tensor('f32', [4, 7])), x, -1, 1)).toThrow(/clamp: x must have 28 elements/);
    expect(() => ops.clamp(s, x, x, 1, -1)).toThrow(/clamp: lo must be <= hi; got lo 1, hi -1/);
    expect(() => ops.clamp(s, x, x, NaN, 1)).toThrow(/clamp: lo must be finite/);
  });
});
