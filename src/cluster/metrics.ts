// The cluster's Prometheus metrics (prom-client), served by the router on --metrics-port at /metrics.
// What the router sees itself: every public call by method and status (a server interceptor, so calls
// refused before any handler, by size, by API key or by bytes in flight, count too), refusals by cause,
// latency histograms (queue wait, step, end to end, each rank's step), tokens, queue depth and bytes in
// flight. What the ranks know (the plan each MoE layer ran, its host sync time, the tokens per expert,
// the all-to-all bytes) is read from their Health answer at scrape time, as GetMetrics reads it.
import * as http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import * as prom from 'prom-client';
import type { Logger } from '../rpc/log';
import type { DeviceMemoryMsg, RankHealthMsg } from '../rpc/protos';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** What the metrics read from the router when scraped. */
export interface MetricsSources {
  queuedSequences(): number;
  inflightRequestBytes(): number;
  /** Every rank's Health (counters since it loaded); ranks that do not answer are left out. */
  ranks(): Promise<RankHealthMsg[]>;
}

export class ClusterMetrics {
  readonly registry = new prom.Registry();
  private readonly requests: prom.Counter<'method' | 'code'>;
  private readonly refused: prom.Counter<'cause'>;
  private readonly latency: prom.Histogram<'method'>;
  private readonly queueWait: prom.Histogram;
  private readonly stepTime: prom.Histogram;
  private readonly rankStep: prom.Histogram<'rank'>;
  private readonly tokens: prom.Counter;
  private readonly sequences: prom.Counter;
  private readonly nonFinite: prom.Counter;
  private sources: MetricsSources | null = null;

