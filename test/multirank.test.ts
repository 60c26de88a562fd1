// Expert parallelism on the CPU backend: W ranks in one process (InProcessCommunicator), each holding
// 1/W of every MoE layer's experts and its own share of the sequences (possibly none), give the
// logits transformers computed, as one rank does; and so they do with each rank's experts in G groups
// (the routers loaded in the virtual order of moe/placement.ts), under plans of either axis.
import * as path from 'path';
import { InProcessCommunicator } from '../src/comm/inProcessCommunicator';
import { LocalCommunicator, type Communicator } from '../src/comm/communicator';
import { loadRankEngine, type LoadedEngine } from '../src/engine/rankEngine';
import { loadModelSpec } from '../src/model/config';
import type { CostModel } from '../src/moe/cost/costModel';
import { measureCostModel } from '../src/moe/cost/profiler';
import { parseMoeSchedule, type DispatchMode } from '../src/moe/schedule';
import { Device } from '../src/native/device';
import { FIXTURES, GOLDEN_FIXTURES, loadGolden } from './helpers/cli';

async function clusterForward(
  fixture: string,
  world: number,
  assign: (seq: number) => number,
  schedule = 'fixed:1:grouped',
  opts: { expertGroups?: number; costModel?: CostModel; dispatch?: DispatchMode } = {},
): Promise<Float32Array[]> {
  const golden = loadGolden(fixture);
  const comms: Communicator[] = world > 1 ? InProcessCommunicator.group(world) : [new LocalCommunicator()];
  const engines: LoadedEngine[] = await Promise.all(
    comms.map((comm) =>
      loadRankEngine({
        modelDir: path.join(FIXTURES, fixture),
        backend: 'cpu',
        deviceIndex: 0,
        comm,
        schedule: parseMoeSchedule(schedule),
        expertGroups: opts.expertGroups,
        costModel: opts.costModel,
        dispatch: opts.dispatch,
      }),
    ),
  );
  try {
    const mine = engines.map((_, r) => golden.sequences.map((_, i) => i).filter((i) => assign(i) === r));
    const outs = await Promise.all(engines.map(async (e, r) => (await e.step(mine[r].map((i) => golden.sequences[i]))).logits));
    const bySeq: Float32Array[] = [];
    mine.forEach((ids, r) => ids.forEach((i, j) => (bySeq[i] = outs[r][j])));
    return bySeq;
  } finally {
    await Promise.all(engines.map((e) => e.dispose()));
  }
}

function expectCloseToGolden(fixture: string, got: Float32Array[]): void {
  const golden = loadGolden(fixture);
  golden.logits.forEach((rows, s) => {
    const want = rows[rows.length - 1];
    const maxLogit = Math.max(...want.map(Math.abs));
    let maxDiff = 0;
    want.forEach((w, v) => (maxDiff = Math.max(maxDiff, Math.abs(got[s][v] - w))));
    expect(maxDiff).toBeLessThanOrEqual(1e-3 * maxLogit);
  });
}

const SCHEDULES = ['baseline', 'fixed:1:grouped', 'fixed:2:dense', 'fixed:3:grouped', 'fixed:8:grouped'];

describe.each(GOLDEN_FIXTURES)('expert parallel %s', (fixture) => {
  test.each([
    [2, 'round robin', (i: number) => i % 2],
    [3, 'rank 2 gets nothing', (i: number) => (i < 2 ? 0 : 1)],
    [4, 'one sequence each', (i: number) => i % 4],
  ])('%i ranks (%s) match transformers and one rank under every schedule', async (world, _name, assign) => {
    const single = await clusterForward(fixture, 1, () => 0);
    expectCloseToGolden(fixture, single);
    for (const schedule of SCHEDULES) {
      const multi = await clusterForward(fixture, world, assign, schedule);
      expectCloseToGolden(fixture, multi);
      expectSameLogits(single, multi);
    }
    // Dedup dispatch: each token once per rank (D = 1 plans), the per-pair path for fixed:2.
    for (const schedule of ['baseline', 'fixed:1:grouped', 'fixed:2:dense']) {
      const multi = await clusterForward(fixture, world, assign, schedule, { dispatch: 'dedup' });
      expectCloseToGolden(fixture, multi);
      expectSameLogits(single, multi);
    }
  });
});

