// `gemm`: dense matmul at the weight shapes of MoE models, and the square-GEMM ceiling in the same
// run, each as TFLOP/s and as a percentage of that ceiling.
import type { BenchContext } from './context';
import { gemmFlops } from './flops';
import { timeGemm } from './gemmTiming';
import { percentOf } from './stats';
import type { Suite } from './suite';
import { fixed, sig3 } from './table';

export interface GemmRow {
  name: string;
  M: number;
  N: number;
  K: number;
  dtype: string;
  gflop: number;
  ms: number;
  tflops: number;
  pctOfCeiling: number;
  /** Input sets rotated through (more than one when one set would fit in L2). */
  inputSets: number;
}

export const gemmSuite: Suite<GemmRow> = {
  name: 'gemm',
  title: 'dense GEMM out[M,N] = a[M,K] @ w[N,K]^T',
  columns: [
    { header: 'shape', cell: (r) => r.name, align: 'left' },
    { header: 'M', cell: (r) => String(r.M) },
    { header: 'N', cell: (r) => String(r.N) },
    { header: 'K', cell: (r) => String(r.K) },
    { header: 'ms', cell: (r) => sig3(r.ms) },
    { header: 'TFLOP/s', cell: (r) => sig3(r.tflops) },
    { header: '% ceiling', cell: (r) => fixed(r.pctOfCeiling, 1) },
  ],
  async run(ctx: BenchContext) {
    const ceiling = await ctx.ceiling();
    const side = ceiling.side;
    const rows: GemmRow[] = [
      {
        name: `ceiling (square ${side}^3)`,
        M: side,
        N: side,
        K: side,
        dtype: ceiling.dtype,
        gflop: gemmFlops(side, side, side) / 1e9,
        ms: ceiling.ms,
        tflops: ceiling.tflops,
        pctOfCeiling: 100,
        inputSets: ceiling.inputSets,
      },
    ];
    for (const [i, shape] of ctx.sizes.gemm.entries()) {
      ctx.progress(`gemm ${shape.name} M=${shape.M} N=${shape.N} K=${shape.K} (${i + 1}/${ctx.sizes.gemm.length})`);
      const t = await timeGemm(ctx, shape.M, shape.N, shape.K);
      rows.push({
        name: shape.name,
        M: shape.M,
        N: shape.N,
        K: shape.K,
        dtype: ctx.dtype,
        gflop: gemmFlops(shape.M, shape.N, shape.K) / 1e9,
        ms: t.medianMs,
        tflops: t.tflops,
        pctOfCeiling: percentOf(t.tflops, ceiling.tflops),
        inputSets: t.inputSets,
      });
    }
    return {
      rows,
      notes: [
        `${ctx.dtype} in and out; TFLOP/s = 2*M*N*K / median time of ${ctx.timing.reps} reps; ceiling = the square ${side}^3 GEMM of this run`,
      ],
    };
  },
};