  constructor() {
    const registers = [this.registry];
    prom.collectDefaultMetrics({ register: this.registry, prefix: 'eps_router_' });
    this.requests = new prom.Counter({
      name: 'eps_requests_total',
      help: 'Public gRPC calls answered, by method and status code',
      labelNames: ['method', 'code'],
      registers,
    });
    this.refused = new prom.Counter({
      name: 'eps_refused_requests_total',
      help: 'Prefill requests refused before compute, by cause (invalid, queue_full, bytes_in_flight, too_large, unauthenticated, unavailable, deadline)',
      labelNames: ['cause'],
      registers,
    });
    this.latency = new prom.Histogram({
      name: 'eps_request_duration_seconds',
      help: 'Public calls from arrival to answer (end to end), by method',
      labelNames: ['method'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.queueWait = new prom.Histogram({
      name: 'eps_queue_wait_seconds',
      help: "Prefill requests' wait from arrival to their first step",
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.stepTime = new prom.Histogram({
      name: 'eps_step_duration_seconds',
      help: 'Steps as the router sees them: sent to every rank until the last answer',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.rankStep = new prom.Histogram({
      name: 'eps_rank_step_seconds',
      help: "Each rank's time in the engine per step",
      labelNames: ['rank'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.tokens = new prom.Counter({
      name: 'eps_prefill_tokens_total',
      help: 'Prompt tokens of answered sequences (rate(): tokens/s)',
      registers,
    });
    this.sequences = new prom.Counter({ name: 'eps_prefill_sequences_total', help: 'Sequences answered', registers });
    this.nonFinite = new prom.Counter({
      name: 'eps_nonfinite_sequences_total',
      help: 'Sequences whose logits were NaN or infinite (their requests failed INTERNAL)',
      registers,
    });
    const self = this;
    new prom.Gauge({
      name: 'eps_queue_sequences',
      help: 'Sequences waiting for a step',
      registers,
      collect() {
        this.set(self.sources?.queuedSequences() ?? 0);
      },
    });
    new prom.Gauge({
      name: 'eps_inflight_request_bytes',
      help: 'Bytes of requests in the router, from decoding to answer',
      registers,
      collect() {
        this.set(self.sources?.inflightRequestBytes() ?? 0);
      },
    });
    this.rankCollectors(registers);
  }

  /** Wires the scrape-time sources (the router, once it exists). */
  attach(sources: MetricsSources): void {
    this.sources = sources;
  }

  /** A server interceptor (the public server's first) that counts every call by method and status and times it. */
  interceptor(): grpc.ServerInterceptor {
    return (method, call) => {
      const start = performance.now();
      const name = method.path.split('/').pop() ?? method.path;
      return new grpc.ServerInterceptingCall(call, {
        sendStatus: (status, next) => {
          this.requests.inc({ method: name, code: grpc.status[status.code] ?? String(status.code) });
          this.latency.observe({ method: name }, (performance.now() - start) / 1000);
          if (name === 'Prefill' && status.code !== grpc.status.OK) this.refusedBy(status.code, status.details ?? '');
          next(status);
        },
      });
    };
  }

  /** A prefill answered: its sequences and tokens, and how long it queued. */
  answered(sequences: number, tokens: number, queueMs: number): void {
    this.sequences.inc(sequences);
    this.tokens.inc(tokens);
    this.queueWait.observe(queueMs / 1000);
  }

  /** A step done: the router's wall time and each rank's engine time. */
  step(ms: number, rankMs: readonly number[]): void {
    this.stepTime.observe(ms / 1000);
    rankMs.forEach((m, r) => this.rankStep.observe({ rank: String(r) }, m / 1000));
  }

  nonFiniteSequences(n: number): void {
    this.nonFinite.inc(n);
  }

  private refusedBy(code: grpc.status, details: string): void {
    const cause = refusalCause(code, details);
    if (cause) this.refused.inc({ cause });
  }

  /** Metrics of the ranks, read at scrape time from their Health answers. */
  private rankCollectors(registers: prom.Registry[]): void {
    let snapshot: Promise<RankHealthMsg[]> | null = null;
    // One Health round per scrape, shared by every collector below.
    const ranks = (): Promise<RankHealthMsg[]> => {
      snapshot ??= (this.sources?.ranks() ?? Promise.resolve([])).finally(() => setImmediate(() => (snapshot = null)));
      return snapshot;
    };
    const counter = <L extends string>(
      name: string,
      help: string,
      labelNames: L[],
      fill: (c: prom.Counter<L>, rs: RankHealthMsg[]) => void,
    ) =>
      new prom.Counter<L>({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          const rs = await ranks();
          this.reset();
          fill(this, rs);
        },
      });
    counter('eps_rank_steps_total', 'Steps each rank ran', ['rank'], (c, rs) =>
      rs.forEach((r) => c.inc({ rank: String(r.rank) }, r.stepsDone)),
    );
    counter('eps_moe_plan_steps_total', 'Steps that ran MoE layer L with the EPS plan P, per rank', ['rank', 'layer', 'plan'], (c, rs) => {
      for (const r of rs) {
        for (const [key, n] of Object.entries(r.planCounts)) {
          const m = /^layer (\d+): (.*)$/.exec(key);
          if (m && n > 0) c.inc({ rank: String(r.rank), layer: m[1], plan: m[2] }, n);
        }
      }
    });
    counter(
      'eps_moe_host_sync_seconds_total',
      "Time in each MoE layer's host sync (counts read, gathered, planned), per rank",
      ['rank', 'layer'],
      (c, rs) => {
        for (const r of rs) for (const l of r.moeLayers ?? []) c.inc({ rank: String(r.rank), layer: String(l.layer) }, l.hostSyncMs / 1000);
      },
    );
    counter(
      'eps_moe_all_to_all_bytes_total',
      "Bytes each rank sent other ranks in each MoE layer's dispatch and combine",
      ['rank', 'layer'],
      (c, rs) => {
        for (const r of rs) for (const l of r.moeLayers ?? []) c.inc({ rank: String(r.rank), layer: String(l.layer) }, l.allToAllBytes);
      },
    );
    counter(
      'eps_moe_expert_tokens_total',
      'Tokens routed to each expert of each MoE layer (the whole cluster)',
      ['layer', 'expert'],
      (c, rs) => {
        // Every rank gathers every rank's counts: one rank's view is the cluster's.
        const r = rs[0];
        for (const l of r?.moeLayers ?? [])
          l.expertTokens.forEach((n, e) => n > 0 && c.inc({ layer: String(l.layer), expert: String(e) }, n));
      },
    );
    // Device memory: allocations from the driver that keep growing across steps of one shape mean the cache is not
    // reusing; out-of-memory flushes each cost a device-wide wait.
    const memoryCounters: [string, string, keyof DeviceMemoryMsg, number][] = [
      [
        'eps_device_allocations_total',
        'Blocks each rank got from the system for its device (cudaMalloc; on the CPU, the heap)',
        'allocations',
        1,
      ],
      ['eps_device_allocated_bytes_total', 'Bytes of those blocks', 'allocatedBytes', 1],
      ['eps_device_allocate_seconds_total', 'Host time spent getting them', 'allocateMs', 1e-3],
      [
        'eps_device_out_of_memory_flushes_total',
        "Times a rank's device was full and its memory cache was flushed (a device-wide wait)",
        'outOfMemoryFlushes',
        1,
      ],
    ];
    for (const [name, help, field, scale] of memoryCounters) {
      counter(name, help, ['rank'], (c, rs) => {
        for (const r of rs) if (r.deviceMemory) c.inc({ rank: String(r.rank) }, r.deviceMemory[field] * scale);
      });
    }
    for (const [name, help, field] of [
      ['eps_device_reserved_bytes', "Bytes each rank holds on its device (tensors and the allocator's cache)", 'reservedBytes'],
      ['eps_device_cached_bytes', "Of those, the allocator cache's (idle, or waiting for the streams to pass)", 'cachedBytes'],
    ] as const) {
      new prom.Gauge({
        name,
        help,
        labelNames: ['rank'],
        registers,
        async collect() {
          const rs = await ranks();
          this.reset();
          for (const r of rs) if (r.deviceMemory) this.set({ rank: String(r.rank) }, r.deviceMemory[field]);
        },
      });
    }
    new prom.Gauge({
      name: 'eps_rank_ready',
      help: 'Ranks answering Health in state ready (1) or another state (0)',
      labelNames: ['rank'],
      registers,
      async collect() {
        const rs = await ranks();
        this.reset();
        for (const r of rs) this.set({ rank: String(r.rank) }, r.state === 'ready' ? 1 : 0);
      },
    });
  }
}

/** The refusal cause of a failed Prefill, or null where the failure is not a refusal (INTERNAL, UNAVAILABLE of a lost rank...). */
export function refusalCause(code: grpc.status, details: string): string | null {
  switch (code) {
    case grpc.status.INVALID_ARGUMENT:
      return 'invalid';
    case grpc.status.UNAUTHENTICATED:
      return 'unauthenticated';
    case grpc.status.DEADLINE_EXCEEDED:
      return 'deadline';
    case grpc.status.RESOURCE_EXHAUSTED:
      if (/queue is full/.test(details)) return 'queue_full';
      if (/before decoding/.test(details)) return 'bytes_in_flight';
      return 'too_large';
    case grpc.status.UNAVAILABLE:
      return /draining|starting|loading/.test(details) ? 'unavailable' : null;
    default:
      return null;
  }
}

/** Serves GET /metrics (Prometheus text format) on host:port; resolves with the bound address. */
export async function serveMetrics(
  metrics: ClusterMetrics,
  host: string,
  port: number,
  logger: Logger,
): Promise<{ address: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('eps-moe serves GET /metrics\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      (err: unknown) => {
        logger.warn({ err: String(err) }, 'metrics scrape failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`${String(err)}\n`);
      },
    );
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  const bound = typeof a === 'object' && a ? a.port : port;
  const hostPart = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return {
    address: `${hostPart}:${bound}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
