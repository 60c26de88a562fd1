// measureCostModel on the CPU backend with a tiny layer: the model has the structure the planner
// reads, and with two ranks (an in-process Communicator) both ranks end with the very same model.
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Communicator } from '../src/comm/communicator';
import { Device, type Stream, type Tensor, dtypeBytes } from '../src/native/device';
import { type CostModel, loadCostModel, saveCostModel, validateCostModel } from '../src/moe/costModel';
import { type MeasureCostModelOptions, type MeasureProgress, measureCostModel } from '../src/moe/costModelProfiler';
import { expertRanges } from '../src/moe/placement';
import { planMoeLayer } from '../src/moe/scheduler';

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

/** Ranks of one process meeting at numbered collectives (the n-th call of every rank pairs up). */
class Hub {
  private readonly rounds = new Map<
    number,
    { payloads: unknown[]; arrived: number; resolve: (v: unknown[]) => void; done: Promise<unknown[]> }
  >();
  constructor(readonly world: number) {}
  exchange(round: number, rank: number, payload: unknown): Promise<unknown[]> {
    let r = this.rounds.get(round);
    if (!r) {
      let resolve!: (v: unknown[]) => void;
      const done = new Promise<unknown[]>((res) => (resolve = res));
      r = { payloads: new Array(this.world), arrived: 0, resolve, done };
      this.rounds.set(round, r);
    }
    r.payloads[rank] = payload;
    if (++r.arrived === this.world) {
      this.rounds.delete(round);
      r.resolve(r.payloads);
    }
    return r.done;
  }
}

class HubCommunicator implements Communicator {
  private round = 0;
  readonly world: number;
  constructor(
    private readonly hub: Hub,
    readonly rank: number,
  ) {
    this.world = hub.world;
  }
  async allToAll(stream: Stream, send: Tensor, sendRows: number[], recv: Tensor, recvRows: number[]): Promise<void> {
    const round = this.round++;
    const rowBytes = send.rowSize * dtypeBytes[send.dtype];
    const total = sendRows.reduce((a, b) => a + b, 0);
    const bytes = new Uint8Array(total > 0 ? await send.rows(0, total).bytes(stream) : new ArrayBuffer(0));
    const parts: Uint8Array[] = [];
    let offset = 0;
    for (const rows of sendRows) {
      parts.push(bytes.slice(offset, offset + rows * rowBytes));
      offset += rows * rowBytes;
    }
    const all = (await this.hub.exchange(round, this.rank, parts)) as Uint8Array[][];
    const out = new Uint8Array(recvRows.reduce((a, b) => a + b, 0) * rowBytes);
    offset = 0;
    for (let p = 0; p < this.world; p++) {
      out.set(all[p][this.rank], offset);
      offset += all[p][this.rank].byteLength;
    }
    if (out.byteLength > 0) recv.rows(0, out.byteLength / rowBytes).upload(stream, out);
  }
  async allGather(local: Int32Array): Promise<Int32Array[]> {
    return (await this.hub.exchange(this.round++, this.rank, Int32Array.from(local))) as Int32Array[];
  }
  async close(): Promise<void> {}
}

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
  const hub = new Hub(2);
  const models = await Promise.all([0, 1].map((rank) => measureCostModel(options({ comm: new HubCommunicator(hub, rank) }))));
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
