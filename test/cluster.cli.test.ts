// `eps-moe prefill` as a user runs it (a child process) against a real cluster: the --json shape,
// the three inputs, errors as one line and a non-zero exit, and the load generator's report.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { PrefillCommandOptions } from '../src/cli/prefill';
import {
  FIXTURES,
  ROOT,
  goldenCases,
  loadGolden,
  referenceLogprobs,
  startCluster,
  LOGPROB_TOLERANCE,
  type TestCluster,
} from './clusterHarness';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function runPrefill(opts: PrefillCommandOptions): Promise<Run> {
  const script = [
    "const { prefillCommand } = require('./src/cli/prefill.ts');",
    "const { reportAndExit } = require('./src/cli/errors.ts');",
    'prefillCommand(JSON.parse(process.argv[1])).catch(reportAndExit);',
  ].join(' ');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-r', path.join(ROOT, 'test', 'clusterTsRegister.js'), '-e', script, JSON.stringify(opts)], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('eps-moe prefill (mixtral, 2 ranks)', () => {
  let cluster: TestCluster;
  const cases = goldenCases(loadGolden('mixtral'));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-moe-prefill-'));
  beforeAll(async () => {
    cluster = await startCluster({ model: path.join(FIXTURES, 'mixtral'), ranks: 2 });
  });
  afterAll(async () => {
    await cluster?.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('--tokens --json prints exactly {"sequences": [{"next_token", "top_logprobs": [{"token", "logprob"}]}]}', async () => {
    const c = cases[1];
    const run = await runPrefill({ server: cluster.address, tokens: c.ids.join(','), topLogprobs: 3, json: true });
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout) as { sequences: { next_token: number; top_logprobs: { token: number; logprob: number }[] }[] };
    expect(Object.keys(doc)).toEqual(['sequences']);
    expect(doc.sequences).toHaveLength(1);
    expect(Object.keys(doc.sequences[0])).toEqual(['next_token', 'top_logprobs']);
    const ref = referenceLogprobs(c.logits);
    const refOrder = ref.map((_, i) => i).sort((a, b) => ref[b] - ref[a]);
    expect(doc.sequences[0].next_token).toBe(refOrder[0]);
    doc.sequences[0].top_logprobs.forEach((t, i) => {
      expect(Object.keys(t)).toEqual(['token', 'logprob']);
      expect(t.token).toBe(refOrder[i]);
      expect(Math.abs(t.logprob - ref[t.token])).toBeLessThanOrEqual(LOGPROB_TOLERANCE);
    });
  });

  test('--input FILE answers every sequence, in order', async () => {
    const file = path.join(tmp, 'input.json');
    fs.writeFileSync(file, JSON.stringify({ sequences: cases.map((c) => c.ids) }));
    const run = await runPrefill({ server: cluster.address, input: file, json: true });
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout) as { sequences: { next_token: number; top_logprobs: unknown[] }[] };
    expect(doc.sequences.map((s) => s.next_token)).toEqual(
      cases.map((c) => {
        const ref = referenceLogprobs(c.logits);
        return ref.indexOf(Math.max(...ref));
      }),
    );
    expect(doc.sequences.every((s) => s.top_logprobs.length === 5)).toBe(true);
  });

  test('without --json: one line per sequence, then timings', async () => {
    const run = await runPrefill({ server: cluster.address, tokens: cases[2].ids.join(',') });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^sequence 0 \(17 tokens\): next token \d+; top: /m);
    expect(run.stdout).toMatch(/^queue [\d.]+ ms, compute [\d.]+ ms$/m);
  });

  test('a refused request: one line naming the status and the field, exit 1', async () => {
    const run = await runPrefill({ server: cluster.address, tokens: '1,2,999' });
    expect(run.code).toBe(1);
    expect(run.stderr.trim()).toBe(
      'eps-moe: server answered INVALID_ARGUMENT: sequences[0].ids[2]: id 999 is outside the vocabulary [0, 160)',
    );
    const text = await runPrefill({ server: cluster.address, text: 'hello' });
    expect(text.code).toBe(1);
    expect(text.stderr).toMatch(/INVALID_ARGUMENT: texts: the model folder has no tokenizer.json/);
  });

  test('usage errors: not one input, a bad --tokens list, a bad --server', async () => {
    expect((await runPrefill({ server: cluster.address })).stderr).toMatch(/exactly one of --tokens, --text, --input/);
    expect((await runPrefill({ server: cluster.address, tokens: '1,x' })).stderr).toMatch(/--tokens: entry 1 \("x"\) is not an integer/);
    const bad = await runPrefill({ server: 'nowhere', tokens: '1' });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--server: expected HOST:PORT/);
  });

  test('--concurrency C --repeat R: reports throughput and latency percentiles', async () => {
    const run = await runPrefill({ server: cluster.address, tokens: cases[3].ids.join(','), concurrency: 4, repeat: 40 });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^requests: 40 \(40 ok\) in [\d.]+ s$/m);
    expect(run.stdout).toMatch(/^throughput: [\d.]+ requests\/s, [\d.]+ tokens\/s$/m);
    expect(run.stdout).toMatch(/^latency ms: p50 [\d.]+, p90 [\d.]+, p99 [\d.]+, max [\d.]+, mean [\d.]+$/m);
    const json = await runPrefill({ server: cluster.address, tokens: cases[3].ids.join(','), concurrency: 2, repeat: 6, json: true });
    const summary = JSON.parse(json.stdout) as { requests: number; ok: number; tokensPerSecond: number };
    expect(summary).toMatchObject({ requests: 6, ok: 6 });
    expect(summary.tokensPerSecond).toBeGreaterThan(0);
  });
});
