// `eps-moe status --server HOST:PORT [--json]`: what grpcurl would be needed for otherwise. The standard
// health check (grpc.health.v1, overall and eps.v1.PrefillService), GetModelInfo, and GetMetrics (every
// rank's state and steps, and per MoE layer the plans the EPS scheduler chose, the host sync time, the
// all-to-all bytes and the load of the busiest expert). Exits 1 when the cluster is not SERVING.
import { status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { PrefillClient, type HealthStatus } from '../cluster/prefillClient';
import type { ClusterMetricsMsg, ModelInfoMsg } from '../rpc/protos';
import { clientFromFlags } from './client';
import { CliError } from './errors';

export interface StatusCommandOptions {
  server: string;
  json?: boolean;
  timeoutMs?: number;
  apiKeyFile?: string;
  tlsCa?: string;
}

export interface ClusterStatus {
  health: { overall: HealthStatus; prefill: HealthStatus };
  model: ModelInfoMsg | null;
  metrics: ClusterMetricsMsg | null;
}

export async function statusCommand(opts: StatusCommandOptions, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  const client = clientFromFlags(opts);
  const call = { timeoutMs: opts.timeoutMs ?? 5000 };
  try {
    let overall: HealthStatus;
    try {
      overall = await client.health('', call);
    } catch (e) {
      const err = e as Partial<ServiceError>;
      throw new CliError(`no eps-moe server answers at ${opts.server} (${err.details ?? (e as Error).message})`);
    }
    const prefill = await client.health('eps.v1.PrefillService', call).catch(() => 'UNKNOWN' as HealthStatus);
    const model = await settle(client.modelInfo(call));
    const metrics = await settle(client.metrics(call));
    const st: ClusterStatus = { health: { overall, prefill }, model: model.value, metrics: metrics.value };
    const problems = [model.error, metrics.error].filter((e): e is string => e !== null);
    out.write(opts.json ? `${JSON.stringify(st)}\n` : formatStatus(opts.server, st, problems));
    if (overall !== 'SERVING') throw new CliError(`${opts.server} is ${overall}`);
  } finally {
    client.close();
  }
}

/** A call's value, or null and what went wrong ("UNAUTHENTICATED: ..."). */
async function settle<T>(p: Promise<T>): Promise<{ value: T | null; error: string | null }> {
  try {
    return { value: await p, error: null };
  } catch (e) {
    const err = e as Partial<ServiceError>;
    const code = typeof err.code === 'number' ? (grpcStatus[err.code] ?? String(err.code)) : 'ERROR';
    return { value: null, error: `${code}: ${err.details ?? (e as Error).message}` };
  }
}

export function formatStatus(server: string, st: ClusterStatus, problems: string[] = []): string {
  const lines = [`${server}: ${st.health.overall} (eps.v1.PrefillService ${st.health.prefill})`];
  const m = st.model;
  if (m) {
    lines.push(
      `model: ${m.name} (${m.modelType}), ${m.numLayers} layers, ${m.numExperts} experts (top ${m.expertsPerToken}), vocab ${m.vocabSize}`,
      `cluster: ${m.worldSize} ranks on ${m.backend}; sequences up to ${m.maxSequenceTokens} tokens, top_logprobs up to ${m.maxTopLogprobs}${m.hasTokenizer ? ', texts accepted' : ''}`,
    );
  }
  for (const r of st.metrics?.ranks ?? []) {
    const perStep = r.stepsDone > 0 && r.stepMs !== undefined ? `, ${(r.stepMs / r.stepsDone).toFixed(1)} ms per step` : '';
    lines.push(`rank ${r.rank}: ${r.state}, ${r.stepsDone} steps${perStep}`);
    const mem = r.deviceMemory;
    if (mem) {
      const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
      lines.push(
        `  device memory: ${gb(mem.reservedBytes)} held (${gb(mem.cachedBytes)} cached); ${mem.allocations} allocations from the system ` +
          `(${gb(mem.allocatedBytes)}, ${mem.allocateMs.toFixed(1)} ms); ${mem.outOfMemoryFlushes} out-of-memory flushes`,
      );
    }
    for (const l of r.moeLayers ?? []) {
      const plans = Object.entries(r.planCounts)
        .filter(([k]) => k.startsWith(`layer ${l.layer}: `))
        .map(([k, n]) => `${k.slice(`layer ${l.layer}: `.length)} x${n}`)
        .join(', ');
      const total = l.expertTokens.reduce((a, b) => a + b, 0);
      const busiest = l.expertTokens.length > 0 && total > 0 ? Math.max(...l.expertTokens) / (total / l.expertTokens.length) : 0;
      const sync = l.steps > 0 ? (l.hostSyncMs / l.steps).toFixed(2) : '-';
      lines.push(
        `  layer ${l.layer}: plans ${plans || '-'}; host sync ${sync} ms/step; all-to-all ${(l.allToAllBytes / 1e6).toFixed(2)} MB; busiest expert ${busiest.toFixed(2)}x the mean load`,
      );
    }
  }
  for (const p of problems) lines.push(`(${p})`);
  return `${lines.join('\n')}\n`;
}
