#!/usr/bin/env node
// The soak test of issue 14 (scripts/soak.sh runs it): a CPU cluster on 127.0.0.1 and many clients for a
// bounded time, sending a mix of good, malformed (bytes that are no PrefillRequest), invalid (ids outside
// the vocabulary, empty or over-long sequences) and oversized (past the server's receive limit) requests.
// Prints requests by kind and status, latency percentiles, and each process's memory (RSS) at the start
// and the end; exits 1 on any status outside the expected ones, or if the cluster does not answer, drain
// and exit cleanly at the end. Loopback only; every loop stops at the deadline; the launcher is killed at
// the deadline plus a grace period whatever happens.
'use strict';
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');

const ROOT = path.resolve(__dirname, '..');
const { PrefillClient } = require(path.join(ROOT, 'dist', 'cluster', 'prefillClient.js'));

function parseArgs(argv) {
  const o = { seconds: 600, clients: 16, ranks: 2, model: null, json: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === '--seconds') o.seconds = Number(v());
    else if (a === '--minutes') o.seconds = Number(v()) * 60;
    else if (a === '--clients') o.clients = Number(v());
    else if (a === '--ranks') o.ranks = Number(v());
    else if (a === '--model') o.model = v();
    else if (a === '--json') o.json = v();
    else throw new Error(`soak: unknown argument ${a} (--seconds S | --minutes M, --clients C, --ranks N, --model DIR, --json FILE)`);
  }
  if (!(o.seconds > 0 && o.seconds <= 3600)) throw new Error('soak: the duration must be in (0, 3600] seconds');
  if (!(Number.isInteger(o.clients) && o.clients >= 1 && o.clients <= 256)) throw new Error('soak: --clients must be in [1, 256]');
  return o;
}

// The statuses each kind may get. Good requests may meet a full queue under load (an expected refusal).
const EXPECTED = {
  good: ['OK', 'RESOURCE_EXHAUSTED'],
  malformed: ['INVALID_ARGUMENT', 'RESOURCE_EXHAUSTED'],
  invalid: ['INVALID_ARGUMENT', 'RESOURCE_EXHAUSTED'],
  oversized: ['RESOURCE_EXHAUSTED'],
};

function rssKb(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Protobuf bytes of a PrefillRequest holding one sequence of `n` ids (each id < 128: one byte). */
function encodeRequest(n, id = 1) {
  const packed = Buffer.alloc(n, id);
  const seq = Buffer.concat([Buffer.from([0x0a]), varint(packed.length), packed]); // TokenSequence.ids = 1, packed
  return Buffer.concat([Buffer.from([0x0a]), varint(seq.length), seq]); // PrefillRequest.sequences = 1
}

function varint(n) {
  const out = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}

function statusName(err) {
  return typeof err?.code === 'number' ? (grpc.status[err.code] ?? String(err.code)) : 'CLIENT_ERROR';
}

function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length))) - 1];
}

