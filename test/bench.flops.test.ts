// The pure parts of `eps-moe bench`: parameter and FLOP counts against published model sizes and
// hand arithmetic, the crossover rule, medians, L2 rotation, table layout, the kernel summary.
import { parseModelConfig } from '../src/model/config';
import { presetConfig } from '../src/model/makeModel';
import { crossover } from '../src/bench/crossover';
import {
  activeMatmulParamsPerToken,
  activeParamsPerToken,
  causalAttentionFlops,
  gemmFlops,
  prefillFlops,
  totalParams,
} from '../src/bench/flops';
import { L2_BYTES, rotationCount } from '../src/bench/inputSets';
import { kernelsUsed } from '../src/bench/prefillSuite';
import { median, percentOf, tflops } from '../src/bench/stats';
import { formatTable } from '../src/bench/table';
import type { MoePlan } from '../src/moe/plan/plan';

const spec = (preset: string) => parseModelConfig(presetConfig(preset), preset);

describe('parameter counts match the published model sizes', () => {
  test('Mixtral-8x7B: 46,702,792,704 parameters, 12.9B active per token', () => {
    // The Hugging Face model card of mistralai/Mixtral-8x7B-v0.1 lists 46.7B parameters (the
    // safetensors index sums to 46,702,792,704); Mistral's announcement: 12.9B used per token.
    const s = spec('mixtral-8x7b');
    expect(totalParams(s)).toBe(46_702_792_704);
    expect(activeParamsPerToken(s) / 1e9).toBeCloseTo(12.9, 1);
  });
  test('Qwen3-30B-A3B: 30.5B parameters (29.9B without embeddings), 3.3B active', () => {
    // From the Qwen3-30B-A3B model card: 30.5B in total, 29.9B non-embedding, 3.3B activated (the
    // card truncates: the count lies in [3.3, 3.4)).
    const s = spec('qwen3-30b-a3b');
    expect(totalParams(s) / 1e9).toBeCloseTo(30.5, 1);
    expect((totalParams(s) - 2 * s.vocabSize * s.hiddenSize) / 1e9).toBeCloseTo(29.9, 1);
    const active = activeParamsPerToken(s) / 1e9;
    expect(active).toBeGreaterThanOrEqual(3.3);
    expect(active).toBeLessThan(3.4);
  });
  test('tiny-mixtral by hand', () => {
    // H=64, 4 q heads and 2 kv heads of 16, expert I=128, 8 experts top-2, 2 layers, vocab 512.
    // Per layer: q, o 64*64 each, k, v 64*32 each = 12288; router 64*8 = 512; 2 experts of
    // 3*64*128 = 24576 each = 49152. Sum 61952, times 2 layers.
    expect(activeMatmulParamsPerToken(spec('tiny-mixtral'))).toBe(123_904);
  });
});

describe('FLOP counts', () => {
  test('GEMM: 2 M N K', () => {
    expect(gemmFlops(4096, 28672, 4096)).toBe(2 * 4096 * 28672 * 4096);
  });
  test('causal attention: 4 * S^2/2 * hd * heads per sequence', () => {
    // 1 x 1024, 32 heads of 128: 4 * 524288 * 128 * 32 = 8,589,934,592.
    expect(causalAttentionFlops([1024], 32, 128)).toBe(8_589_934_592);
    // A packed batch is the sum of its sequences: 8 x 1K is an eighth of 1 x 8K.
    expect(causalAttentionFlops(Array(8).fill(1024), 32, 128)).toBe(causalAttentionFlops([8192], 32, 128) / 8);
    // hdv defaults to hd: the same as passing it.
    expect(causalAttentionFlops([1024, 700], 32, 128, 128)).toBe(causalAttentionFlops([1024, 700], 32, 128));
  });
  test('causal attention with qk != v head dims (MLA): 2 * S^2/2 * (hd + hdv) * heads', () => {
    // DeepSeek-V3, 1 x 4096, 128 heads, qk 192, v 128: 2 * 8,388,608 * 320 * 128 = 687,194,767,360.
    expect(causalAttentionFlops([4096], 128, 192, 128)).toBe(687_194_767_360);
    // QK^T at 192 plus PV at 128: the mean of the two square counts.
    expect(causalAttentionFlops([4096], 128, 192, 128)).toBe((causalAttentionFlops([4096], 128, 192) + causalAttentionFlops([4096], 128, 128)) / 2);
    // Packed: the sum over sequences.
    expect(causalAttentionFlops([700, 2048], 16, 192, 128)).toBe(causalAttentionFlops([700], 16, 192, 128) + causalAttentionFlops([2048], 16, 192, 128));
  });
  test('prefill of tiny-mixtral, 8 x 128 tokens', () => {
    // matmuls: 2 * 123904 * 1024 tokens = 253,755,392, plus lm_head on 8 last tokens 2*8*64*512 = 524,288.
    // attention: 2 layers * 8 sequences * 4 * 128^2/2 * 16 * 4 = 33,554,432.
    const f = prefillFlops(spec('tiny-mixtral'), Array(8).fill(128));
    expect(f.matmul).toBe(254_279_680);
    expect(f.attention).toBe(33_554_432);
    expect(f.total).toBe(287_834_112);
  });
});

