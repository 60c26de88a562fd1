// Real clusters for the cluster tests: `eps-moe launch` as a child process (from the TypeScript
// sources, through clusterTsRegister.js), its `ready:` line parsed for the address and pids, and a
// teardown that leaves no process behind whatever the test did. Plus the reference the answers are
// checked against: log-softmax of transformers' logits, in float64, by a plain sort.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { PrefillClient, type PrefillClientOptions } from '../src/cluster/prefillClient';
import type { LaunchCommandOptions } from '../src/cli/launch';
import type { SequenceResultMsg } from '../src/rpc/protos';

export const ROOT = path.resolve(__dirname, '..');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const REGISTER = path.join(ROOT, 'test', 'clusterTsRegister.js');

export interface Golden {
  sequences: number[][];
  /** logits[s][t]: next-token logits after position t of sequence s. */
  logits: number[][][];
  texts?: { text: string; ids: number[]; logits: number[][] }[];
}

export function loadGolden(fixture: string): Golden {
  return require(path.join(FIXTURES, fixture, 'golden.json')) as Golden;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface TestCluster {
  address: string;
  /** host:port of GET /metrics, from the ready line (launched with metricsPort); empty without. */
  metricsAddress: string;
  launcherPid: number;
  rankPids: number[];
  client: PrefillClient;
  /** Everything the launcher and its ranks wrote on stderr so far. */
  logs(): string;
  readonly exited: Promise<Exit>;
  /** Sends `signal` to the launcher and waits for it to exit. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<Exit>;
  /** SIGKILLs whatever of the cluster is still alive. */
  destroy(): Promise<void>;
}

export interface LauncherProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  readonly exited: Promise<Exit>;
}

export interface SpawnExtras {
  /** The launcher leads a process group of its own (its ranks in it): a test may signal the whole group. */
  detached?: boolean;
  /** How the cluster's client connects (API key, TLS). */
  client?: PrefillClientOptions;
}

