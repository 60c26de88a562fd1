// scripts/baselines/{grouped_mm,attention}_interleaved.py (issues 12 and 13's acceptance tables) run through
// scripts/baselines/dryrun: numpy stands in for torch and for the kernels' C entry points, so the scripts'
// logic (cases, checks against torch, rotating rounds, ratios, acceptance counts, a backend's refusal) is
// tested without a GPU. Skipped, saying why, where python3 has no numpy.
import { spawnSync } from 'child_process';
import * as path from 'path';

const baselines = path.join(__dirname, '..', 'scripts', 'baselines');
const numpy = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' });
const haveNumpy = numpy.status === 0;
if (!haveNumpy) console.log('baselines.interleaved: skipped: python3 with numpy is needed for the dry runs');
const maybe = haveNumpy ? describe : describe.skip;

function dryRun(script: string, args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; out: string } {
  const r = spawnSync('python3', [path.join('dryrun', 'run.py'), script, '--lib', 'unused', '--rounds', '2', '--reps', '1', ...args], {
    cwd: baselines,
    encoding: 'utf8',
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', ...env },
    timeout: 120_000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

maybe('interleaved baseline scripts (dry run)', () => {
  test('grouped: every config checked against torch, a ratio per config, the acceptance count per config', () => {
    const r = dryRun('grouped_mm_interleaved.py', ['--configs=0,5', '--only', 'E64 N2048 K768 (qwen3 down) bal M=32']);
    expect(r.status).toBe(0);
    expect(r.out).not.toMatch(/FAIL/);
    expect(r.out).toMatch(/^E64 N2048 K768 \(qwen3 down\) bal M=32 +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ \[[\d.]+, [\d.]+\] +[\d.]+ \[/m);
    expect(r.out).toMatch(/^ours0 >= 1\.0x torch at M >= 128: 0 \/ 0 .*>= 0\.9x at M < 128: \d \/ 1$/m);
    expect(r.out).toMatch(/^ours5 >= 1\.0x torch/m);
  }, 130_000);

  test('grouped: a wrong result of ours is a FAIL and exit 1', () => {
    const r = dryRun('grouped_mm_interleaved.py', ['--only', 'E64 N2048 K768 (qwen3 down) bal M=32'], { DRYRUN_WRONG: '1' });
    expect(r.status).toBe(1);
    expect(r.out).toMatch(/^FAIL E64 N2048 K768 \(qwen3 down\) bal M=32 config 0: rel L2/m);
  }, 130_000);

  test('attention: MODE[:HEADGROUP] variants, GQA retried with repeated kv heads, flash refusing 192/128', () => {
    const r = dryRun('attention_interleaved.py', ['--modes=-1,7:4', '--case', '256:4/2:64', '--case', '384:4/4:192/128']);
    expect(r.status).toBe(0);
    expect(r.out).not.toMatch(/FAIL/);
    expect(r.out).toMatch(/ours-1 +ours7:4 +cudnn +flash/);
    expect(r.out).toMatch(/^256:4\/2:64( +[\d.]+){4}( +[\d.]+ \[[\d.]+, [\d.]+\]){4}$/m);
    expect(r.out).toMatch(/^384:4\/4:192\/128( +[\d.]+){3} +-( +[\d.]+ \[[\d.]+, [\d.]+\] +-){2}$/m);
    expect(r.out).toMatch(/^note 256:4\/2:64: cudnn: kv heads repeated to 4$/m);
    expect(r.out).toMatch(/^note 384:4\/4:192\/128: flash: - \(/m);
  }, 130_000);

  test('attention: a wrong result of ours is a FAIL per variant and exit 1', () => {
    const r = dryRun('attention_interleaved.py', ['--modes=-1,7', '--case', '256:4/2:64'], { DRYRUN_WRONG: '1' });
    expect(r.status).toBe(1);
    expect(r.out).toMatch(/^FAIL 256:4\/2:64 ours-1: rel L2/m);
    expect(r.out).toMatch(/^FAIL 256:4\/2:64 ours7: rel L2/m);
  }, 130_000);
});