describe('crossover: where dense starts to beat grouped', () => {
  // The H200 numbers of shared/gpu/README.md (cuBLAS grouped vs a per-expert loop, E=80 N=3072 K=5120).
  const h200 = [
    { rowsPerExpert: 128, groupedTflops: 316, denseTflops: 299 },
    { rowsPerExpert: 512, groupedTflops: 357, denseTflops: 633 },
    { rowsPerExpert: 2048, groupedTflops: 353, denseTflops: 784 },
  ];
  test('first win and stable win', () => {
    expect(crossover(h200)).toEqual({ firstDenseWin: 512, denseWinsFrom: 512 });
  });
  test('order of the points does not matter', () => {
    expect(crossover([...h200].reverse())).toEqual({ firstDenseWin: 512, denseWinsFrom: 512 });
  });
  test('a noisy early win is the first win, not the stable one', () => {
    const pts = [
      { rowsPerExpert: 64, groupedTflops: 100, denseTflops: 101 },
      { rowsPerExpert: 128, groupedTflops: 200, denseTflops: 150 },
      { rowsPerExpert: 256, groupedTflops: 300, denseTflops: 400 },
    ];
    expect(crossover(pts)).toEqual({ firstDenseWin: 64, denseWinsFrom: 256 });
  });
  test('dense never wins; dense loses at the largest size', () => {
    const pts = [
      { rowsPerExpert: 64, groupedTflops: 100, denseTflops: 50 },
      { rowsPerExpert: 128, groupedTflops: 200, denseTflops: 250 },
      { rowsPerExpert: 256, groupedTflops: 300, denseTflops: 290 },
    ];
    expect(crossover(pts.slice(0, 1))).toEqual({ firstDenseWin: null, denseWinsFrom: null });
    expect(crossover(pts)).toEqual({ firstDenseWin: 128, denseWinsFrom: null });
  });
});

describe('arithmetic helpers', () => {
  test('median', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(() => median([])).toThrow(RangeError);
  });
  test('TFLOP/s and percentages', () => {
    // 8192^3 in 1.4 ms: 2 * 549,755,813,888 / 1.4e-3 s = 785.4 TFLOP/s.
    expect(tflops(gemmFlops(8192, 8192, 8192), 1.4)).toBeCloseTo(785.365, 2);
    expect(percentOf(300, 800)).toBe(37.5);
    expect(() => tflops(1, 0)).toThrow(RangeError);
  });
  test('L2 rotation: several sets below 50 MiB, one above', () => {
    expect(rotationCount(L2_BYTES)).toBe(1);
    expect(rotationCount(200 * 2 ** 20)).toBe(1);
    expect(rotationCount(40 * 2 ** 20)).toBe(3); // ceil(100 / 40)
    expect(rotationCount(1024)).toBe(8); // capped
  });
});

test('tables align columns: text left, numbers right', () => {
  const rows = [
    { name: 'a', v: 1.5 },
    { name: 'longer', v: 123.25 },
  ];
  const text = formatTable(
    [
      { header: 'name', cell: (r: (typeof rows)[number]) => r.name, align: 'left' },
      { header: 'value', cell: (r: (typeof rows)[number]) => r.v.toFixed(2) },
    ],
    rows,
  );
  expect(text).toBe(['name     value', '------  ------', 'a         1.50', 'longer  123.25', ''].join('\n'));
});

test('kernelsUsed counts the chunks of every MoE layer', () => {
  const plan = (kernels: ('grouped' | 'dense')[]) => ({ chunks: kernels.map((kernel) => ({ kernel })) }) as unknown as MoePlan;
  expect(kernelsUsed([plan(['grouped']), plan(['dense', 'grouped'])])).toBe('grouped 2/3, dense 1/3');
  expect(kernelsUsed([])).toBe('-');
});
