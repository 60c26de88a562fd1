// Issue 14, item 3: signals as systemd, `timeout` and container runtimes send them, to the whole process
// group (launcher and ranks alike). The ranks leave signals to the launcher, which drains: 12 requests in
// flight when SIGTERM reaches the group are all answered, and no process is left. The drain has a deadline
// (--drain-timeout-ms) after which everything stops; a second signal stops at once.
import * as path from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import {
  FIXTURES,
  allGone,
  expectMatchesReference,
  goldenCases,
  loadGolden,
  startCluster,
  withTimeout,
  type TestCluster,
} from './clusterHarness';

const FIXTURE = 'mixtral';
const MODEL = path.join(FIXTURES, FIXTURE);
const CASES = goldenCases(loadGolden(FIXTURE), [
  [3, 30],
  [2, 12],
]);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Sends `n` requests at once; resolves with each one's status code (0 = OK) and, when OK, checks the answer. */
function sendRequests(c: TestCluster, n: number): Promise<number[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) => {
      const cases = [CASES[i % CASES.length], CASES[(i + 1) % CASES.length]];
      return c.client.prefill({ sequences: cases.map((k) => ({ ids: k.ids })), topLogprobs: 2 }, { timeoutMs: 60_000 }).then(
        (res) => {
          res.sequences.forEach((got, j) => expectMatchesReference(got, cases[j].logits, 2, cases[j].ids.length));
          return 0;
        },
        (e: ServiceError) => e.code,
      );
    }),
  );
}

describe('signals to the whole process group', () => {
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    if (cluster) {
      try {
        process.kill(-cluster.launcherPid, 'SIGKILL');
      } catch {
        // the group is gone
      }
      await cluster.destroy();
    }
    cluster = undefined;
  });

  test('SIGTERM to the process group during 12 in-flight requests: all 12 answered, exit 0, no process left', async () => {
    // Steps wait up to 1.5 s to fill, so all 12 requests are in the router (queued or running) when the signal comes.
    cluster = await startCluster({ model: MODEL, ranks: 2, maxWaitMs: 1500 }, {}, 90_000, { detached: true });
    const c = cluster;
    await sendRequests(c, 1); // warm: the cluster answers
    const answers = sendRequests(c, 12);
    await sleep(500);
    process.kill(-c.launcherPid, 'SIGTERM');
    const codes = await withTimeout(answers, 30_000, 'requests did not settle after SIGTERM');
    expect(codes).toEqual(new Array(12).fill(0));
    expect(await withTimeout(c.exited, 30_000, 'launcher did not exit')).toEqual({ code: 0, signal: null });
    expect(await allGone([c.launcherPid, ...c.rankPids], 10_000)).toBe(true);
    expect(c.logs()).toMatch(/"signal":"SIGTERM".*signal left to the launcher/);
  });

  test('the drain deadline (--drain-timeout-ms): requests still queued fail UNAVAILABLE and everything stops', async () => {
    // Steps wait 20 s to fill: the drain cannot finish within its 500 ms.
    cluster = await startCluster({ model: MODEL, ranks: 2, maxWaitMs: 20_000, drainTimeoutMs: 500 }, {}, 90_000, { detached: true });
    const c = cluster;
    const answers = sendRequests(c, 4);
    await sleep(300);
    const t0 = Date.now();
    process.kill(-c.launcherPid, 'SIGTERM');
    const codes = await withTimeout(answers, 15_000, 'requests did not settle after the drain deadline');
    expect(codes).toEqual(new Array(4).fill(status.UNAVAILABLE));
    expect((await withTimeout(c.exited, 15_000, 'launcher did not exit')).code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(await allGone([c.launcherPid, ...c.rankPids], 10_000)).toBe(true);
  });

  test('a second signal stops at once, whatever the drain timeout', async () => {
    cluster = await startCluster({ model: MODEL, ranks: 2, maxWaitMs: 60_000, drainTimeoutMs: 120_000 }, {}, 90_000, { detached: true });
    const c = cluster;
    const answers = sendRequests(c, 4);
    await sleep(300);
    process.kill(-c.launcherPid, 'SIGTERM');
    await sleep(300);
    const t0 = Date.now();
    process.kill(-c.launcherPid, 'SIGINT');
    const codes = await withTimeout(answers, 15_000, 'requests did not settle after the second signal');
    expect(codes).toEqual(new Array(4).fill(status.UNAVAILABLE));
    await withTimeout(c.exited, 15_000, 'launcher did not exit after a second signal');
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(await allGone([c.launcherPid, ...c.rankPids], 10_000)).toBe(true);
  });
});
