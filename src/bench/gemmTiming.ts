// Times one dense GEMM shape (ops.matmul, out = a @ w^T) on random inputs, rotating input sets
// that would otherwise sit in L2. Shared by the gemm suite and the ceiling every suite compares to.
import * as ops from '../native/ops';
import { dtypeBytes } from '../native/device';
import type { BenchContext, Ceiling } from './context';
import { gemmFlops } from './flops';
import { InputSets, rotationCount } from './inputSets';
import { tflops } from './stats';
import { timeOnStream, type Timing } from './timing';

export interface GemmTiming extends Timing {
  tflops: number;
  inputSets: number;
}

export async function timeGemm(ctx: BenchContext, M: number, N: number, K: number, timing = ctx.timing): Promise<GemmTiming> {
  const { device, stream: s, dtype } = ctx;
  const sets = new InputSets(rotationCount((M * K + N * K) * dtypeBytes[dtype]), () => {
    const a = device.tensor(dtype, [M, K]);
    const w = device.tensor(dtype, [N, K]);
    ops.fillRandom(s, a, ctx.nextSeed(), 1);
    ops.fillRandom(s, w, ctx.nextSeed(), 1 / Math.sqrt(K));
    return { a, w };
  });
  const out = device.tensor(dtype, [M, N]);
  try {
    const t = await timeOnStream(s, timing, (i) => {
      const { a, w } = sets.pick(i);
      ops.matmul(s, out, a, w);
    });
    return { ...t, tflops: tflops(gemmFlops(M, N, K), t.medianMs), inputSets: sets.count };
  } finally {
    sets.dispose();
    out.dispose();
  }
}

/**
 * The device's practical peak: a square GEMM of the run's ceiling side in the run's dtype. It is
 * the first thing a run measures, on a device that may still be clocked down (and a CPU pool not
 * yet spun up), so it gets a longer warm-up and at least 5 timed reps.
 */
export async function measureCeiling(ctx: BenchContext): Promise<Ceiling> {
  const n = ctx.sizes.ceilingSide;
  ctx.progress(`ceiling: ${n}^3 ${ctx.dtype} GEMM`);
  const timing = { warmup: Math.max(ctx.timing.warmup, 5), reps: Math.max(ctx.timing.reps, 5) };
  const t = await timeGemm(ctx, n, n, n, timing);
  return { side: n, dtype: ctx.dtype, ms: t.medianMs, tflops: t.tflops, inputSets: t.inputSets };
}