/** A quick cost model of the fixture's MoE layer on `world` in-process ranks (for auto). */
async function quickCostModel(fixture: string, world: number): Promise<CostModel> {
  const spec = await loadModelSpec(path.join(FIXTURES, fixture));
  const device = Device.open('cpu');
  const comms = InProcessCommunicator.group(world);
  const models = await Promise.all(
    comms.map((comm) =>
      measureCostModel({
        device,
        comm,
        dtype: 'f32',
        hidden: spec.hiddenSize,
        expertIntermediate: spec.moe.expertIntermediate,
        sharedIntermediate: spec.moe.sharedIntermediate,
        numExperts: spec.moe.numExperts,
        topK: spec.moe.topK,
        rowsPerExpert: [1, 8],
        allToAllBytes: [1024, 16384],
        smallOpTokens: [4, 16],
        warmup: 0,
        reps: 1,
      }),
    ),
  );
  return models[0];
}

function expectSameLogits(single: Float32Array[], got: Float32Array[]): void {
  single.forEach((row, s) => {
    let maxDiff = 0;
    row.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - got[s][j]))));
    expect(maxDiff).toBeLessThan(1e-4);
  });
}

// (world, G, assignment): G up to the experts a rank holds (4 experts on 3 ranks: 2, 1, 1, so ranks
// 1 and 2 have an empty group; 4 experts on 4 ranks allow no groups).
const GROUPED: [number, number, (i: number) => number][] = [
  [1, 2, () => 0],
  [2, 2, (i) => i % 2],
  [2, 4, (i) => i % 2],
  [3, 2, (i) => (i < 2 ? 0 : 1)],
  [4, 2, (i) => i % 4],
];

describe.each(GOLDEN_FIXTURES)('expert groups %s', (fixture) => {
  test('every (world, G) the experts allow matches one rank under baseline, auto and plans of both axes', async () => {
    const spec = await loadModelSpec(path.join(FIXTURES, fixture));
    const single = await clusterForward(fixture, 1, () => 0);
    let ran = 0;
    for (const [world, groups, assign] of GROUPED) {
      if (Math.ceil(spec.moe.numExperts / world) < groups) continue;
      const costModel = world > 1 ? await quickCostModel(fixture, world) : undefined;
      const schedules = [
        'baseline',
        'fixed:2:dense',
        `fixed:${groups}:grouped:experts`,
        'fixed:2:dense:experts',
        'fixed:1:grouped:experts',
      ];
      if (costModel) schedules.push('auto');
      for (const schedule of schedules) {
        const got = await clusterForward(fixture, world, assign, schedule, { expertGroups: groups, costModel });
        expectCloseToGolden(fixture, got);
        expectSameLogits(single, got);
        ran++;
      }
    }
    expect(ran).toBeGreaterThan(0);
  });
});

test('a layout the experts do not allow, or an expert-axis D beyond the groups, fails before loading', async () => {
  const modelDir = path.join(FIXTURES, 'mixtral-sharded'); // 4 experts
  const load = (world: number, expertGroups: number, schedule: string) =>
    Promise.all(
      InProcessCommunicator.group(world).map((comm) =>
        loadRankEngine({ modelDir, backend: 'cpu', deviceIndex: 0, comm, schedule: parseMoeSchedule(schedule), expertGroups }),
      ),
    );
  await expect(load(2, 3, 'baseline')).rejects.toThrow(/expert groups must be an integer from 1 to 2 .* got 3/);
  await expect(load(2, 2, 'fixed:4:dense:experts')).rejects.toThrow(/cuts 4 chunks along expert groups, but the layout has 2/);
});
