// Multi-node, the way torchrun does it, on one host: node 1 (its own launcher, one rank) joins the
// rendezvous of node 0 (router and one rank) at --coordinator; together they answer as one cluster
// of 2 ranks; a drain of node 0 stops node 1 too, and a lost rank fails every node.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  FIXTURES,
  allGone,
  expectMatchesReference,
  goldenCases,
  killQuietly,
  loadGolden,
  spawnLauncher,
  spawnedRankPids,
  startCluster,
  withTimeout,
} from './clusterHarness';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

/** The cluster secret every node is given (--cluster-secret-file, required with --nnodes > 1). */
function secretFile(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-moe-secret-'));
  const file = path.join(dir, 'secret');
  fs.writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  return file;
}
const clusterSecretFile = secretFile();
afterAll(() => fs.rmSync(path.dirname(clusterSecretFile), { recursive: true, force: true }));

// Two launchers, their ranks and a coordinator port handed between processes: under heavy load
// (another test suite running beside this one) a node-1 rank once did not join in 90 s. Retried once
// while that is investigated; a failure prints node 1's log (see the closing note of 2026-11-28).
jest.retryTimes(1, { logErrorsBeforeRetry: true });

test('2 nodes x 1 rank: node 1 joins node 0 at --coordinator; the cluster answers; stopping node 0 stops node 1', async () => {
  const model = path.join(FIXTURES, 'qwen2-moe');
  const coordinator = `127.0.0.1:${await freePort()}`;
  // Node 1 first: its rank waits for the router to come up.
  const node1 = spawnLauncher({ model, ranks: 1, nnodes: 2, nodeRank: 1, coordinator, clusterSecretFile });
  const node0 = await startCluster({ model, ranks: 1, nnodes: 2, nodeRank: 0, coordinator, clusterSecretFile }).catch(
    async (e: unknown) => {
      node1.child.kill('SIGKILL');
      throw new Error(`${(e as Error).message}\n-- node 1:\n${node1.stderr()}`);
    },
  );
  const node1Pids = (): number[] => spawnedRankPids(node1.stderr());
  try {
    const info = await node0.client.modelInfo({ timeoutMs: 10_000 });
    expect(info.worldSize).toBe(2);
    const cases = goldenCases(loadGolden('qwen2-moe'), [[3, 11]]);
    const res = await node0.client.prefill({ sequences: cases.map((c) => ({ ids: c.ids })), topLogprobs: 4 }, { timeoutMs: 60_000 });
    res.sequences.forEach((got, i) => expectMatchesReference(got, cases[i].logits, 4, cases[i].ids.length));

    expect(await node0.stop('SIGINT')).toEqual({ code: 0, signal: null });
    // Node 0's router released the cluster: node 1's rank stops, and so does its launcher.
    expect(await withTimeout(node1.exited, 15_000, 'node 1 did not stop')).toEqual({ code: 0, signal: null });
    expect(await allGone([node0.launcherPid, ...node0.rankPids, node1.child.pid ?? -1, ...node1Pids()], 10_000)).toBe(true);
  } finally {
    await node0.destroy();
    node1.child.kill('SIGKILL');
    for (const pid of node1Pids()) killQuietly(pid);
  }
});

test('2 nodes: a rank of node 0 lost fails the cluster; both launchers exit non-zero and nothing is left', async () => {
  const model = path.join(FIXTURES, 'mixtral');
  const coordinator = `127.0.0.1:${await freePort()}`;
  const node1 = spawnLauncher({ model, ranks: 1, nnodes: 2, nodeRank: 1, coordinator, clusterSecretFile });
  const node0 = await startCluster({ model, ranks: 1, nnodes: 2, nodeRank: 0, coordinator, clusterSecretFile, failureLingerMs: 500 }).catch(
    async (e: unknown) => {
      node1.child.kill('SIGKILL');
      throw new Error(`${(e as Error).message}\n-- node 1:\n${node1.stderr()}`);
    },
  );
  try {
    await node0.client.prefill({ sequences: [{ ids: [1, 2, 3] }] }, { timeoutMs: 30_000 });
    process.kill(node0.rankPids[0], 'SIGKILL');
    const exit0 = await withTimeout(node0.exited, 20_000, 'node 0 did not exit');
    const exit1 = await withTimeout(node1.exited, 20_000, 'node 1 did not exit');
    expect(exit0.code).not.toBe(0);
    expect(exit1.code).not.toBe(0);
    expect(await allGone([node0.launcherPid, ...node0.rankPids, node1.child.pid ?? -1, ...spawnedRankPids(node1.stderr())], 10_000)).toBe(
      true,
    );
  } finally {
    await node0.destroy();
    node1.child.kill('SIGKILL');
    for (const pid of spawnedRankPids(node1.stderr())) killQuietly(pid);
  }
});
