// `eps-moe profile` measures the cost model once into the cache folder; the next run finds it; the
// forward's auto schedule then plans with it and still computes the same logits.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FIXTURES, loadGolden, runCli } from './helpers/cli';

test('profile measures once, then finds the cached model; forward --moe-schedule auto uses it', async () => {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-profile-'));
  process.env.EPS_CACHE_DIR = cache;
  try {
    const model = path.join(FIXTURES, 'qwen2-moe');
    const first = await runCli(['profile', '--model', model, '--backend', 'cpu']);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^measured: .*cost-models\/cpu-.*-w1-[0-9a-f]{12}-v4\.json \(4 GEMM tables, 0 all-to-all curves\)/);
    const file = first.stdout.split(' ')[1];
    expect(fs.existsSync(file)).toBe(true);
    const second = await runCli(['profile', '--model', model, '--backend', 'cpu']);
    expect(second.stdout).toMatch(/^already cached: /);

    const golden = loadGolden('qwen2-moe');
    const input = path.join(cache, 'in.json');
    fs.writeFileSync(input, JSON.stringify({ sequences: golden.sequences }));
    const r = await runCli(['forward', '--model', model, '--input', input, '--backend', 'cpu', '--moe-schedule', 'auto']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { sequences: { logits: number[][] }[] };
    golden.logits.forEach((rows, s) => {
      const want = rows[rows.length - 1];
      const maxLogit = Math.max(...want.map(Math.abs));
      want.forEach((w, v) => expect(Math.abs(out.sequences[s].logits[0][v] - w)).toBeLessThanOrEqual(1e-3 * maxLogit));
    });
  } finally {
    delete process.env.EPS_CACHE_DIR;
  }
});
