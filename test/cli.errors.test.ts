// Acceptance: bad input to `eps-moe forward` exits non-zero with one line on stderr that says what is
// wrong, and no stack trace.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FIXTURES, runCli } from './helpers/cli';

const model = path.join(FIXTURES, 'mixtral');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-cli-'));
function inputFile(name: string, text: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
}

function expectOneLineError(r: { code: number | null; stderr: string; stdout: string }, pattern: RegExp): void {
  expect(r.code).not.toBe(0);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/\n\s+at /);
}

describe('eps-moe forward rejects bad input with one line', () => {
  test('no such model', async () => {
    const r = await runCli(['forward', '--model', path.join(dir, 'nope'), '--input', inputFile('ok.json', '{"sequences": [[1]]}')]);
    expectOneLineError(r, /no such model: .*nope/);
  });
  test('unreadable input file', async () => {
    const r = await runCli(['forward', '--model', model, '--input', path.join(dir, 'missing.json')]);
    expectOneLineError(r, /cannot read input .*missing\.json/);
  });
  test('input that is not JSON', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('bad.json', '{"sequences": [[1, 2]')]);
    expectOneLineError(r, /bad\.json is not valid JSON/);
  });
  test('a non-integer token id', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('float.json', '{"sequences": [[1, 2.5]]}')]);
    expectOneLineError(r, /sequences\[0\]\[1\] = 2\.5 is not an integer token id/);
  });
  test('a string token id', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('str.json', '{"sequences": [["a"]]}')]);
    expectOneLineError(r, /sequences\[0\]\[0\] = "a" is not an integer token id/);
  });
  test('an out-of-vocabulary id', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('oov.json', '{"sequences": [[3], [1, 100000]]}')]);
    expectOneLineError(r, /sequences\[1\]\[1\] = 100000 is outside the vocabulary \[0, \d+\)/);
  });
  test('a negative id', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('neg.json', '{"sequences": [[-1]]}')]);
    expectOneLineError(r, /sequences\[0\]\[0\] = -1 is outside the vocabulary/);
  });
  test('an empty sequence', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('empty.json', '{"sequences": [[1], []]}')]);
    expectOneLineError(r, /sequences\[1\] is empty/);
  });
  test('no sequences at all', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('none.json', '{"sequences": []}')]);
    expectOneLineError(r, /"sequences" is empty/);
  });
  test('a missing required flag', async () => {
    const r = await runCli(['forward', '--model', model]);
    expectOneLineError(r, /--input/);
  });
  test('an unknown backend', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('ok2.json', '{"sequences": [[1]]}'), '--backend', 'tpu']);
    expectOneLineError(r, /--backend/);
  });
  test('an unknown dispatch mode', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('ok3.json', '{"sequences": [[1]]}'), '--dispatch', 'twice']);
    expectOneLineError(r, /--dispatch.*twice/);
  });
  test('more expert groups than the experts allow (mixtral: 8 experts on one rank)', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('g.json', '{"sequences": [[1]]}'), '--expert-groups', '9']);
    expectOneLineError(r, /expert groups must be an integer from 1 to 8 .* got 9/);
  });
  test('an expert-axis D beyond the expert groups', async () => {
    const args = [
      '--input',
      inputFile('g2.json', '{"sequences": [[1]]}'),
      '--expert-groups',
      '2',
      '--moe-schedule',
      'fixed:4:dense:experts',
    ];
    const r = await runCli(['forward', '--model', model, ...args]);
    expectOneLineError(r, /fixed:4:dense:experts cuts 4 chunks along expert groups, but the layout has 2/);
  });
  test('a non-positive --expert-groups', async () => {
    const r = await runCli(['forward', '--model', model, '--input', inputFile('g3.json', '{"sequences": [[1]]}'), '--expert-groups', '0']);
    expectOneLineError(r, /--expert-groups must be a positive integer/);
  });
});

describe('eps-moe make-model', () => {
  test('an unknown preset is one line naming the presets', async () => {
    const r = await runCli(['make-model', '--preset', 'gpt-17', '--out', path.join(dir, 'm')]);
    expectOneLineError(r, /unknown preset 'gpt-17' \(have: .*tiny/);
  });
});
