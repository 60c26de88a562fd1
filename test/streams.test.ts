// Streams, events and stream-point promises on the CPU backend: each stream is its own worker thread,
// so ordering across streams holds only through events, as on a GPU.
import { Device, tensorFromFloat32 } from '../src/native/device';
import * as ops from '../src/native/ops';

const device = Device.open('cpu');

function filled(n: number, v: number) {
  return new Float32Array(n).fill(v);
}

test('an event orders work across two streams', async () => {
  const a = device.stream();
  const b = device.stream();
  const n = 1 << 16;
  const x = tensorFromFloat32(device, a, 'f32', [256, 256], filled(n, 1));
  const w = tensorFromFloat32(device, a, 'f32', [256, 256], filled(n, 0.5));
  const y = device.tensor('f32', [256, 256]);
  for (let i = 0; i < 4; i++) ops.matmul(a, y, x, w); // long enough that b would overtake a without the wait
  const done = a.record();
  b.wait(done);
  const z = device.tensor('f32', [256, 256]);
  ops.add(b, z, y, y);
  const out = await z.readFloat32(b);
  expect(out.every((v) => v === 256)).toBe(true); // (256 * 0.5) * 2
  for (const t of [x, w, y, z]) t.dispose();
});

test('synchronize rejects with the failed op named, and the stream stays failed', async () => {
  const s = device.stream();
  const table = tensorFromFloat32(device, s, 'f32', [4, 3], filled(12, 1));
  const ids = device.tensor('i32', [2]);
  ids.upload(s, new Int32Array([0, 99])); // 99 is outside the table: the kernel throws on the worker
  const out = device.tensor('f32', [2, 3]);
  ops.embedding(s, out, table, ids);
  await expect(s.synchronize()).rejects.toThrow(/embedding/);
  await expect(s.synchronize()).rejects.toThrow(/embedding/);
});

test('elapsedSince measures time between two recorded events', async () => {
  const s = device.stream();
  const x = tensorFromFloat32(device, s, 'f32', [512, 512], filled(512 * 512, 1));
  const y = device.tensor('f32', [512, 512]);
  const start = s.record();
  ops.matmul(s, y, x, x);
  const end = s.record();
  await s.synchronize();
  const ms = end.elapsedSince(start);
  expect(ms).toBeGreaterThan(0);
  expect(ms).toBeLessThan(60_000);
});

test('four streams running parallel ops at once, many times, agree with one stream', async () => {
  // Stresses the shared thread pool: several streams' ops split work across it at the same time.
  const streams = [0, 1, 2, 3].map(() => device.stream());
  const n = 96;
  const x = tensorFromFloat32(
    device,
    streams[0],
    'f32',
    [n, n],
    Float32Array.from({ length: n * n }, (_, i) => ((i * 7) % 13) / 13),
  );
  await streams[0].synchronize();
  const ref = device.tensor('f32', [n, n]);
  ops.matmul(streams[0], ref, x, x);
  const want = await ref.readFloat32(streams[0]);
  const outs = streams.map(() => device.tensor('f32', [n, n]));
  const w = tensorFromFloat32(device, streams[0], 'f32', [n], filled(n, 1));
  const normed = streams.map(() => device.tensor('f32', [n, n]));
  await streams[0].synchronize();
  for (let rep = 0; rep < 100; rep++) streams.forEach((s, i) => ops.matmul(s, outs[i], x, x));
  // Many small parallel ops: the window between a helper finishing its chunk and the caller returning.
  for (let rep = 0; rep < 3000; rep++) streams.forEach((s, i) => ops.rmsnorm(s, normed[i], x, w, 1e-6));
  for (const [i, s] of streams.entries()) expect(Array.from(await outs[i].readFloat32(s))).toEqual(Array.from(want));
  for (const [i, s] of streams.entries()) expect((await normed[i].readFloat32(s))[1]).toBeGreaterThan(0);
});

test('a disposed tensor is an error naming it, not a crash', () => {
  const s = device.stream();
  const t = device.tensor('f32', [2, 2]);
  t.dispose();
  expect(() => ops.add(s, t, t, t)).toThrow(/disposed/);
});

test("disposing a tensor frees its memory for its views too; a view's dispose leaves the tensor", async () => {
  const s = device.stream();
  const t = tensorFromFloat32(device, s, 'f32', [4, 2], filled(8, 3));
  const view = t.rows(1, 2);
  view.dispose(); // only the view's handle
  expect(Array.from(await t.rows(2, 1).readFloat32(s))).toEqual([3, 3]);
  // Views made per op used to keep the memory until the garbage collector finalized them (GPU memory
  // ran out in the MoE benchmark); now the tensor's dispose releases it and a view left over says so.
  const other = t.reshape([8]);
  t.dispose();
  expect(() => ops.add(s, other, other, other)).toThrow(/disposed/);
  await expect(other.readFloat32(s)).rejects.toThrow(/disposed/);
});

test('memory counters: each CPU tensor is one allocation from the heap, held until disposed', () => {
  // The process's CPU devices share one backend (and its counters): count from here.
  const before = device.memoryCounters();
  expect(before.outOfMemoryFlushes).toBe(0);
  expect(before.cachedBytes).toBe(0);
  const a = device.tensor('f32', [1000]); // 4000 bytes: 64-byte rounded, plus 64 (never empty)
  const b = device.tensor('bf16', [10]);
  const held = device.memoryCounters();
  expect(held.allocations - before.allocations).toBe(2);
  expect(held.allocatedBytes - before.allocatedBytes).toBe(4096 + 128);
  expect(held.reservedBytes - before.reservedBytes).toBe(4096 + 128);
  expect(held.allocateMs).toBeGreaterThanOrEqual(before.allocateMs);
  a.dispose();
  const after = device.memoryCounters();
  expect(after.allocations - before.allocations).toBe(2);
  expect(after.reservedBytes - before.reservedBytes).toBe(128);
  b.dispose();
  expect(device.memoryCounters().reservedBytes).toBe(before.reservedBytes);
});
