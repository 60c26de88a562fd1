// measureCostModel on the CPU backend with a tiny layer: the model has the structure the planner
// reads, and with two ranks (an in-process Communicator) both ranks end with the very same model.
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { InProcessCommunicator } from '../src/comm/inProcessCommunicator';
import { Device, type Stream, type Tensor, dtypeBytes } from '../src/native/device';
import { expertKernelsOf } from '../src/native/ops';
import { type CostModel, validateCostModel } from '../src/moe/cost/costModel';
import { loadCostModel, saveCostModel } from '../src/moe/cost/costModelStore';
import { type MeasureCostModelOptions, type MeasureProgress, defaultMaxActivationBytes, measureCostModel } from '../src/moe/cost/profiler';
import { expertRanges } from '../src/moe/placement';
import { planMoeLayer } from '../src/moe/plan/planner';

const H = 32;
const I = 16;
const Is = 24;
const E = 4;
const K = 2;

let device: Device;
beforeAll(() => {
  device = Device.open('cpu');
});
afterAll(() => device.dispose());

test('the CPU device runs grouped and dense as themselves (grouped_sm90 as grouped)', () => {
  expect(expertKernelsOf(device)).toEqual(['grouped', 'dense']);
});

/** Ranks of one process meeting at numbered collectives (the n-th call of every rank pairs up). */

const options = (over: Partial<MeasureCostModelOptions> = {}): MeasureCostModelOptions => ({
  device,
  dtype: 'f32',
  hidden: H,
  expertIntermediate: I,
  sharedIntermediate: Is,
  numExperts: E,
  topK: K,
  versions: { napi: '8' },
  rowsPerExpert: [1, 2, 4, 8],
  allToAllBytes: [1024, 4096, 16384],
  smallOpTokens: [8, 64],
  warmup: 1,
  reps: 3,
  now: () => new Date('2025-06-01T12:00:00Z'),
  ...over,
});

function expectCurves(model: CostModel, localExperts: number): void {
  expect(model.gemm.map((g) => [g.n, g.k, g.segments])).toEqual([
    [2 * I, H, localExperts],
    [H, I, localExperts],
    [2 * Is, H, 1],
    [H, Is, 1],
  ]);
  for (const g of model.gemm) {
    // The CPU runs grouped_sm90 as grouped: no curve of its own, so the planner never offers it.
    expect(g.grouped_sm90).toBeUndefined();
    for (const curve of [g.grouped, g.dense]) {
      expect(curve.overheadMs).toBeGreaterThanOrEqual(0);
      expect(curve.points.map((p) => p.rows)).toEqual([1, 2, 4, 8]);
      for (let i = 0; i < curve.points.length; i++) {
        expect(curve.points[i].ms).toBeGreaterThan(0);
        if (i > 0) expect(curve.points[i].ms).toBeGreaterThanOrEqual(curve.points[i - 1].ms);
      }
    }
  }
  for (const op of ['router', 'permute', 'swiglu', 'unpermute'] as const) {
    expect(model.smallOps[op].fixedMs).toBeGreaterThanOrEqual(0);
    expect(model.smallOps[op].msPerRow).toBeGreaterThanOrEqual(0);
  }
  expect(model.smallOps.swiglu.width).toBe(I);
  // The host sync: a read and (several ranks) a gather, on the host clock: above 0, well under a second.
  expect(model.smallOps.hostSyncMs).toBeGreaterThan(0);
  expect(model.smallOps.hostSyncMs).toBeLessThan(1000);
  expect(validateCostModel(JSON.parse(JSON.stringify(model)))).toEqual(model);
}

test('one rank: GEMM curves and small ops, cached and usable by the planner', async () => {
  const seen: MeasureProgress[] = [];
  const model = await measureCostModel(options({ onProgress: (p) => seen.push(p) }));
  expect(model.key).toEqual({
    device: device.name,
    backend: 'cpu',
    dtype: 'f32',
    hidden: H,
    expertIntermediate: I,
    sharedIntermediate: Is,
    numExperts: E,
    topK: K,
    versions: { napi: '8' },
    worlds: [1],
  });
  expect(model.measuredAt).toBe('2025-06-01T12:00:00.000Z');
  expect(model.allToAll).toEqual([]);
  expectCurves(model, E);
  expect(seen.length).toBeGreaterThan(10);
  expect(seen[seen.length - 1].done).toBe(seen[seen.length - 1].total);
  expect(new Set(seen.map((p) => p.phase))).toEqual(new Set(['gemm', 'smallOps']));

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'eps-prof-'));
  try {
    await saveCostModel(dir, model);
    expect(await loadCostModel(dir, model.key)).toEqual(model);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }

  const plan = planMoeLayer(
    {
      counts: [Int32Array.from({ length: 8 * E }, (_, i) => 1 + (i % 3))],
      microChunks: 8,
      numExperts: E,
      topK: K,
      microBounds: Array.from({ length: 9 }, (_, m) => m * 3),
      rank: 0,
      ranges: expertRanges(E, 1),
      hidden: H,
      expertIntermediate: I,
      dtypeBytes: 4,
      sharedIntermediate: Is,
    },
    model,
    { kind: 'auto' },
  );
  expect(plan.degree).toBe(1);
  expect(plan.predictedMs).toBeGreaterThan(0);
});

test('two ranks: all-to-all by size, and both ranks hold the same model', async () => {
  const comms = InProcessCommunicator.group(2);
  const models = await Promise.all(comms.map((comm) => measureCostModel(options({ comm }))));
  expect(models[1]).toEqual(models[0]);
  const model = models[0];
  expect(model.key.worlds).toEqual([2]);
  expectCurves(model, 2);
  expect(model.allToAll.length).toBe(1);
  const curve = model.allToAll[0];
  expect(curve.world).toBe(2);
  // f32 rows of 32: 128 bytes; each rank sends its peer bytes / 128 rows.
  expect(curve.points.map((p) => p.bytes)).toEqual([1024, 4096, 16384]);
  for (const p of curve.points) expect(p.ms).toBeGreaterThan(0);
  expect(curve.latencyMs).toBeGreaterThanOrEqual(0);
  expect(curve.bytesPerMs).toBeGreaterThan(0);
});

test('the GEMM measurements may use 4 GiB of activations on a large GPU (not 0: a 32-bit shift once made it 0)', () => {
  expect(defaultMaxActivationBytes(true, 139e9)).toBe(4 * 2 ** 30);
  expect(defaultMaxActivationBytes(true, 8 * 2 ** 30)).toBe(2 * 2 ** 30);
  expect(defaultMaxActivationBytes(false, 0)).toBe(64 * 2 ** 20);
});
