// Acceptance 2: 64 concurrent clients with mixed lengths all get correct answers; a full queue
// answers RESOURCE_EXHAUSTED; a request past its deadline answers DEADLINE_EXCEEDED; the server
// keeps serving after both.
import * as path from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { PrefillClient } from '../src/cluster/prefillClient';
import type { PrefillResponseMsg } from '../src/rpc/protos';
import { FIXTURES, expectMatchesReference, goldenCases, loadGolden, startCluster, type TestCluster } from './clusterHarness';

const golden = loadGolden('qwen2-moe');
// 1, 5, 17, 33 tokens and prefixes of 2..32: fourteen lengths in all.
const CASES = goldenCases(golden, [
  [3, 2],
  [3, 4],
  [3, 8],
  [3, 12],
  [3, 16],
  [3, 24],
  [3, 32],
  [2, 3],
  [2, 10],
  [1, 2],
]);

describe('64 concurrent clients (qwen2-moe, 3 ranks)', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, 'qwen2-moe'), ranks: 3 });
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  test('every client gets the right answer for its own sequences', async () => {
    const clients = Array.from({ length: 64 }, () => new PrefillClient(cluster.address));
    try {
      // Client c sends one or two sequences: cases c and (for odd c) c + 5, modulo the case count.
      const requests = clients.map((_, c) => (c % 2 ? [c % CASES.length, (c + 5) % CASES.length] : [c % CASES.length]));
      const answers = await Promise.all(
        clients.map((client, c) =>
          client.prefill(
            { sequences: requests[c].map((i) => ({ ids: CASES[i].ids })), topLogprobs: 4, requestId: `client-${c}` },
            { timeoutMs: 60_000 },
          ),
        ),
      );
      answers.forEach((res, c) => {
        expect(res.requestId).toBe(`client-${c}`);
        expect(res.sequences).toHaveLength(requests[c].length);
        res.sequences.forEach((got, j) => expectMatchesReference(got, CASES[requests[c][j]].logits, 4, CASES[requests[c][j]].ids.length));
      });
    } finally {
      for (const c of clients) c.close();
    }
  });
});

describe('queue bound and deadlines (mixtral, 2 ranks, 8 queued sequences at most, 3 s batching wait)', () => {
  let cluster: TestCluster;
  const mixtral = loadGolden('mixtral');
  const cases = goldenCases(mixtral);
  beforeAll(async () => {
    // A long batching wait keeps requests in the queue long enough to fill it and to outlive deadlines.
    cluster = await startCluster({ model: path.join(FIXTURES, 'mixtral'), ranks: 2, queueLimit: 8, maxWaitMs: 3000 });
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  test('beyond the bound: RESOURCE_EXHAUSTED; what was queued is answered', async () => {
    const clients = Array.from({ length: 12 }, () => new PrefillClient(cluster.address));
    try {
      const outcomes = await Promise.all(
        clients.map((client, c) =>
          client.prefill({ sequences: [{ ids: cases[c % cases.length].ids }], topLogprobs: 2 }, { timeoutMs: 30_000 }).then(
            (res): PrefillResponseMsg | ServiceError => res,
            (err: ServiceError) => err,
          ),
        ),
      );
      const refused = outcomes.filter((o): o is ServiceError => 'code' in o);
      expect(refused).toHaveLength(4);
      for (const e of refused) {
        expect(e.code).toBe(status.RESOURCE_EXHAUSTED);
        expect(e.details).toMatch(/queue is full/);
      }
      outcomes.forEach((o, c) => {
        if (!('code' in o)) expectMatchesReference(o.sequences[0], cases[c % cases.length].logits, 2, cases[c % cases.length].ids.length);
      });
    } finally {
      for (const c of clients) c.close();
    }
  });

  test('a request whose deadline passes while it waits: DEADLINE_EXCEEDED, and the server keeps serving', async () => {
    const t0 = Date.now();
    await expect(cluster.client.prefill({ sequences: [{ ids: cases[1].ids }] }, { timeoutMs: 300 })).rejects.toMatchObject({
      code: status.DEADLINE_EXCEEDED,
    });
    expect(Date.now() - t0).toBeLessThan(1500);
    const res = await cluster.client.prefill({ sequences: [{ ids: cases[2].ids }], topLogprobs: 3 }, { timeoutMs: 30_000 });
    expectMatchesReference(res.sequences[0], cases[2].logits, 3, cases[2].ids.length);
    // The router saw it go: cancelled by the client's deadline, or refused for it before compute.
    expect(cluster.logs()).toMatch(/"code":"CANCELLED"|"code":"DEADLINE_EXCEEDED"/);
  });
});
