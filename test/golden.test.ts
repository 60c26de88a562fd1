// Acceptance: `eps-moe forward --all-logits` on the CPU backend matches the logits transformers
// computed (scripts/make_golden.py) within max|diff| <= 1e-3 x max|logit|, at every position.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FIXTURES, GOLDEN_FIXTURES, loadGolden, runCli } from './helpers/cli';

describe.each(GOLDEN_FIXTURES)('golden fixture %s', (fixture) => {
  test('forward --all-logits matches transformers at every position', async () => {
    const golden = loadGolden(fixture);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-golden-'));
    const input = path.join(dir, 'in.json');
    fs.writeFileSync(input, JSON.stringify({ sequences: golden.sequences }));
    const r = await runCli(['forward', '--model', path.join(FIXTURES, fixture), '--input', input, '--backend', 'cpu', '--all-logits']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { sequences: { logits: number[][] }[] };
    expect(out.sequences).toHaveLength(golden.sequences.length);
    golden.logits.forEach((want, s) => {
      const got = out.sequences[s].logits;
      expect(got).toHaveLength(golden.sequences[s].length);
      let maxDiff = 0;
      let maxLogit = 0;
      want.forEach((row, t) => {
        expect(got[t]).toHaveLength(row.length);
        row.forEach((w, v) => {
          maxDiff = Math.max(maxDiff, Math.abs(got[t][v] - w));
          maxLogit = Math.max(maxLogit, Math.abs(w));
        });
      });
      expect(maxDiff).toBeLessThanOrEqual(1e-3 * maxLogit);
    });
  });

  test('forward without --all-logits prints only the last position', async () => {
    const golden = loadGolden(fixture);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-golden-'));
    const input = path.join(dir, 'in.json');
    fs.writeFileSync(input, JSON.stringify({ sequences: golden.sequences }));
    const r = await runCli(['forward', '--model', path.join(FIXTURES, fixture), '--input', input, '--backend', 'cpu']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { sequences: { logits: number[][] }[] };
    golden.logits.forEach((want, s) => {
      const last = want[want.length - 1];
      expect(out.sequences[s].logits).toHaveLength(1);
      const maxLogit = Math.max(...last.map(Math.abs));
      const maxDiff = Math.max(...last.map((w, v) => Math.abs(out.sequences[s].logits[0][v] - w)));
      expect(maxDiff).toBeLessThanOrEqual(1e-3 * maxLogit);
    });
  });
});
