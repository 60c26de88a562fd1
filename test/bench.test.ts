// `eps-moe bench --quick --backend cpu --json FILE`: every suite runs at quick sizes on the CPU
// backend, the JSON has the documented structure, and every number in it is positive and agrees
// with the FLOP arithmetic redone here from the row's own shape and time.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Writable } from 'stream';
import { benchCommand } from '../src/cli/bench';
import { CliError } from '../src/cli/errors';
import { buildProgram } from '../src/cli/main';
import type { BenchReport } from '../src/bench/report';
import { expertLoad } from '../src/bench/expertsSuite';
import { forcibleKernels, withKernel } from '../src/bench/attentionSuite';
import type { BenchContext } from '../src/bench/context';
import { FULL_SIZES, QUICK_SIZES } from '../src/bench/sizes';
import { runCli } from './helpers/cli';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eps-bench-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-9 * Math.max(Math.abs(a), Math.abs(b)));

function checkReport(r: BenchReport): void {
  expect(Number.isNaN(Date.parse(r.date))).toBe(false);
  expect(r.backend).toBe('cpu');
  expect(r.gpu).toMatch(/^cpu/);
  expect(r.versions.napi).toBeDefined();
  expect(r.quick).toBe(true);
  expect(r.dtype).toBe('f32');
  expect(Object.keys(r.suites).sort()).toEqual(['attention', 'experts', 'gemm', 'prefill']);
  expect(r.skipped).toEqual({});
  expect(r.ceiling).not.toBeNull();
  const ceiling = r.ceiling!.tflops;
  expect(ceiling).toBeGreaterThan(0);

  // gemm: the ceiling row first, then the model shapes.
  const gemm = r.suites.gemm!;
  expect(gemm.length).toBeGreaterThanOrEqual(5);
  expect(gemm[0]).toMatchObject({ M: r.ceiling!.side, N: r.ceiling!.side, K: r.ceiling!.side, pctOfCeiling: 100 });
  for (const g of gemm) {
    expect(g.ms).toBeGreaterThan(0);
    close(g.gflop, (2 * g.M * g.N * g.K) / 1e9);
    close(g.tflops, (2 * g.M * g.N * g.K) / (g.ms * 1e-3) / 1e12);
    close(g.pctOfCeiling, (100 * g.tflops) / ceiling);
    expect(g.inputSets).toBeGreaterThanOrEqual(1);
  }

  // experts: two shapes, balanced powers of two rows per expert, and the crossover of each shape.
  const experts = r.suites.experts!;
  const shapes = [...new Set(experts.map((e) => e.shape))];
  expect(shapes).toHaveLength(2);
  for (const e of experts) {
    expect(Math.log2(e.rowsPerExpert) % 1).toBe(0);
    // The CPU runs grouped_sm90 as grouped: no column of its own here.
    expect([e.load, e.rows, e.sm90Tflops]).toEqual(['balanced', e.E * e.rowsPerExpert, null]);
    // Each expert's rows travel in the JSON (scripts/baselines/grouped_mm_bench.py gives them to torch).
    expect(e.counts).toEqual(Array(e.E).fill(e.rowsPerExpert));
    for (const v of [e.groupedMs, e.denseMs, e.groupedTflops, e.denseTflops]) expect(v).toBeGreaterThan(0);
    const flops = 2 * e.E * e.rowsPerExpert * e.N * e.K;
    close(e.groupedTflops, flops / (e.groupedMs * 1e-3) / 1e12);
    close(e.denseTflops, flops / (e.denseMs * 1e-3) / 1e12);
    close(e.denseOverGrouped, e.denseTflops / e.groupedTflops);
  }
  const crossovers = r.summary.experts!.crossover as { shape: string; firstDenseWin: number | null }[];
  expect(crossovers.map((c) => c.shape)).toEqual(shapes);
  for (const c of crossovers) {
    const rows = experts.filter((e) => e.shape === c.shape).sort((a, b) => a.rowsPerExpert - b.rowsPerExpert);
    expect(rows.length).toBeGreaterThanOrEqual(4);
    const first = rows.find((e) => e.denseTflops > e.groupedTflops);
    expect(c.firstDenseWin).toBe(first ? first.rowsPerExpert : null);
  }

  // attention: FLOPs = 2 * S^2/2 * (hd + hdv) * heads per sequence (4 * S^2/2 * hd * heads when equal);
  // packed cases of equal and of mixed lengths, and the MLA head dims (qk 192, v 128) on the CPU too.
  const attention = r.suites.attention!;
  expect(attention.length).toBeGreaterThanOrEqual(4);
  for (const a of attention) {
    expect(a.seqLens).toHaveLength(a.sequences);
    expect(a.seqLens.reduce((x, y) => x + y, 0)).toBe(a.tokens);
    const pairs = a.seqLens.reduce((x, S) => x + (S * S) / 2, 0);
    close(a.gflop, (2 * pairs * (a.headDim + a.headDimV) * a.numHeads) / 1e9);
    if (a.headDimV === a.headDim) close(a.gflop, (4 * pairs * a.headDim * a.numHeads) / 1e9);
    expect(a.ms).toBeGreaterThan(0);
    close(a.tflops, (a.gflop * 1e9) / (a.ms * 1e-3) / 1e12);
  }
  expect(attention.some((a) => a.sequences > 1)).toBe(true);
  expect(attention.some((a) => new Set(a.seqLens).size > 1)).toBe(true);
  expect(attention.some((a) => a.headDim === 192 && a.headDimV === 128 && a.numHeads === a.numKvHeads)).toBe(true);

  // prefill of tiny-mixtral: 8 x 128 and 32 x 32 tokens.
  const prefill = r.suites.prefill!;
  expect(prefill.map((p) => [p.model, p.batch, p.seqLen])).toEqual([
    ['tiny-mixtral', 8, 128],
    ['tiny-mixtral', 32, 32],
  ]);
  // 8 x 128 by hand (test/bench.flops.test.ts): 287,834,112 FLOPs.
  close(prefill[0].modelTflop, 287_834_112 / 1e12);
  for (const p of prefill) {
    expect(p.tokens).toBe(p.batch * p.seqLen);
    expect(p.ms).toBeGreaterThan(0);
    close(p.tokensPerSec, p.tokens / (p.ms * 1e-3));
    close(p.tflops, (p.modelTflop * 1e12) / (p.ms * 1e-3) / 1e12);
    close(p.mfuPct, (100 * p.tflops) / ceiling);
    expect(p.kernels).toMatch(/^(grouped|dense) \d+\/\d+/);
  }
  for (const name of ['gemm', 'experts', 'attention', 'prefill'] as const) expect(r.notes[name]!.length).toBeGreaterThan(0);
}

