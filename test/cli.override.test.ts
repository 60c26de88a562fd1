// --override KEY=VALUE on make-model, launch and bench prefill: a preset's config changed before it is
// parsed, so a full-size shape can be cut to fit; mistakes are usage errors (exit 2) naming the field.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runCli } from './helpers/cli';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-override-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('make-model --override writes the changed config and a checkpoint that matches it', async () => {
  const out = path.join(tmp, 'm');
  const r = await runCli([
    'make-model',
    '--preset',
    'tiny-qwen3-moe',
    '--override',
    'num_hidden_layers=1',
    '--override',
    'num_experts_per_tok=2',
    '--out',
    out,
  ]);
  expect(r.code).toBe(0);
  const config = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8'));
  expect([config.num_hidden_layers, config.num_experts_per_tok]).toEqual([1, 2]);
  const input = path.join(tmp, 'in.json');
  fs.writeFileSync(input, JSON.stringify({ sequences: [[1, 2, 3]] }));
  const f = await runCli(['forward', '--model', out, '--input', input, '--backend', 'cpu']);
  expect(f.code).toBe(0);
  expect(JSON.parse(f.stdout).sequences[0].logits[0]).toHaveLength(config.vocab_size);
});

test.each([
  [['make-model', '--preset', 'tiny-qwen3-moe', '--override', 'nope=1', '--out', path.join(tmp, 'x')], /has no field "nope"/],
  [['make-model', '--preset', 'tiny-qwen3-moe', '--override', 'num_hidden_layers', '--out', path.join(tmp, 'y')], /expected KEY=VALUE/],
  [
    ['launch', '--preset', 'tiny-qwen3-moe', '--override', 'num_hidden_layers=0', '--backend', 'cpu', '--port', '0'],
    /num_hidden_layers.*positive integer, got 0/,
  ],
  [
    ['launch', '--model', path.join(tmp, 'm'), '--override', 'num_hidden_layers=1', '--backend', 'cpu', '--port', '0'],
    /--override changes a preset's config/,
  ],
  [['bench', 'prefill', '--preset', 'no-such-preset'], /unknown preset "no-such-preset"/],
  [['bench', 'prefill', '--preset', 'tiny-qwen3-moe', '--override', 'vocab_size=-1'], /vocab_size/],
])('%j is a usage error (exit 2) naming what is wrong', async (args, message) => {
  const r = await runCli(args);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(message);
});
