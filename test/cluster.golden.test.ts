// Acceptance 1: clusters of 1, 2 and 3 rank processes (CPU backend, gRPC data plane on 127.0.0.1)
// answer a batch of mixed lengths with the top log-probs transformers' logits give (within 1e-3).
import * as path from 'node:path';
import { status } from '@grpc/grpc-js';
import { FIXTURES, expectMatchesReference, goldenCases, loadGolden, startCluster, type TestCluster } from './clusterHarness';

const K = 5;
// Mixed lengths: the four golden sequences (1, 5, 17, 33 tokens) and prefixes of them.
const PREFIXES: [number, number][] = [
  [3, 20],
  [2, 9],
  [1, 2],
  [3, 32],
];

const CASES: [string, number][] = [
  ['mixtral', 1],
  ['mixtral', 2],
  ['mixtral', 3],
  ['qwen2-moe', 2],
  ['qwen2-moe', 3],
  ['qwen3-moe', 1],
  ['qwen3-moe', 3],
  ['mixtral-sharded', 2],
  ['qwen3-moe-fused', 3],
];

describe.each(CASES)('%s on %i rank(s)', (fixture, ranks) => {
  let cluster: TestCluster;
  const golden = loadGolden(fixture);

  beforeAll(async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, fixture), ranks });
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  test('one request with a batch of mixed lengths: same top log-probs as transformers', async () => {
    const cases = goldenCases(golden, PREFIXES);
    const res = await cluster.client.prefill({ sequences: cases.map((c) => ({ ids: c.ids })), topLogprobs: K }, { timeoutMs: 60_000 });
    expect(res.sequences).toHaveLength(cases.length);
    res.sequences.forEach((got, i) => expectMatchesReference(got, cases[i].logits, K, cases[i].ids.length));
    expect(res.computeMs).toBeGreaterThan(0);
    expect(res.queueMs).toBeGreaterThanOrEqual(0);
  });

  test('a single short sequence (the other ranks step with nothing)', async () => {
    const [one] = goldenCases(golden);
    const res = await cluster.client.prefill({ sequences: [{ ids: one.ids }], topLogprobs: 3 }, { timeoutMs: 60_000 });
    expectMatchesReference(res.sequences[0], one.logits, 3, one.ids.length);
  });

  test('model info describes the cluster', async () => {
    const info = await cluster.client.modelInfo({ timeoutMs: 10_000 });
    expect(info).toMatchObject({ name: fixture, worldSize: ranks, backend: 'cpu', vocabSize: golden.logits[0][0].length });
  });
});

describe('mixtral on 2 ranks with 2 expert groups, chunked along them (launch --expert-groups 2)', () => {
  let cluster: TestCluster;
  const golden = loadGolden('mixtral');

  beforeAll(async () => {
    cluster = await startCluster({
      model: path.join(FIXTURES, 'mixtral'),
      ranks: 2,
      expertGroups: 2,
      moeSchedule: 'fixed:2:dense:experts',
    });
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  test('a batch of mixed lengths: same top log-probs as transformers', async () => {
    const cases = goldenCases(golden, PREFIXES);
    const res = await cluster.client.prefill({ sequences: cases.map((c) => ({ ids: c.ids })), topLogprobs: K }, { timeoutMs: 60_000 });
    res.sequences.forEach((got, i) => expectMatchesReference(got, cases[i].logits, K, cases[i].ids.length));
  });
});

describe('qwen2-moe on 3 ranks, the dedup dispatch in 3 token chunks, the kernel left to the cost model (launch --dispatch dedup --moe-schedule fixed:3)', () => {
  let cluster: TestCluster;
  const golden = loadGolden('qwen2-moe');

  beforeAll(async () => {
    // No kernel in the schedule: the ranks measure a cost model at start (it once failed the first step instead).
    cluster = await startCluster({ model: path.join(FIXTURES, 'qwen2-moe'), ranks: 3, dispatch: 'dedup', moeSchedule: 'fixed:3' });
  });
  afterAll(async () => {
    await cluster?.destroy();
  });

  test('a batch of mixed lengths: same top log-probs as transformers', async () => {
    const cases = goldenCases(golden, PREFIXES);
    const res = await cluster.client.prefill({ sequences: cases.map((c) => ({ ids: c.ids })), topLogprobs: K }, { timeoutMs: 60_000 });
    res.sequences.forEach((got, i) => expectMatchesReference(got, cases[i].logits, K, cases[i].ids.length));
    // Every rank ran every MoE layer as 3 chunks with the dedup dispatch.
    const metrics = await cluster.client.metrics({ timeoutMs: 10_000 });
    expect(metrics.ranks).toHaveLength(3);
    for (const r of metrics.ranks) {
      const labels = Object.keys(r.planCounts);
      expect(labels.length).toBeGreaterThan(0);
      for (const label of labels) expect(label).toMatch(/: D=3 (dense|grouped)(\+(dense|grouped))? dedup$/);
    }
  });
});

describe('text input', () => {
  let cluster: TestCluster;
  afterEach(async () => {
    await cluster?.destroy();
  });

  test('with tokenizer.json (qwen3-moe, 2 ranks): texts are tokenized as transformers does and answered', async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, 'qwen3-moe'), ranks: 2 });
    const texts = loadGolden('qwen3-moe').texts ?? [];
    expect(texts.length).toBeGreaterThan(0);
    const res = await cluster.client.prefill({ texts: texts.map((t) => t.text), topLogprobs: K }, { timeoutMs: 60_000 });
    res.sequences.forEach((got, i) => expectMatchesReference(got, texts[i].logits[texts[i].ids.length - 1], K, texts[i].ids.length));
  });

  test('without tokenizer.json (mixtral): INVALID_ARGUMENT naming texts', async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, 'mixtral'), ranks: 1 });
    await expect(cluster.client.prefill({ texts: ['hello'] }, { timeoutMs: 10_000 })).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: expect.stringMatching(/^texts: /),
    });
  });
});
