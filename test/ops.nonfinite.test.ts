// count_nonfinite on the CPU backend against a count made here from the values as stored (bf16 and f16
// round large finite values to Inf: the reference rounds first, then counts), plus checkOp's shape rules.
import { cpuTestDevice } from './helpers/cpuDevice';
import * as ops from '../src/native/ops';
import { Rng, encodeFloats, roundTo, type FloatStorage } from './reference/numeric';

const { device, stream: s, keep } = cpuTestDevice();

test.each([
  ['f32', 7, 33],
  ['bf16', 4, 1000],
  ['f16', 3, 17],
  ['f32', 1, 1],
] as const)('count_nonfinite %s [%d,%d] counts NaN, +Inf and -Inf per row', async (dt, R, N) => {
  const rng = new Rng(R * 31 + N);
  const v = Float64Array.from(rng.array(R * N, -2, 2));
  // Row r gets r specials (cycling NaN, +Inf, -Inf) at spread positions; f16 also gets a value past its range.
  for (let r = 0; r < R; r++) {
    for (let j = 0; j < Math.min(r, N); j++) v[r * N + ((j * 7) % N)] = [NaN, Infinity, -Infinity][j % 3];
  }
  if (dt === 'f16' && N > 1) v[N - 1] = 1e6; // rounds to +Inf in f16: as stored, it is not finite
  const stored = Float64Array.from(v, (x) => roundTo(dt as FloatStorage, x));
  const want = Array.from({ length: R }, (_, r) => stored.subarray(r * N, (r + 1) * N).filter((x) => !Number.isFinite(x)).length);
  const x = keep(device.tensor(dt, [R, N]));
  x.upload(s, encodeFloats(dt, stored));
  const counts = keep(device.tensor('i32', [R]));
  ops.countNonfinite(s, counts, x);
  expect(Array.from(await counts.read(s))).toEqual(want);
});

test('count_nonfinite: checkOp names the argument and the shape it wanted', () => {
  const x = keep(device.tensor('f32', [3, 4]));
  expect(() => ops.countNonfinite(s, keep(device.tensor('i32', [4])), x)).toThrow(
    /count_nonfinite: counts must be \[R\] with R=3 \(x is \[3,4\]\); got \[4\]/,
  );
  expect(() => ops.countNonfinite(s, keep(device.tensor('f32', [3])), x)).toThrow(/count_nonfinite: counts must be i32; got f32/);
  expect(() => ops.countNonfinite(s, keep(device.tensor('i32', [12])), keep(device.tensor('f32', [12])))).toThrow(
    /count_nonfinite: x must be \[R,N\] \(2-d\); got \[12\]/,
  );
});
