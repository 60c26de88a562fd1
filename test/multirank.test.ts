// Expert parallelism on the CPU backend: W ranks in one process (InProcessCommunicator), each holding
// 1/W of every MoE layer's experts and its own share of the sequences (possibly none), give the
// logits transformers computed, as one rank does.
import * as path from 'path';
import { InProcessCommunicator } from '../src/comm/inProcessCommunicator';
import { loadRankEngine, type LoadedEngine } from '../src/engine/rankEngine';
import { parseMoeSchedule } from '../src/moe/schedule';
import { FIXTURES, GOLDEN_FIXTURES, loadGolden } from './helpers/cli';

async function clusterForward(
  fixture: string,
  world: number,
  assign: (seq: number) => number,
  schedule = 'fixed:1:grouped',
): Promise<Float32Array[]> {
  const golden = loadGolden(fixture);
  const comms = InProcessCommunicator.group(world);
  const engines: LoadedEngine[] = await Promise.all(
    comms.map((comm) =>
      loadRankEngine({
        modelDir: path.join(FIXTURES, fixture),
        backend: 'cpu',
        deviceIndex: 0,
        comm,
        schedule: parseMoeSchedule(schedule),
      }),
    ),
  );
  try {
    const mine = engines.map((_, r) => golden.sequences.map((_, i) => i).filter((i) => assign(i) === r));
    const outs = await Promise.all(engines.map((e, r) => e.step(mine[r].map((i) => golden.sequences[i]))));
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
      single.forEach((row, s) => {
        let maxDiff = 0;
        row.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - multi[s][j]))));
        expect(maxDiff).toBeLessThan(1e-4);
      });
    }
  });
});
