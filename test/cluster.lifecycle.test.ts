// Acceptance 4 and the rest of a cluster's life: SIGKILL of a rank during steps fails in-flight
// requests with UNAVAILABLE within 10 s, health says NOT_SERVING, the launcher exits non-zero and
// no process remains; SIGINT drains (what was admitted is answered) and exits 0; a launcher killed
// outright takes its ranks with it.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { PrefillClient } from '../src/cluster/prefillClient';
import { FIXTURES, allGone, goldenCases, isAlive, loadGolden, startCluster, withTimeout, type TestCluster } from './clusterHarness';

const FIXTURE = 'mixtral';
const CASES = goldenCases(loadGolden(FIXTURE), [
  [3, 30],
  [3, 25],
  [2, 12],
]);

interface Outcome {
  sentAt: number;
  doneAt: number;
  code: number; // 0 = OK
}

/** `workers` clients, each sending request after request until told to stop or a request fails. */
function loadLoop(address: string, workers: number) {
  const outcomes: Outcome[] = [];
  let stopped = false;
  const clients = Array.from({ length: workers }, () => new PrefillClient(address));
  const outstanding = new Set<number>(); // sentAt of requests in flight
  const done = Promise.all(
    clients.map(async (client, w) => {
      for (let i = 0; !stopped; i++) {
        const sentAt = Date.now();
        outstanding.add(sentAt);
        const c = CASES[(w + i) % CASES.length];
        const code = await client
          .prefill({ sequences: [{ ids: c.ids }, { ids: CASES[(w + i + 1) % CASES.length].ids }], topLogprobs: 2 }, { timeoutMs: 60_000 })
          .then(
            () => 0,
            (e: ServiceError) => e.code,
          );
        outstanding.delete(sentAt);
        outcomes.push({ sentAt, doneAt: Date.now(), code });
        if (code !== 0) return;
      }
    }),
  );
  return {
    outcomes,
    okCount: () => outcomes.filter((o) => o.code === 0).length,
    inFlight: () => outstanding.size,
    async stop() {
      stopped = true;
      await done;
      for (const c of clients) c.close();
    },
    done,
  };
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('cluster lifecycle (mixtral)', () => {
  let cluster: TestCluster | undefined;
  afterEach(async () => {
    await cluster?.destroy();
    cluster = undefined;
  });

  test('SIGKILL of a rank during steps: UNAVAILABLE within 10 s, NOT_SERVING, launcher exits non-zero, nothing left', async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, FIXTURE), ranks: 3, failureLingerMs: 4000 });
    const c = cluster;
    const load = loadLoop(c.address, 8);
    await waitFor(() => load.okCount() >= 20 && load.inFlight() > 0, 30_000, 'steady load');

    const killedAt = Date.now();
    process.kill(c.rankPids[1], 'SIGKILL');
    const inFlightAtKill = load.inFlight();
    expect(inFlightAtKill).toBeGreaterThan(0);

    // Every worker stops at its first failure: all settle, none hangs.
    await withTimeout(load.done, 10_000, 'requests in flight did not settle within 10 s of the kill');
    const settledAt = Date.now();
    expect(settledAt - killedAt).toBeLessThan(10_000);
    const afterKill = load.outcomes.filter((o) => o.doneAt >= killedAt);
    expect(afterKill.length).toBeGreaterThan(0);
    // A request that ends after the kill either had already been computed or fails UNAVAILABLE.
    for (const o of afterKill) expect([0, status.UNAVAILABLE]).toContain(o.code);
    expect(afterKill.filter((o) => o.code === status.UNAVAILABLE).length).toBeGreaterThan(0);

    // The router keeps answering for a moment (failureLingerMs), and says so.
    expect(await c.client.health('')).toBe('NOT_SERVING');
    expect(await c.client.health('eps.v1.PrefillService')).toBe('NOT_SERVING');
    await expect(c.client.prefill({ sequences: [{ ids: [1, 2] }] }, { timeoutMs: 5000 })).rejects.toMatchObject({
      code: status.UNAVAILABLE,
      details: expect.stringMatching(/rank 1 lost|cluster failed/),
    });

    const exit = await withTimeout(c.exited, 20_000, 'launcher did not exit after losing a rank');
    expect(exit.code).not.toBe(0);
    expect(exit.code).not.toBeNull();
    expect(await allGone([c.launcherPid, ...c.rankPids], 10_000)).toBe(true);
    await load.stop();
  });

  test('SIGINT drains: admitted requests are answered, later ones refused, exit 0, nothing left', async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, FIXTURE), ranks: 2 });
    const c = cluster;
    const load = loadLoop(c.address, 8);
    await waitFor(() => load.okCount() >= 20 && load.inFlight() > 0, 30_000, 'steady load');
    const signalledAt = Date.now();
    const exit = await c.stop('SIGINT', 30_000);
    await withTimeout(load.done, 10_000, 'requests did not settle after the drain');
    expect(exit).toEqual({ code: 0, signal: null });
    // Requests in flight when the signal came were answered; what came after was refused as UNAVAILABLE.
    const answeredAfter = load.outcomes.filter((o) => o.code === 0 && o.sentAt < signalledAt && o.doneAt >= signalledAt);
    expect(answeredAfter.length).toBeGreaterThan(0);
    for (const o of load.outcomes) expect([0, status.UNAVAILABLE]).toContain(o.code);
    expect(await allGone([c.launcherPid, ...c.rankPids], 10_000)).toBe(true);
    await load.stop();
  });

  test('a launcher killed outright (SIGKILL) takes its ranks with it', async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, FIXTURE), ranks: 2 });
    const c = cluster;
    expect(c.rankPids.every(isAlive)).toBe(true);
    process.kill(c.launcherPid, 'SIGKILL');
    // Ranks see the router's Join stream break (and their parent change) and exit by themselves.
    expect(await allGone(c.rankPids, 10_000)).toBe(true);
  });

  test('with no --model, serves the built-in tiny model, made into the cache folder on first run only', async () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-moe-cache-'));
    try {
      cluster = await startCluster({}, { EPS_CACHE_DIR: cache });
      expect(fs.existsSync(path.join(cache, 'models', 'tiny-seed0', 'config.json'))).toBe(true);
      expect(cluster.logs()).toMatch(/making the built-in model/);
      const info = await cluster.client.modelInfo({ timeoutMs: 10_000 });
      expect(info).toMatchObject({ modelType: 'mixtral', worldSize: 1, backend: 'cpu' });
      const res = await cluster.client.prefill({ sequences: [{ ids: [1, 2, 3] }], topLogprobs: 3 }, { timeoutMs: 30_000 });
      expect(res.sequences[0].topLogprobs).toHaveLength(3);
      expect(res.sequences[0].nextToken).toBe(res.sequences[0].topLogprobs[0].token);
      expect(await cluster.stop('SIGTERM')).toEqual({ code: 0, signal: null });

      // Second launch: the model is there already.
      cluster = await startCluster({}, { EPS_CACHE_DIR: cache });
      expect(cluster.logs()).not.toMatch(/making the built-in model/);
      const again = await cluster.client.prefill({ sequences: [{ ids: [1, 2, 3] }], topLogprobs: 3 }, { timeoutMs: 30_000 });
      expect(again.sequences[0]).toEqual(res.sequences[0]);
    } finally {
      await cluster?.destroy();
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });
});
