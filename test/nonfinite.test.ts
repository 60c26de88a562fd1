// Issue 14, item 4: non-finite results are errors, and a config that cannot be loaded fails at once.
// A checkpoint with NaN in one token's embedding row: `eps-moe forward` exits non-zero with one line naming
// the sequence (--check-layers adds the layer, --check-weights names the tensor at load); a 2-rank CPU
// cluster answers INTERNAL naming the sequence and goes on serving. num_hidden_layers 1e9, or more layers
// than the checkpoint holds, or weights larger than memory: one line, in well under a second.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { status } from '@grpc/grpc-js';
import { makeModel } from '../src/model/makeModel';
import { loadRankEngine } from '../src/engine/rankEngine';
import { LocalCommunicator } from '../src/comm/communicator';
import { runCli } from './helpers/cli';
import { poisonTensor } from './helpers/poisonCheckpoint';
import { spawnLauncher, startCluster, type TestCluster } from './clusterHarness';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-nonfinite-'));
const good = path.join(dir, 'good');
const nan = path.join(dir, 'nan');
const BAD_TOKEN = 7;

function copyModel(to: string, config: (c: Record<string, unknown>) => void = () => undefined): string {
  fs.cpSync(good, to, { recursive: true });
  const file = path.join(to, 'config.json');
  const c = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  config(c);
  fs.writeFileSync(file, JSON.stringify(c));
  return to;
}

function input(name: string, sequences: number[][]): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, JSON.stringify({ sequences }));
  return f;
}

function oneLine(r: { code: number | null; stdout: string; stderr: string }): string {
  expect(r.code).not.toBe(0);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  return lines[0];
}

beforeAll(async () => {
  await makeModel({ preset: 'tiny-mixtral', out: good, seed: 3 });
  copyModel(nan);
  // Token 7's embedding row (H = 64 f32 values) becomes NaN: only sequences holding token 7 go non-finite.
  const H = 64;
  const file = path.join(nan, 'model.safetensors');
  poisonTensor(file, 'model.embed_tokens.weight', (BAD_TOKEN + 1) * H); // rows 0..7 ...
  const fresh = path.join(dir, 'fresh');
  await makeModel({ preset: 'tiny-mixtral', out: fresh, seed: 3 });
  // ... then rows 0..6 restored from an identical checkpoint: NaN in row 7 alone.
  restoreRows(path.join(fresh, 'model.safetensors'), file, 'model.embed_tokens.weight', BAD_TOKEN * H * 4);
}, 60_000);

