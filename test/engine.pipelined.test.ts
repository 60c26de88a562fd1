// Steps in flight on one rank (ForwardOptions.onEnqueued): the next step is enqueued as soon as this one's device work
// is, and both give what they give one after the other. Real engines on the CPU backend, MoE layers and a shared
// expert (qwen2-moe's family), one rank and two.
import * as path from 'path';
import { LocalCommunicator } from '../src/comm/communicator';
import { InProcessCommunicator } from '../src/comm/inProcessCommunicator';
import { parseMoeSchedule } from '../src/moe/schedule';
import { loadRankEngine } from '../src/engine/rankEngine';
import type { RankEngine } from '../src/engine/types';
import { FIXTURES } from './helpers/cli';

const A = [
  [3, 1, 4, 1, 5, 9, 2, 6],
  [5, 3, 5],
];
const B = [[2, 7, 1, 8, 2, 8, 1, 8, 2, 8], [4], [6, 6, 6, 6]];

async function sequential(engine: RankEngine): Promise<Float32Array[][]> {
  return [(await engine.step(A)).logits, (await engine.step(B)).logits];
}

/** Step B is enqueued from inside step A's onEnqueued; returns both results and whether B began before A ended. */
async function overlapped(engine: RankEngine): Promise<{ logits: Float32Array[][]; bBeforeA: boolean }> {
  let b: Promise<{ logits: Float32Array[] }> | undefined;
  let aDone = false;
  let bStartedWhileA = false;
  const a = engine.step(A, {
    onEnqueued: () => {
      bStartedWhileA = !aDone;
      b = engine.step(B);
    },
  });
  const ra = await a;
  aDone = true;
  expect(b).toBeDefined();
  const rb = await b!;
  return { logits: [ra.logits, rb.logits], bBeforeA: bStartedWhileA };
}

test('one rank: the next step enqueued from onEnqueued gives what it gives alone, and onEnqueued fires once', async () => {
  const engine = await loadRankEngine({
    modelDir: path.join(FIXTURES, 'qwen2-moe'),
    backend: 'cpu',
    deviceIndex: 0,
    comm: new LocalCommunicator(),
  });
  try {
    const want = await sequential(engine);
    const { logits, bBeforeA } = await overlapped(engine);
    expect(bBeforeA).toBe(true);
    expect(logits).toEqual(want);
    let calls = 0;
    await engine.step(A, { onEnqueued: () => calls++ });
    expect(calls).toBe(1);
    // No tokens: still called, once.
    calls = 0;
    await engine.step([], { onEnqueued: () => calls++ });
    expect(calls).toBe(1);
  } finally {
    await engine.dispose();
  }
});

test('two ranks (in-process collectives, two chunks overlapped): steps overlapped on every rank match the steps one after the other', async () => {
  const comms = InProcessCommunicator.group(2);
  const engines = await Promise.all(
    comms.map((comm, r) =>
      loadRankEngine({
        modelDir: path.join(FIXTURES, 'qwen2-moe'),
        backend: 'cpu',
        deviceIndex: 0,
        comm,
        schedule: parseMoeSchedule('fixed:2:grouped'),
      }).then((e) => {
        expect(e.rank).toBe(r);
        return e;
      }),
    ),
  );
  try {
    const want = await Promise.all(engines.map((e) => sequential(e)));
    const got = await Promise.all(engines.map((e) => overlapped(e)));
    got.forEach((g, r) => expect(g.logits).toEqual(want[r]));
  } finally {
    await Promise.all(engines.map((e) => e.dispose()));
  }
});
