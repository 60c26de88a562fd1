// `eps-moe prefill --server HOST:PORT (--tokens 1,2,3 | --text "..." | --input FILE) [--top-logprobs K] [--json]`
// and, with --concurrency C --repeat R, a load generator: R requests in all, C at a time, then
// throughput and latency percentiles.
import { performance } from 'node:perf_hooks';
import { status as grpcStatus, type ServiceError } from '@grpc/grpc-js';
import { summarizeLoad, type LoadSummary } from '../cluster/loadStats';
import { PrefillClient } from '../cluster/prefillClient';
import type { PrefillRequestMsg, PrefillResponseMsg } from '../rpc/protos';
import { clientFromFlags } from './client';
import { CliError } from './errors';
import { readSequencesFile } from './input';

export interface PrefillCommandOptions {
  server: string;
  tokens?: string;
  text?: string;
  input?: string;
  topLogprobs?: number;
  json?: boolean;
  concurrency?: number;
  repeat?: number;
  /** Deadline of each request in ms (none when omitted). */
  timeoutMs?: number;
  /** A file of API keys (the first is sent as a bearer token), as given to `launch --api-key-file`. */
  apiKeyFile?: string;
  /** The PEM of the CA (or self-signed certificate) of a server launched with --tls-cert: TLS. */
  tlsCa?: string;
  /** Load generator: exit 0 even when some requests failed (as long as one succeeded). */
  allowFailures?: boolean;
}

export const DEFAULT_TOP_LOGPROBS = 5;

export async function prefillCommand(opts: PrefillCommandOptions): Promise<void> {
  const request = buildRequest(opts);
  const client = clientFromFlags(opts);
  try {
    const load = opts.concurrency !== undefined || opts.repeat !== undefined;
    if (load) {
      const summary = await runLoad(client, request, opts.concurrency ?? 1, opts.repeat ?? 1, opts.timeoutMs);
      process.stdout.write(opts.json ? `${JSON.stringify(summary)}\n` : formatLoad(summary));
      if (summary.ok === 0) throw new CliError(`every request failed: ${JSON.stringify(summary.errors)}`);
      const failed = summary.requests - summary.ok;
      if (failed > 0 && !opts.allowFailures) {
        throw new CliError(
          `${failed} of ${summary.requests} requests failed: ${JSON.stringify(summary.errors)} (--allow-failures to exit 0)`,
        );
      }
      return;
    }
    let res: PrefillResponseMsg;
    try {
      res = await client.prefill(request, { timeoutMs: opts.timeoutMs });
    } catch (e) {
      throw asCliError(e, opts.server);
    }
    process.stdout.write(opts.json ? `${JSON.stringify(toJson(res))}\n` : formatText(res));
  } finally {
    client.close();
  }
}

/** The request from exactly one of --tokens, --text, --input. */
export function buildRequest(opts: PrefillCommandOptions): Partial<PrefillRequestMsg> {
  const given = [opts.tokens, opts.text, opts.input].filter((v) => v !== undefined).length;
  if (given !== 1) throw new CliError('give exactly one of --tokens, --text, --input', 2);
  const topLogprobs = opts.topLogprobs ?? DEFAULT_TOP_LOGPROBS;
  if (!Number.isInteger(topLogprobs) || topLogprobs < 0) throw new CliError('--top-logprobs must be a non-negative integer', 2);
  if (opts.text !== undefined) return { texts: [opts.text], topLogprobs };
  const sequences = opts.tokens !== undefined ? [parseTokenList(opts.tokens)] : readSequencesFile(opts.input as string);
  return { sequences: sequences.map((ids) => ({ ids })), topLogprobs };
}

export function parseTokenList(text: string): number[] {
  const parts = text.split(',').map((p) => p.trim());
  if (parts.length === 0 || parts.every((p) => p === '')) throw new CliError('--tokens: no token ids (expected e.g. 1,2,3)', 2);
  return parts.map((p, i) => {
    if (!/^-?\d+$/.test(p)) throw new CliError(`--tokens: entry ${i} (${JSON.stringify(p)}) is not an integer token id`, 2);
    return Number(p);
  });
}

/** Exactly the documented shape: {"sequences": [{"next_token": ID, "top_logprobs": [{"token": ID, "logprob": X}]}]}. */
export function toJson(res: PrefillResponseMsg): {
  sequences: { next_token: number; top_logprobs: { token: number; logprob: number }[] }[];
} {
  return {
    sequences: res.sequences.map((s) => ({
      next_token: s.nextToken,
      top_logprobs: s.topLogprobs.map((t) => ({ token: t.token, logprob: t.logprob })),
    })),
  };
}

function formatText(res: PrefillResponseMsg): string {
  const lines = res.sequences.map((s, i) => {
    const top = s.topLogprobs.map((t) => `${t.token} (${t.logprob.toFixed(4)})`).join(', ');
    return `sequence ${i} (${s.tokenCount} tokens): next token ${s.nextToken}${top ? `; top: ${top}` : ''}`;
  });
  lines.push(`queue ${res.queueMs.toFixed(1)} ms, compute ${res.computeMs.toFixed(1)} ms`);
  return `${lines.join('\n')}\n`;
}

async function runLoad(
  client: PrefillClient,
  request: Partial<PrefillRequestMsg>,
  concurrency: number,
  repeat: number,
  timeoutMs?: number,
): Promise<LoadSummary> {
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new CliError('--concurrency must be a positive integer', 2);
  if (!Number.isInteger(repeat) || repeat < 1) throw new CliError('--repeat must be a positive integer', 2);
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let tokens = 0;
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < repeat) {
      next++;
      const t0 = performance.now();
      try {
        const res = await client.prefill(request, { timeoutMs });
        latencies.push(performance.now() - t0);
        tokens += res.sequences.reduce((a, s) => a + s.tokenCount, 0);
      } catch (e) {
        const name = statusName(e);
        errors[name] = (errors[name] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, repeat) }, worker));
  return summarizeLoad(latencies, tokens, errors, performance.now() - started);
}

function formatLoad(s: LoadSummary): string {
  const ms = (v: number): string => (Number.isNaN(v) ? '-' : v.toFixed(1));
  const errs = Object.entries(s.errors)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return [
    `requests: ${s.requests} (${s.ok} ok${errs ? `, failed: ${errs}` : ''}) in ${(s.wallMs / 1000).toFixed(2)} s`,
    `throughput: ${s.requestsPerSecond.toFixed(2)} requests/s, ${s.tokensPerSecond.toFixed(1)} tokens/s`,
    `latency ms: p50 ${ms(s.latencyMs.p50)}, p90 ${ms(s.latencyMs.p90)}, p99 ${ms(s.latencyMs.p99)}, max ${ms(s.latencyMs.max)}, mean ${ms(s.latencyMs.mean)}`,
    '',
  ].join('\n');
}

function statusName(e: unknown): string {
  const code = (e as Partial<ServiceError>).code;
  return typeof code === 'number' ? (grpcStatus[code] ?? String(code)) : 'CLIENT_ERROR';
}

function asCliError(e: unknown, server: string): CliError {
  const err = e as Partial<ServiceError>;
  if (typeof err.code !== 'number') return new CliError(`prefill failed: ${(e as Error).message}`);
  if (err.code === grpcStatus.UNAVAILABLE && /ECONNREFUSED|No connection established/.test(err.details ?? '')) {
    return new CliError(`no eps-moe server at ${server} (${err.details})`);
  }
  return new CliError(`server answered ${statusName(e)}: ${err.details ?? err.message}`);
}