describe('eps-moe bench on the CPU backend', () => {
  test('benchCommand: --quick --backend cpu --json', async () => {
    const out = new Collect();
    const err = new Collect();
    const file = path.join(dir, 'direct', 'bench.json');
    const returned = await benchCommand({ backend: 'cpu', quick: true, json: file }, { out, err });
    const written = JSON.parse(fs.readFileSync(file, 'utf8')) as BenchReport;
    expect(written).toEqual(JSON.parse(JSON.stringify(returned)));
    checkReport(written);
    for (const name of ['gemm', 'experts', 'attention', 'prefill']) expect(out.text).toMatch(new RegExp(`^## ${name}: `, 'm'));
    expect(out.text).toMatch(/crossover .*rows\/expert|dense never beats grouped/);
    expect(err.text).toMatch(/^eps-moe bench: experts .* rows\/expert=\d+/m);
  });

  test('suites named on the command line run alone, in the canonical order', async () => {
    const out = new Collect();
    const r = await benchCommand({ suites: ['attention', 'gemm'], backend: 'cpu', reps: 1 }, { out, err: new Collect() });
    expect(Object.keys(r.suites)).toEqual(['gemm', 'attention']);
    expect(r.reps).toBe(1);
    expect(out.text.indexOf('## gemm')).toBeLessThan(out.text.indexOf('## attention'));
  });

  test('bad usage is a CliError with exit code 2', async () => {
    const streams = { out: new Collect(), err: new Collect() };
    const unknown = benchCommand({ suites: ['gemm', 'nope'], backend: 'cpu' }, streams);
    await expect(unknown).rejects.toBeInstanceOf(CliError);
    await expect(unknown).rejects.toMatchObject({
      exitCode: 2,
      message: expect.stringMatching(/unknown suite 'nope' \(suites: gemm, experts, attention, prefill\)/),
    });
    await expect(benchCommand({ backend: 'cpu', reps: 0 }, streams)).rejects.toMatchObject({
      exitCode: 2,
      message: expect.stringMatching(/reps/),
    });
    await expect(benchCommand({ suites: ['prefill'], backend: 'cpu', moeSchedule: 'sometimes' }, streams)).rejects.toMatchObject({
      exitCode: 2,
    });
    expect(streams.out.text).toBe('');
  });
});

// Runs once the lead wires `bench` into src/cli/main.ts.
const wired = buildProgram().commands.some((c) => c.name() === 'bench');
(wired ? test : test.skip)('through the CLI: eps-moe bench --quick --backend cpu --json FILE', async () => {
  const file = path.join(dir, 'cli.json');
  const r = await runCli(['bench', '--quick', '--backend', 'cpu', '--json', file], 120_000);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^## prefill: /m);
  checkReport(JSON.parse(fs.readFileSync(file, 'utf8')) as BenchReport);
});

