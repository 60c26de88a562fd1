// Issue 14, item 5, on a real 2-rank CPU cluster: Prometheus metrics scraped over HTTP (requests by method
// and status, refusals by cause, latency histograms, tokens, queue depth, and the ranks' per-layer plans,
// host sync time, expert load and all-to-all bytes); refusals logged at most once a second per cause;
// `eps-moe status` (health, model, metrics); `eps-moe --version`; the load generator exits non-zero when a
// request fails unless --allow-failures.
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import { FIXTURES, startCluster, type TestCluster } from './clusterHarness';
import { runCli } from './helpers/cli';
import { logFormat } from '../src/rpc/log';

let cluster: TestCluster;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-ops-'));

beforeAll(async () => {
  // A queue of 2 sequences: concurrent single-sequence requests overflow it (RESOURCE_EXHAUSTED, queue_full).
  cluster = await startCluster({ model: path.join(FIXTURES, 'mixtral'), ranks: 2, metricsPort: 0, queueLimit: 2, maxWaitMs: 20 });
}, 120_000);
afterAll(async () => {
  await cluster?.destroy();
});

function scrape(address: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${address}/metrics`, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      })
      .on('error', reject);
  });
}

/** The value of the sample `name{labels}` (labels in any order); undefined when absent. */
function sample(body: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of body.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

function samples(body: string, name: string): number {
  return body.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).length;
}

test('metrics over HTTP: requests by status, refusals, latencies, tokens, queue, and the ranks per MoE layer', async () => {
  expect(cluster.metricsAddress).toMatch(/^127\.0\.0\.1:\d+$/);
  for (const ids of [[1, 2, 3], [4, 5, 6, 7], [8]])
    await cluster.client.prefill({ sequences: [{ ids }], topLogprobs: 1 }, { timeoutMs: 30_000 });
  await expect(cluster.client.prefill({ sequences: [{ ids: [1, 10 ** 9] }] }, { timeoutMs: 30_000 })).rejects.toMatchObject({
    code: status.INVALID_ARGUMENT,
  });
  const { status: code, type, body } = await scrape(cluster.metricsAddress);
  expect(code).toBe(200);
  expect(type).toMatch(/^text\/plain; version=0\.0\.4/);
  expect(sample(body, 'eps_requests_total', { method: 'Prefill', code: 'OK' })).toBe(3);
  expect(sample(body, 'eps_requests_total', { method: 'Prefill', code: 'INVALID_ARGUMENT' })).toBe(1);
  expect(sample(body, 'eps_refused_requests_total', { cause: 'invalid' })).toBe(1);
  expect(sample(body, 'eps_prefill_tokens_total')).toBe(8);
  expect(sample(body, 'eps_prefill_sequences_total')).toBe(3);
  expect(sample(body, 'eps_request_duration_seconds_count', { method: 'Prefill' })).toBe(4);
  expect(sample(body, 'eps_queue_wait_seconds_count')).toBe(3);
  expect(sample(body, 'eps_step_duration_seconds_count')).toBeGreaterThanOrEqual(3);
  expect(sample(body, 'eps_rank_step_seconds_count', { rank: '1' })).toBeGreaterThanOrEqual(3);
  expect(sample(body, 'eps_queue_sequences')).toBe(0);
  expect(sample(body, 'eps_inflight_request_bytes')).toBe(0);
  expect(sample(body, 'eps_router_process_resident_memory_bytes')).toBeGreaterThan(0);
  // The ranks, at scrape time: tiny mixtral has 2 MoE layers.
  for (const rank of ['0', '1']) {
    expect(sample(body, 'eps_rank_ready', { rank })).toBe(1);
    const steps = sample(body, 'eps_rank_steps_total', { rank }) ?? 0;
    expect(steps).toBeGreaterThanOrEqual(3);
    // Device memory (CPU: the heap, a block per tensor): the weights are held, nothing was flushed.
    expect(sample(body, 'eps_device_allocations_total', { rank })).toBeGreaterThan(10);
    expect(sample(body, 'eps_device_allocated_bytes_total', { rank })).toBeGreaterThanOrEqual(
      sample(body, 'eps_device_reserved_bytes', { rank })!,
    );
    expect(sample(body, 'eps_device_reserved_bytes', { rank })).toBeGreaterThan(0);
    expect(sample(body, 'eps_device_cached_bytes', { rank })).toBe(0);
    expect(sample(body, 'eps_device_out_of_memory_flushes_total', { rank })).toBe(0);
    expect(sample(body, 'eps_device_allocate_seconds_total', { rank })).toBeGreaterThan(0);
    for (const layer of ['0', '1']) {
      const planned = body
        .split('\n')
        .filter((l) => l.startsWith('eps_moe_plan_steps_total{') && l.includes(`rank="${rank}"`) && l.includes(`layer="${layer}"`));
      expect(planned.reduce((a, l) => a + Number(l.split(' ').pop()), 0)).toBe(steps);
      expect(sample(body, 'eps_moe_host_sync_seconds_total', { rank, layer })).toBeGreaterThan(0);
      expect(sample(body, 'eps_moe_all_to_all_bytes_total', { rank, layer })).toBeGreaterThanOrEqual(0);
    }
  }
  // Tokens per expert: every routed (token, slot) pair of the 8 tokens, top-2 routing, each layer.
  for (const layer of ['0', '1']) {
    const lines = body.split('\n').filter((l) => l.startsWith('eps_moe_expert_tokens_total{') && l.includes(`layer="${layer}"`));
    expect(lines.reduce((a, l) => a + Number(l.split(' ').pop()), 0)).toBe(8 * 2);
  }
  const a2a = ['0', '1'].flatMap((rank) => ['0', '1'].map((layer) => sample(body, 'eps_moe_all_to_all_bytes_total', { rank, layer }) ?? 0));
  expect(a2a.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  expect(samples(body, 'eps_request_duration_seconds_bucket')).toBeGreaterThan(10);
}, 60_000);

test('refusals are counted, and logged at most once a second per cause', async () => {
  const before = cluster
    .logs()
    .split('\n')
    .filter((l) => l.includes('prefill refused')).length;
  const t0 = Date.now();
  const results = await Promise.allSettled(
    Array.from({ length: 40 }, (_, i) => cluster.client.prefill({ sequences: [{ ids: [1 + (i % 50), 2, 3] }] }, { timeoutMs: 30_000 })),
  );
  const seconds = (Date.now() - t0) / 1000;
  const refused = results.filter(
    (r) => r.status === 'rejected' && (r.reason as { code: number }).code === status.RESOURCE_EXHAUSTED,
  ).length;
  expect(refused).toBeGreaterThan(0);
  const { body } = await scrape(cluster.metricsAddress);
  expect(sample(body, 'eps_refused_requests_total', { cause: 'queue_full' })).toBe(refused);
  await new Promise((r) => setTimeout(r, 200));
  const logged =
    cluster
      .logs()
      .split('\n')
      .filter((l) => l.includes('prefill refused')).length - before;
  expect(logged).toBeGreaterThanOrEqual(1);
  expect(logged).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
}, 60_000);

test('eps-moe status: health, model, ranks and per-layer metrics, without grpcurl', async () => {
  const r = await runCli(['status', '--server', cluster.address]);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(new RegExp(`^${cluster.address.replace(/\./g, '\\.')}: SERVING \\(eps\\.v1\\.PrefillService SERVING\\)`));
  expect(r.stdout).toMatch(/model: mixtral \(mixtral\), 2 layers, 8 experts \(top 2\)/);
  expect(r.stdout).toMatch(/cluster: 2 ranks on cpu/);
  expect(r.stdout).toMatch(/rank 1: ready, \d+ steps, [\d.]+ ms per step/);
  expect(r.stdout).toMatch(
    / {2}device memory: [\d.]+ GB held \([\d.]+ GB cached\); [1-9]\d* allocations from the system \([\d.]+ GB, [\d.]+ ms\); 0 out-of-memory flushes/,
  );
  expect(r.stdout).toMatch(
    / {2}layer 1: plans D=\d.* x\d+; host sync [\d.]+ ms\/step; all-to-all [\d.]+ MB; busiest expert [\d.]+x the mean load/,
  );
  const j = await runCli(['status', '--server', cluster.address, '--json']);
  const st = JSON.parse(j.stdout) as { health: { overall: string }; model: { worldSize: number }; metrics: { ranks: unknown[] } };
  expect(st.health.overall).toBe('SERVING');
  expect(st.model.worldSize).toBe(2);
  expect(st.metrics.ranks).toHaveLength(2);
  const none = await runCli(['status', '--server', '127.0.0.1:1', '--timeout-ms', '2000']);
  expect(none.code).toBe(1);
  expect(none.stderr).toMatch(/^eps-moe: no eps-moe server answers at 127\.0\.0\.1:1/);
}, 60_000);

test('eps-moe --version', async () => {
  const r = await runCli(['--version']);
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string };
  expect(r.code).toBe(0);
  expect(r.stdout.trim()).toBe(`eps-moe ${pkg.version} (node ${process.version}, napi ${process.versions.napi})`);
});

test('the load generator exits 1 when a request fails, 0 with --allow-failures', async () => {
  const input = path.join(dir, 'one.json');
  fs.writeFileSync(input, JSON.stringify({ sequences: [[1, 2, 3]] }));
  const args = ['prefill', '--server', cluster.address, '--input', input, '--concurrency', '24', '--repeat', '48', '--json'];
  const strict = await runCli(args);
  const summary = JSON.parse(strict.stdout) as { ok: number; errors: Record<string, number> };
  expect(summary.errors.RESOURCE_EXHAUSTED).toBeGreaterThan(0);
  expect(summary.ok).toBeGreaterThan(0);
  expect(strict.code).toBe(1);
  expect(strict.stderr).toMatch(/^eps-moe: \d+ of 48 requests failed: \{"RESOURCE_EXHAUSTED":\d+\} \(--allow-failures to exit 0\)\n$/);
  const lenient = await runCli([...args, '--allow-failures']);
  expect(lenient.code).toBe(0);
  const clean = await runCli(['prefill', '--server', cluster.address, '--input', input, '--concurrency', '1', '--repeat', '3']);
  expect(clean.code).toBe(0);
}, 60_000);

test('logs: pretty on a terminal, JSON otherwise; EPS_LOG_FORMAT decides when set', () => {
  expect(logFormat({}, true)).toBe('pretty');
  expect(logFormat({}, false)).toBe('json');
  expect(logFormat({ EPS_LOG_FORMAT: 'json' }, true)).toBe('json');
  expect(logFormat({ EPS_LOG_FORMAT: 'pretty' }, false)).toBe('pretty');
});
