// GetMetrics: every rank's steps and how often each MoE layer ran with each plan.
import * as path from 'path';
import { FIXTURES, startCluster, type TestCluster } from './clusterHarness';

let cluster: TestCluster;

beforeAll(async () => {
  cluster = await startCluster({ model: path.join(FIXTURES, 'qwen2-moe'), ranks: 2, moeSchedule: 'fixed:2:dense' });
});
afterAll(async () => {
  await cluster?.destroy();
});

test('plan counts per rank and layer add up to the steps run', async () => {
  for (const ids of [
    [1, 2, 3],
    [4, 5, 6, 7, 8, 9],
  ])
    await cluster.client.prefill({ sequences: [{ ids }] }, { timeoutMs: 30_000 });
  const info = await cluster.client.modelInfo();
  const metrics = await cluster.client.metrics({ timeoutMs: 10_000 });
  expect(metrics.ranks.map((r) => r.rank)).toEqual([0, 1]);
  // qwen2-moe: layers 0 and 2 are MoE, layer 1 dense (mlp_only_layers).
  for (const r of metrics.ranks) {
    expect(r.state).toBe('ready');
    expect(r.stepsDone).toBeGreaterThanOrEqual(2);
    expect(Object.keys(r.planCounts).sort()).toEqual(['layer 0: D=2 dense', 'layer 2: D=2 dense']);
    for (const count of Object.values(r.planCounts)) expect(count).toBe(r.stepsDone);
    // The CPU backend allocates each tensor from the heap: the weights alone are many, all still held.
    expect(r.deviceMemory?.allocations).toBeGreaterThan(10);
    expect(r.deviceMemory?.reservedBytes).toBeGreaterThan(0);
    expect(r.deviceMemory?.reservedBytes).toBeLessThanOrEqual(r.deviceMemory!.allocatedBytes);
    expect(r.deviceMemory?.outOfMemoryFlushes).toBe(0);
  }
  expect(info.worldSize).toBe(2);
});