test('bench experts: balanced and Zipf-skewed loads, and the model shapes of issue 12', () => {
  expect(expertLoad('balanced', 4, 32)).toEqual([32, 32, 32, 32]);
  const zipf = expertLoad('zipf', 128, 256);
  expect(zipf).toHaveLength(128);
  expect(zipf).toEqual(expertLoad('zipf', 128, 256)); // the same on every run
  for (const n of zipf) expect(n % 8).toBe(0);
  const total = zipf.reduce((a, b) => a + b, 0);
  expect(total).toBeLessThanOrEqual(128 * 256);
  expect(total).toBeGreaterThan(0.9 * 128 * 256);
  expect(expertLoad('zipf', 128, 32)).toContain(0); // the tail gets nothing at a small mean
  expect(Math.max(...zipf)).toBeGreaterThan(20 * 256); // the head dominates
  const shapes = FULL_SIZES.experts.map((e) => [e.N, e.K]);
  for (const nk of [
    [1536, 2048],
    [2048, 768],
    [3072, 5120],
    [5120, 1536],
    [4096, 7168],
    [7168, 2048],
  ])
    expect(shapes).toContainEqual(nk);
  for (const e of FULL_SIZES.experts.filter((x) => x.loads)) {
    expect(e.rowsPerExpert[0]).toBe(32);
    expect(e.rowsPerExpert[e.rowsPerExpert.length - 1]).toBe(4096);
    expect(e.loads).toEqual(['balanced', 'zipf']);
  }
});

test('bench attention: the cases of issue 13 (1K..32K, packed, head dims 64/128/256, MLA 192/128)', () => {
  const heads = (c: (typeof FULL_SIZES.attention)[number]) => c.heads ?? FULL_SIZES.attentionHeads;
  expect(FULL_SIZES.attentionHeads).toEqual({ numHeads: 32, numKvHeads: 8, headDim: 128 });
  const gqa128 = FULL_SIZES.attention.filter((c) => {
    const h = heads(c);
    return h.numHeads === 32 && h.numKvHeads === 8 && h.headDim === 128 && (h.headDimV ?? 128) === 128;
  });
  const single = gqa128.filter((c) => c.seqLens.length === 1).map((c) => c.seqLens[0]);
  expect(single).toEqual([1024, 4096, 8192, 16384, 32768]);
  // A packed batch of mixed lengths, some off the kernels' tile multiples.
  const mixed = gqa128.find((c) => c.seqLens.length > 1 && new Set(c.seqLens).size > 1);
  expect(mixed).toBeDefined();
  expect(mixed!.seqLens.some((S) => S % 64 !== 0)).toBe(true);
  expect(Math.max(...mixed!.seqLens)).toBeGreaterThanOrEqual(4096);
  for (const hd of [64, 256]) expect(FULL_SIZES.attention.some((c) => heads(c).headDim === hd)).toBe(true);
  // MLA: qk 192 / v 128, nq == nkv, 16 and 128 heads at 4K and 8K.
  for (const nh of [16, 128])
    for (const S of [4096, 8192])
      expect(
        FULL_SIZES.attention.some((c) => {
          const h = heads(c);
          return c.seqLens.length === 1 && c.seqLens[0] === S && h.headDim === 192 && h.headDimV === 128 && h.numHeads === nh && h.numKvHeads === nh;
        }),
      ).toBe(true);
  // Names are the JSON key of scripts/compare-bench.js and sdpa_attention.py: unique in each list.
  for (const sizes of [FULL_SIZES, QUICK_SIZES]) {
    expect(new Set(sizes.attention.map((c) => c.name)).size).toBe(sizes.attention.length);
    for (const c of sizes.attention) {
      const h = c.heads ?? sizes.attentionHeads;
      expect(h.numHeads % h.numKvHeads).toBe(0);
      for (const S of c.seqLens) expect(S).toBeGreaterThan(0);
    }
  }
  // The quick (CPU) list keeps the structure: packed mixed lengths and the MLA head dims.
  expect(QUICK_SIZES.attention.some((c) => new Set(c.seqLens).size > 1)).toBe(true);
  expect(QUICK_SIZES.attention.some((c) => c.heads?.headDim === 192 && c.heads.headDimV === 128)).toBe(true);
});

test('bench attention times each attention kernel a device can be forced to, restoring EPS_ATTENTION_KERNEL', async () => {
  const ctxWith = (kernels: string[] | undefined) => ({ device: { native: { attentionKernels: kernels } } }) as unknown as BenchContext;
  expect(forcibleKernels(ctxWith(['sm80', 'sm90']))).toEqual(['sm80', 'sm90']);
  expect(forcibleKernels(ctxWith(['reference']))).toEqual([]); // one kernel: nothing to choose
  expect(forcibleKernels(ctxWith(undefined))).toEqual([]);
  const saved = process.env.EPS_ATTENTION_KERNEL;
  try {
    process.env.EPS_ATTENTION_KERNEL = 'sm80';
    expect(await withKernel('sm90', async () => process.env.EPS_ATTENTION_KERNEL)).toBe('sm90');
    expect(process.env.EPS_ATTENTION_KERNEL).toBe('sm80');
    delete process.env.EPS_ATTENTION_KERNEL;
    await expect(withKernel('sm90', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(process.env.EPS_ATTENTION_KERNEL).toBeUndefined();
  } finally {
    if (saved === undefined) delete process.env.EPS_ATTENTION_KERNEL;
    else process.env.EPS_ATTENTION_KERNEL = saved;
  }
});
