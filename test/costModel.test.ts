// The cost model's predictions (against values worked out by hand from the formulas in costModel.ts),
// its fit of latency and bandwidth, and its cache on disk.
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  COST_MODEL_VERSION,
  type CostModel,
  type CostModelKey,
  CostModelError,
  allToAllMs,
  fitLatencyBandwidth,
  gemmMs,
  interpolateLogLog,
  linearMs,
  swigluMs,
} from '../src/moe/cost/costModel';
import { costModelFingerprint, costModelKey, defaultCostModelDir, loadCostModel, saveCostModel } from '../src/moe/cost/costModelStore';

const key: CostModelKey = {
  device: 'NVIDIA H200',
  backend: 'cuda',
  dtype: 'bf16',
  hidden: 2048,
  expertIntermediate: 768,
  sharedIntermediate: 0,
  numExperts: 128,
  topK: 8,
  versions: { cuda: '12.8', cublas: '12.8.4', nccl: '2.26.2' },
  worlds: [2, 4],
};

function model(): CostModel {
  return {
    version: COST_MODEL_VERSION,
    key,
    measuredAt: '2025-01-01T00:00:00.000Z',
    gemm: [
      {
        n: 1536,
        k: 2048,
        segments: 16,
        grouped: {
          overheadMs: 0.01,
          points: [
            { rows: 1, ms: 1 },
            { rows: 4, ms: 16 },
            { rows: 16, ms: 32 },
          ],
        },
        dense: {
          overheadMs: 0.002,
          points: [
            { rows: 2, ms: 0.5 },
            { rows: 8, ms: 2 },
          ],
        },
      },
    ],
    allToAll: [{ world: 4, latencyMs: 0.05, bytesPerMs: 1e6, points: [] }],
    smallOps: {
      router: { fixedMs: 0.01, msPerRow: 0.001 },
      permute: { fixedMs: 0.02, msPerRow: 0.002 },
      swiglu: { fixedMs: 0.003, msPerRow: 0.0001, width: 768 },
      unpermute: { fixedMs: 0.04, msPerRow: 0.004 },
      hostSyncMs: 0.3,
    },
  };
}

describe('interpolateLogLog', () => {
  const points = [
    { rows: 1, ms: 1 },
    { rows: 4, ms: 16 },
    { rows: 16, ms: 32 },
  ];
  test('hits the measured points', () => {
    expect(interpolateLogLog(points, 1)).toBe(1);
    expect(interpolateLogLog(points, 4)).toBeCloseTo(16, 12);
    expect(interpolateLogLog(points, 16)).toBeCloseTo(32, 12);
  });
  test('is linear in log-log between points', () => {
    // rows 2 is halfway from 1 to 4 in log: ms = exp((ln 1 + ln 16) / 2) = 4.
    expect(interpolateLogLog(points, 2)).toBeCloseTo(4, 12);
    // rows 8 is halfway from 4 to 16: ms = sqrt(16 * 32).
    expect(interpolateLogLog(points, 8)).toBeCloseTo(Math.sqrt(16 * 32), 12);
  });
  test('holds the first point below it and grows in proportion above the last', () => {
    expect(interpolateLogLog([{ rows: 4, ms: 2 }], 1)).toBe(2);
    expect(interpolateLogLog(points, 64)).toBeCloseTo(128, 12);
  });
  test('needs points', () => {
    expect(() => interpolateLogLog([], 3)).toThrow(CostModelError);
  });
});

describe('gemmMs', () => {
  test('grouped: overhead plus the curve of each non-empty segment', () => {
    // segments 1, 0, 4, 2 rows: 0.01 + 1 + 16 + 4
    expect(gemmMs(model(), 'grouped', [1, 0, 4, 2], 1536, 2048)).toBeCloseTo(21.01, 12);
  });
  test('dense: per-GEMM time at each segment row count', () => {
    // 0.002 + 0.5 (1 row: below the first point) + 1 (4 rows, halfway 2..8 in log: sqrt(0.5 * 2)) + 2
    expect(gemmMs(model(), 'dense', [1, 4, 8], 1536, 2048)).toBeCloseTo(0.002 + 0.5 + 1 + 2, 12);
  });
  test('no rows: the executor skips the op, so 0', () => {
    expect(gemmMs(model(), 'grouped', [0, 0], 1536, 2048)).toBe(0);
    expect(gemmMs(model(), 'dense', [], 1536, 2048)).toBe(0);
  });
  test('a shape the model lacks is an error naming it', () => {
    expect(() => gemmMs(model(), 'dense', [1], 2048, 768)).toThrow(/N=2048, K=768.*\(1536, 2048\)/);
  });
});

describe('allToAllMs', () => {
  test('latency + bytes / bandwidth', () => {
    expect(allToAllMs(model(), 4, 2e6)).toBeCloseTo(2.05, 12);
    expect(allToAllMs(model(), 4, 0)).toBeCloseTo(0.05, 12);
  });
  test('nothing moves in a world of one', () => {
    expect(allToAllMs(model(), 1, 1e9)).toBe(0);
  });
  test('a world the model lacks is an error', () => {
    let err: unknown;
    try {
      allToAllMs(model(), 8, 10);
    } catch (e) {
      err = e;
    }
    expect((err as CostModelError).code).toBe('EPS_COST_MODEL_NO_WORLD');
  });
});