/** Copies the first `bytes` of tensor `name` from one safetensors file to another of the same layout. */
function restoreRows(from: string, to: string, name: string, bytes: number): void {
  const src = fs.readFileSync(from);
  const headerLen = Number(src.readBigUInt64LE(0));
  const header = JSON.parse(src.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const at = 8 + headerLen + header[name].data_offsets[0];
  const fd = fs.openSync(to, 'r+');
  fs.writeSync(fd, src, at, bytes, at);
  fs.closeSync(fd);
}

describe('eps-moe forward: non-finite logits are an error', () => {
  test('the good checkpoint answers JSON', async () => {
    const r = await runCli(['forward', '--model', good, '--input', input('ok.json', [[1, 2, BAD_TOKEN]]), '--backend', 'cpu']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { sequences: unknown[] }).sequences).toHaveLength(1);
  });

  test('NaN weights: exit 1, one line naming the sequence', async () => {
    const r = await runCli([
      'forward',
      '--model',
      nan,
      '--input',
      input('nan.json', [
        [1, 2, 3],
        [4, BAD_TOKEN, 5],
      ]),
      '--backend',
      'cpu',
    ]);
    expect(oneLine(r)).toMatch(/^eps-moe: sequences\[1\]: 512 of 512 logits are NaN or infinite$/);
  });

  test('--check-layers names the first layer whose MLP output went non-finite', async () => {
    const r = await runCli(['forward', '--model', nan, '--input', input('nan2.json', [[BAD_TOKEN]]), '--backend', 'cpu', '--check-layers']);
    expect(oneLine(r)).toMatch(/sequences\[0\]: .* NaN or infinite \(the first non-finite value came from layer 0's MLP output\)/);
  });

  test('--check-weights fails the load naming the tensor', async () => {
    const r = await runCli(['forward', '--model', nan, '--input', input('ok2.json', [[1]]), '--backend', 'cpu', '--check-weights']);
    expect(oneLine(r)).toMatch(/"model\.embed_tokens\.weight": 64 of 32768 values are NaN or infinite \(the first in row 7\)/);
  });
});

describe('configs that cannot load fail in one line, before anything is allocated', () => {
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    ['num_hidden_layers 1e9', (c) => (c.num_hidden_layers = 1e9), /field "num_hidden_layers" must be at most 4096 .*got 1000000000/],
    [
      'more layers than the checkpoint holds',
      (c) => (c.num_hidden_layers = 40),
      /num_hidden_layers is 40 but the checkpoint has no tensors of layer 2/,
    ],
    ['weights larger than memory', (c) => (c.vocab_size = 2 ** 31), /the model's weights need about .* GB per rank .*; this host has/],
  ];
  test.each(cases)('%s: in-process, under a second', async (name, change, pattern) => {
    const model = copyModel(path.join(dir, name.replace(/\W+/g, '-')), change);
    const t0 = performance.now();
    await expect(loadRankEngine({ modelDir: model, backend: 'cpu', deviceIndex: 0, comm: new LocalCommunicator() })).rejects.toThrow(
      pattern,
    );
    expect(performance.now() - t0).toBeLessThan(1000);
  });
  test.each(cases)('%s: eps-moe forward prints one line', async (name, _change, pattern) => {
    const model = path.join(dir, name.replace(/\W+/g, '-'));
    const r = await runCli(['forward', '--model', model, '--input', input('one.json', [[1]]), '--backend', 'cpu']);
    expect(oneLine(r)).toMatch(pattern);
  });
});

describe('a cluster answers INTERNAL naming the sequence, and goes on serving', () => {
  let cluster: TestCluster;
  beforeAll(async () => {
    cluster = await startCluster({ model: nan, ranks: 2 });
  }, 120_000);
  afterAll(async () => {
    await cluster?.destroy();
  });

  test('a request with a NaN sequence fails INTERNAL; the next good one is answered', async () => {
    const bad = cluster.client.prefill({ sequences: [{ ids: [1, 2, 3] }, { ids: [4, BAD_TOKEN, 5] }] }, { timeoutMs: 30_000 });
    await expect(bad).rejects.toMatchObject({
      code: status.INTERNAL,
      details: expect.stringMatching(/sequences\[1\]: 512 of 512 logits are NaN or infinite/),
    });
    for (let i = 0; i < 3; i++) {
      const ok = await cluster.client.prefill({ sequences: [{ ids: [1, 2, 3 + i] }], topLogprobs: 2 }, { timeoutMs: 30_000 });
      expect(ok.sequences).toHaveLength(1);
      expect(Number.isFinite(ok.sequences[0].topLogprobs[0].logprob)).toBe(true);
    }
    const metrics = await cluster.client.metrics({ timeoutMs: 10_000 });
    expect(metrics.ranks.map((r) => r.state)).toEqual(['ready', 'ready']);
  }, 60_000);
});

test('launch --check-weights: the ranks refuse the checkpoint at load, naming the tensor; the launcher exits 1', async () => {
  const launcher = spawnLauncher({ model: nan, ranks: 2, checkWeights: true });
  const exit = await launcher.exited;
  expect(exit.code).toBe(1);
  expect(launcher.stdout()).not.toMatch(/^ready:/m);
  expect(launcher.stderr()).toMatch(/"model\.embed_tokens\.weight": 64 of 32768 values are NaN or infinite/);
}, 120_000);