/** Spawns `eps-moe launch` with these options (CPU backend, 127.0.0.1, port 0 unless given). */
export function spawnLauncher(opts: LaunchCommandOptions, env: NodeJS.ProcessEnv = {}, extras: SpawnExtras = {}): LauncherProcess {
  // EPS_TEST_MOE_SCHEDULE (e.g. "fixed:2:dense") runs every test cluster under that MoE schedule.
  const schedule = process.env.EPS_TEST_MOE_SCHEDULE ? { moeSchedule: process.env.EPS_TEST_MOE_SCHEDULE } : {};
  const launchOpts: LaunchCommandOptions = { backend: 'cpu', host: '127.0.0.1', port: 0, ...schedule, ...opts };
  const script = [
    "const { launchCommand } = require('./src/cli/launch.ts');",
    "const { reportAndExit } = require('./src/cli/errors.ts');",
    'launchCommand(JSON.parse(process.argv[1])).catch(reportAndExit);',
  ].join(' ');
  const child: ChildProcess = spawn(process.execPath, ['-r', REGISTER, '-e', script, JSON.stringify(launchOpts)], {
    cwd: ROOT,
    env: { ...process.env, EPS_LOG_LEVEL: process.env.EPS_LOG_LEVEL ?? 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: extras.detached ?? false,
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Launches a cluster (node 0) and waits for its `ready:` line. */
export async function startCluster(
  opts: LaunchCommandOptions,
  env: NodeJS.ProcessEnv = {},
  readyTimeoutMs = 90_000,
  extras: SpawnExtras = {},
): Promise<TestCluster> {
  const launcher = spawnLauncher(opts, env, extras);
  const { child, exited } = launcher;
  const ready = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready: line in ${readyTimeoutMs} ms\n${launcher.stderr()}`)), readyTimeoutMs);
    const check = (): void => {
      const m = /^ready: (\S+) .*launcher_pid=(\d+) rank_pids=([\d,]+)$/m.exec(launcher.stdout());
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    };
    child.stdout?.on('data', check);
    void exited.then((e) => {
      clearTimeout(timer);
      reject(new Error(`launcher exited (${e.code ?? e.signal}) before ready\n${launcher.stdout()}\n${launcher.stderr()}`));
    });
  }).catch(async (err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });

  const address = ready[1];
  const metricsAddress = /^ready: .* metrics=(\S+) /m.exec(launcher.stdout())?.[1] ?? '';
  const launcherPid = Number(ready[2]);
  const rankPids = ready[3].split(',').map(Number);
  const client = new PrefillClient(address, extras.client);
  return {
    address,
    metricsAddress,
    launcherPid,
    rankPids,
    client,
    logs: launcher.stderr,
    exited,
    async stop(signal = 'SIGINT', timeoutMs = 30_000) {
      child.kill(signal);
      return withTimeout(exited, timeoutMs, `launcher did not exit within ${timeoutMs} ms of ${signal}`);
    },
    async destroy() {
      client.close();
      for (const pid of [launcherPid, ...rankPids]) killQuietly(pid);
      await withTimeout(exited, 10_000, 'launcher did not exit after SIGKILL').catch(() => undefined);
    },
  };
}

/** The pids of the ranks a launcher spawned, from its log lines. */
export function spawnedRankPids(stderr: string): number[] {
  return [...stderr.matchAll(/"childPid":(\d+)/g)].map((m) => Number(m[1]));
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Polls until none of `pids` is alive; false if some still are after timeoutMs. */
export async function allGone(pids: number[], timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (pids.every((p) => !isAlive(p))) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return pids.every((p) => !isAlive(p));
}

export function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

// ---- the reference ------------------------------------------------------------------------------

/** log-softmax of one logit vector in float64: every token's log-prob. */
export function referenceLogprobs(logits: readonly number[]): number[] {
  const max = Math.max(...logits);
  const sum = logits.reduce((a, x) => a + Math.exp(x - max), 0);
  const lse = max + Math.log(sum);
  return logits.map((x) => x - lse);
}

export const LOGPROB_TOLERANCE = 1e-3;

/**
 * Checks an answer against transformers' logits of the same position: every returned token's
 * log-prob within 1e-3 of the reference, no better token missing (beyond the tolerance, which
 * admits near-ties in either order), the argmax a reference maximum, and the token count.
 */
export function expectMatchesReference(got: SequenceResultMsg, logits: readonly number[], k: number, tokenCount: number): void {
  const ref = referenceLogprobs(logits);
  const sorted = [...ref].sort((a, b) => b - a);
  expect(got.tokenCount).toBe(tokenCount);
  expect(got.topLogprobs).toHaveLength(Math.min(k, ref.length));
  for (const t of got.topLogprobs) {
    expect(Math.abs(t.logprob - ref[t.token])).toBeLessThanOrEqual(LOGPROB_TOLERANCE);
  }
  const tokens = got.topLogprobs.map((t) => t.token);
  expect(new Set(tokens).size).toBe(tokens.length);
  if (k > 0) expect(Math.min(...got.topLogprobs.map((t) => t.logprob))).toBeGreaterThanOrEqual(sorted[k - 1] - LOGPROB_TOLERANCE);
  expect(ref[got.nextToken]).toBeGreaterThanOrEqual(sorted[0] - LOGPROB_TOLERANCE);
}

/** Prefixes of the golden sequences as extra test inputs: each has its reference at logits[s][len-1]. */
export interface Case {
  ids: number[];
  logits: number[];
}

export function goldenCases(golden: Golden, prefixes: [number, number][] = []): Case[] {
  const full = golden.sequences.map((ids, s) => ({ ids, logits: golden.logits[s][ids.length - 1] }));
  const cut = prefixes.map(([s, len]) => ({ ids: golden.sequences[s].slice(0, len), logits: golden.logits[s][len - 1] }));
  return [...full, ...cut];
}