test('small ops: fixed + per row; swiglu scaled by width', () => {
  expect(linearMs({ fixedMs: 0.5, msPerRow: 0.25 }, 4)).toBe(1.5);
  expect(linearMs({ fixedMs: 0.5, msPerRow: 0.25 }, 0)).toBe(0);
  // 0.003 + 0.0001 * 10 rows * (1536 / 768)
  expect(swigluMs(model(), 10, 1536)).toBeCloseTo(0.005, 12);
});

describe('fitLatencyBandwidth', () => {
  test('recovers an exact line', () => {
    const points = [1e3, 1e4, 1e5, 1e6, 1e7].map((bytes) => ({ bytes, ms: 0.02 + bytes / 5e5 }));
    const fit = fitLatencyBandwidth(points);
    expect(fit.latencyMs).toBeCloseTo(0.02, 9);
    expect(fit.bytesPerMs / 5e5).toBeCloseTo(1, 9);
  });
  test('never fits a negative latency or bandwidth', () => {
    const noisy = fitLatencyBandwidth([
      { bytes: 1000, ms: 0.001 },
      { bytes: 2000, ms: 0.5 },
      { bytes: 3000, ms: 1 },
    ]);
    expect(noisy.latencyMs).toBeGreaterThanOrEqual(0);
    expect(noisy.bytesPerMs).toBeGreaterThan(0);
    const flat = fitLatencyBandwidth([
      { bytes: 1000, ms: 2 },
      { bytes: 8000, ms: 1 },
    ]);
    expect(flat.latencyMs).toBeGreaterThanOrEqual(0);
    expect(flat.bytesPerMs).toBeGreaterThan(0);
  });
});

describe('the cache on disk', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'eps-cost-'));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('save then load gives the same model', async () => {
    const file = await saveCostModel(path.join(dir, 'nested'), model());
    expect(path.basename(file)).toBe(costModelKey(key));
    const back = await loadCostModel(path.join(dir, 'nested'), key);
    expect(back).toEqual(model());
    // The order worlds are listed in does not matter.
    expect(await loadCostModel(path.join(dir, 'nested'), { ...key, worlds: [4, 2] })).toEqual(model());
  });

  test('another key misses', async () => {
    await saveCostModel(dir, model());
    expect(await loadCostModel(dir, { ...key, versions: { ...key.versions, cublas: '12.9.0' } })).toBeUndefined();
    expect(await loadCostModel(dir, { ...key, hidden: 4096 })).toBeUndefined();
  });

  test('a damaged file is an error that says how to recover', async () => {
    await fs.writeFile(path.join(dir, costModelKey(key)), '{"version": 1, "key"');
    await expect(loadCostModel(dir, key)).rejects.toThrow(/not JSON.*delete it/);
    const bad = {
      ...model(),
      gemm: [
        {
          ...model().gemm[0],
          dense: {
            overheadMs: 0,
            points: [
              { rows: 4, ms: 1 },
              { rows: 2, ms: 2 },
            ],
          },
        },
      ],
    };
    await fs.writeFile(path.join(dir, costModelKey(key)), JSON.stringify(bad));
    await expect(loadCostModel(dir, key)).rejects.toThrow(/gemm\[0\]\.dense\.points\[1\]\.rows is not ascending/);
    await fs.writeFile(path.join(dir, costModelKey(key)), JSON.stringify({ ...model(), key: { ...key, hidden: 1 } }));
    await expect(loadCostModel(dir, key)).rejects.toThrow(/another key/);
  });

  test('file names: readable, and different for different keys', () => {
    const name = costModelKey(key);
    expect(name).toMatch(/^cuda-nvidia-h200-bf16-h2048-i768-s0-e128-k8-w2_4-[0-9a-f]{12}-v4\.json$/);
    expect(costModelKey({ ...key, versions: { ...key.versions, nccl: '2.27.0' } })).not.toBe(name);
    expect(costModelKey({ ...key, worlds: [4, 2] })).toBe(name);
  });

  test('default folder: $EPS_CACHE_DIR, else ~/.cache/eps-moe', () => {
    expect(defaultCostModelDir({ EPS_CACHE_DIR: '/var/cache/eps' })).toBe(path.join('/var/cache/eps', 'cost-models'));
    expect(defaultCostModelDir({})).toBe(path.join(os.homedir(), '.cache', 'eps-moe', 'cost-models'));
  });
});

test('fingerprint: equal for equal models, whatever the measurement time; different otherwise', () => {
  const a = model();
  expect(costModelFingerprint({ ...a, measuredAt: '2030-01-01T00:00:00.000Z' })).toBe(costModelFingerprint(a));
  const b = model();
  b.allToAll[0].latencyMs = 0.051;
  expect(costModelFingerprint(b)).not.toBe(costModelFingerprint(a));
});