function launch(o) {
  const model = o.model ?? path.join(ROOT, 'test', 'fixtures', 'mixtral');
  const args = [
    path.join(ROOT, 'bin', 'eps-moe.js'), 'launch', '--model', model, '--backend', 'cpu', '--ranks', String(o.ranks),
    '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0', '--max-sequences-per-request', '16', '--queue-limit', '256',
    '--log-level', 'warn',
  ];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, EPS_LOG_FORMAT: 'json' } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line in 120 s\n${stderr}`)), 120_000);
    child.stdout.on('data', () => {
      const m = /^ready: (\S+) metrics=(\S+) .*launcher_pid=(\d+) rank_pids=([\d,]+)$/m.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve({ address: m[1], metrics: m[2], pids: { launcher: Number(m[3]), ranks: m[4].split(',').map(Number) } });
      }
    });
    exited.then((e) => reject(new Error(`launcher exited (${e.code ?? e.signal}) before ready\n${stderr}`)));
  });
  return { child, ready, exited, stderr: () => stderr };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const cluster = launch(o);
  // Whatever happens, nothing outlives the deadline by more than a minute.
  const hardStop = setTimeout(() => cluster.child.kill('SIGKILL'), (o.seconds + 60) * 1000);
  hardStop.unref();
  const { address, metrics, pids } = await cluster.ready;
  const procs = [{ name: 'launcher+router', pid: pids.launcher }, ...pids.ranks.map((pid, r) => ({ name: `rank ${r}`, pid }))];
  const info = await new PrefillClient(address).modelInfo({ timeoutMs: 10_000 });
  const V = info.vocabSize;
  const maxTokens = info.maxSequenceTokens;

  // Warm up (first steps allocate), then take the starting memory.
  const warm = new PrefillClient(address);
  for (let i = 0; i < 20; i++) await warm.prefill({ sequences: [{ ids: [1, 2, 3, 4] }, { ids: [5, 6] }], topLogprobs: 2 }, { timeoutMs: 30_000 });
  warm.close();
  const start = Object.fromEntries(procs.map((p) => [p.name, rssKb(p.pid)]));

  const oversized = encodeRequest(4 << 20); // 4 MiB of ids: past the receive limit of 16 sequences
  const garbage = [Buffer.from([0xff, 0xff, 0xff, 0xff]), Buffer.from('not a protobuf at all'), Buffer.from([0x0a, 0x05, 0x0a])];
  const counts = {};
  const latencies = { good: [], malformed: [], invalid: [], oversized: [] };
  const unexpected = [];
  const deadline = Date.now() + o.seconds * 1000;
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const randIds = (n) => Array.from({ length: n }, () => Math.floor(rand() * V));

  const client = async (c) => {
    const api = new PrefillClient(address);
    const raw = new grpc.Client(address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 << 20 });
    const rawCall = (bytes) =>
      new Promise((resolve, reject) =>
        raw.makeUnaryRequest('/eps.v1.PrefillService/Prefill', (b) => b, (b) => b, bytes, { deadline: Date.now() + 30_000 }, (err, res) =>
          err ? reject(err) : resolve(res),
        ),
      );
    while (Date.now() < deadline) {
      const r = rand();
      const kind = r < 0.8 ? 'good' : r < 0.88 ? 'malformed' : r < 0.97 ? 'invalid' : 'oversized';
      const t0 = performance.now();
      let st = 'OK';
      try {
        if (kind === 'good') {
          const n = 1 + Math.floor(rand() * 4);
          await api.prefill({ sequences: Array.from({ length: n }, () => ({ ids: randIds(4 + Math.floor(rand() * 60)) })), topLogprobs: 3 }, { timeoutMs: 30_000 });
        } else if (kind === 'malformed') {
          await rawCall(garbage[Math.floor(rand() * garbage.length)]);
        } else if (kind === 'invalid') {
          const which = Math.floor(rand() * 3);
          const seq = which === 0 ? [1, V + 7] : which === 1 ? [] : randIds(maxTokens + 1);
          await api.prefill({ sequences: [{ ids: seq }] }, { timeoutMs: 30_000 });
        } else {
          await rawCall(oversized);
        }
      } catch (e) {
        st = statusName(e);
      }
      latencies[kind].push(performance.now() - t0);
      counts[kind] ??= {};
      counts[kind][st] = (counts[kind][st] ?? 0) + 1;
      if (!EXPECTED[kind].includes(st)) unexpected.push(`${kind} -> ${st}`);
    }
    api.close();
    raw.close();
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: o.clients }, (_, c) => client(c)));
  const wallS = (Date.now() - started) / 1000;

  const end = Object.fromEntries(procs.map((p) => [p.name, rssKb(p.pid)]));
  const health = await new PrefillClient(address).health('', { timeoutMs: 10_000 }).catch((e) => `failed: ${e.message}`);
  const scraped = await fetch(`http://${metrics}/metrics`).then((r) => r.text()).catch(() => '');
  cluster.child.kill('SIGTERM');
  const exit = await cluster.exited;
  clearTimeout(hardStop);
  const leftover = procs.filter((p) => rssKb(p.pid) !== null).map((p) => p.name);

  // The report.
  const statuses = [...new Set(Object.values(counts).flatMap((c) => Object.keys(c)))].sort();
  const lines = [];
  lines.push(`soak: ${o.clients} clients, ${wallS.toFixed(0)} s, ${o.ranks} CPU ranks on ${address}`);
  lines.push('');
  lines.push(`| kind | ${statuses.join(' | ')} | total | p50 ms | p99 ms |`);
  lines.push(`| --- | ${statuses.map(() => '---:').join(' | ')} | ---: | ---: | ---: |`);
  let total = 0;
  for (const kind of Object.keys(latencies)) {
    const c = counts[kind] ?? {};
    const n = Object.values(c).reduce((a, b) => a + b, 0);
    total += n;
    const sorted = [...latencies[kind]].sort((a, b) => a - b);
    lines.push(`| ${kind} | ${statuses.map((s) => c[s] ?? 0).join(' | ')} | ${n} | ${percentile(sorted, 0.5).toFixed(1)} | ${percentile(sorted, 0.99).toFixed(1)} |`);
  }
  lines.push('');
  lines.push(`${total} requests, ${(total / wallS).toFixed(1)} per second; good requests answered OK: ${counts.good?.OK ?? 0}`);
  lines.push('');
  lines.push('| process | RSS at start (MB) | RSS at end (MB) | growth (MB) |');
  lines.push('| --- | ---: | ---: | ---: |');
  for (const p of procs) {
    const s = start[p.name];
    const e = end[p.name];
    const mb = (kb) => (kb === null ? '-' : (kb / 1024).toFixed(1));
    lines.push(`| ${p.name} (pid ${p.pid}) | ${mb(s)} | ${mb(e)} | ${s !== null && e !== null ? ((e - s) / 1024).toFixed(1) : '-'} |`);
  }
  lines.push('');
  const refused = scraped.split('\n').filter((l) => l.startsWith('eps_refused_requests_total{'));
  lines.push(`metrics: ${refused.map((l) => l.replace('eps_refused_requests_total', 'refused')).join(', ') || '(none scraped)'}`);
  lines.push(`health at the end: ${health}; launcher exit after SIGTERM: ${exit.code ?? exit.signal}; processes left: ${leftover.length ? leftover.join(', ') : 'none'}`);
  const problems = [];
  if (unexpected.length) problems.push(`${unexpected.length} unexpected statuses (first: ${[...new Set(unexpected)].slice(0, 5).join('; ')})`);
  if (health !== 'SERVING') problems.push(`health at the end: ${health}`);
  if (exit.code !== 0) problems.push(`the launcher exited ${exit.code ?? exit.signal} after SIGTERM`);
  if (leftover.length) problems.push(`processes left: ${leftover.join(', ')}`);
  if (!(counts.good?.OK > 0)) problems.push('no good request was answered');
  lines.push(problems.length ? `FAILED: ${problems.join('; ')}` : 'PASSED: no status outside the expected ones; the cluster served to the end and stopped cleanly');
  process.stdout.write(`${lines.join('\n')}\n`);
  if (o.json) fs.writeFileSync(o.json, JSON.stringify({ counts, start, end, wallS, problems }, null, 2));
  if (problems.length) {
    process.stderr.write(cluster.stderr().split('\n').slice(-20).join('\n'));
    process.exit(1);
  }
}

main().catch((e) => {
  process.stderr.write(`soak: ${e.stack ?? e}\n`);
  process.exit(1);
});
