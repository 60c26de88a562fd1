// What the load generator (`eps-moe prefill --concurrency C --repeat R`) reports: throughput and
// latency percentiles of the requests that succeeded, and a count of those that failed by status.

export interface LoadSummary {
  requests: number;
  ok: number;
  /** Failed requests by gRPC status name. */
  errors: Record<string, number>;
  wallMs: number;
  requestsPerSecond: number;
  /** Prompt tokens of the successful requests per second of wall time. */
  tokensPerSecond: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
}

/** The q-quantile (0..1) of sorted values by the nearest-rank method; NaN for no values. */
export function nearestRank(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.max(1, Math.ceil(q * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1];
}

export function summarizeLoad(latenciesMs: readonly number[], tokens: number, errors: Record<string, number>, wallMs: number): LoadSummary {
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  const failed = Object.values(errors).reduce((a, b) => a + b, 0);
  const seconds = wallMs / 1000;
  return {
    requests: sorted.length + failed,
    ok: sorted.length,
    errors,
    wallMs,
    requestsPerSecond: seconds > 0 ? sorted.length / seconds : 0,
    tokensPerSecond: seconds > 0 ? tokens / seconds : 0,
    latencyMs: {
      p50: nearestRank(sorted, 0.5),
      p90: nearestRank(sorted, 0.9),
      p99: nearestRank(sorted, 0.99),
      max: sorted.length ? sorted[sorted.length - 1] : NaN,
      mean: sorted.length ? sorted.reduce((a, b) => a + b, 0) / sorted.length : NaN,
    },
  };
}
