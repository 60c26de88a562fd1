// `experts`: expert_matmul with the grouped kernel (one launch over all experts) against the dense
// one (a GEMM per expert), balanced loads from few to many rows per expert, and the crossover: the
// load above which dense wins. This is the measurement behind the EPS scheduler's kernel choice.
import * as ops from '../native/ops';
import type { ExpertKernel } from '../native/ops';
import { dtypeBytes } from '../native/device';
import type { BenchContext } from './context';
import { crossover, type Crossover } from './crossover';
import { gemmFlops } from './flops';
import { InputSets, rotationCount } from './inputSets';
import type { ExpertShape } from './sizes';
import { percentOf, tflops } from './stats';
import type { Suite } from './suite';
import { fixed, sig3 } from './table';
import { timeOnStream } from './timing';

export interface ExpertRow {
  shape: string;
  E: number;
  N: number;
  K: number;
  rowsPerExpert: number;
  groupedMs: number;
  denseMs: number;
  groupedTflops: number;
  denseTflops: number;
  /** denseTflops / groupedTflops: above 1, dense wins. */
  denseOverGrouped: number;
  groupedPctOfCeiling: number;
  densePctOfCeiling: number;
  inputSets: number;
}

async function measure(ctx: BenchContext, shape: ExpertShape, M: number, pctOf: (t: number) => number): Promise<ExpertRow> {
  const { device, stream: s, dtype } = ctx;
  const { E, N, K } = shape;
  const R = E * M;
  const counts: number[] = Array(E).fill(M);
  const sets = new InputSets(rotationCount((R * K + E * N * K) * dtypeBytes[dtype]), () => {
    const a = device.tensor(dtype, [R, K]);
    const w = device.tensor(dtype, [E, N, K]);
    ops.fillRandom(s, a, ctx.nextSeed(), 1);
    ops.fillRandom(s, w, ctx.nextSeed(), 1 / Math.sqrt(K));
    return { a, w };
  });
  const out = device.tensor(dtype, [R, N]);
  try {
    const time = (kernel: ExpertKernel) =>
      timeOnStream(s, ctx.timing, (i) => {
        const { a, w } = sets.pick(i);
        ops.expertMatmul(s, out, a, w, counts, kernel);
      });
    const grouped = await time('grouped');
    const dense = await time('dense');
    const flops = gemmFlops(R, N, K);
    const groupedTflops = tflops(flops, grouped.medianMs);
    const denseTflops = tflops(flops, dense.medianMs);
    return {
      shape: shape.name,
      E,
      N,
      K,
      rowsPerExpert: M,
      groupedMs: grouped.medianMs,
      denseMs: dense.medianMs,
      groupedTflops,
      denseTflops,
      denseOverGrouped: denseTflops / groupedTflops,
      groupedPctOfCeiling: pctOf(groupedTflops),
      densePctOfCeiling: pctOf(denseTflops),
      inputSets: sets.count,
    };
  } finally {
    sets.dispose();
    out.dispose();
  }
}

export const expertsSuite: Suite<ExpertRow> = {
  name: 'experts',
  title: 'expert_matmul, grouped vs dense, balanced rows per expert',
  columns: [
    { header: 'shape', cell: (r) => r.shape, align: 'left' },
    { header: 'E', cell: (r) => String(r.E) },
    { header: 'N', cell: (r) => String(r.N) },
    { header: 'K', cell: (r) => String(r.K) },
    { header: 'rows/expert', cell: (r) => String(r.rowsPerExpert) },
    { header: 'grouped TF/s', cell: (r) => sig3(r.groupedTflops) },
    { header: 'dense TF/s', cell: (r) => sig3(r.denseTflops) },
    { header: 'dense/grouped', cell: (r) => fixed(r.denseOverGrouped, 2) },
    { header: 'grouped %ceil', cell: (r) => fixed(r.groupedPctOfCeiling, 1) },
    { header: 'dense %ceil', cell: (r) => fixed(r.densePctOfCeiling, 1) },
  ],
  async run(ctx: BenchContext) {
    const ceiling = await ctx.ceiling();
    const pctOf = (t: number) => percentOf(t, ceiling.tflops);
    const rows: ExpertRow[] = [];
    const notes: string[] = [];
    const crossovers: ({ shape: string; E: number; N: number; K: number } & Crossover)[] = [];
    const total = ctx.sizes.experts.reduce((n, sh) => n + sh.rowsPerExpert.length, 0);
    for (const shape of ctx.sizes.experts) {
      const shapeRows: ExpertRow[] = [];
      for (const M of shape.rowsPerExpert) {
        ctx.progress(`experts ${shape.name} rows/expert=${M} (${rows.length + shapeRows.length + 1}/${total})`);
        shapeRows.push(await measure(ctx, shape, M, pctOf));
      }
      rows.push(...shapeRows);
      const c = crossover(shapeRows);
      crossovers.push({ shape: shape.name, E: shape.E, N: shape.N, K: shape.K, ...c });
      const first = c.firstDenseWin === null ? 'dense never beats grouped' : `dense first beats grouped at ${c.firstDenseWin} rows/expert`;
      const stable =
        c.denseWinsFrom === null || c.denseWinsFrom === c.firstDenseWin ? '' : ` (and at every size from ${c.denseWinsFrom} up)`;
      notes.push(`crossover ${shape.name} (E=${shape.E} N=${shape.N} K=${shape.K}): ${first}${stable}`);
    }
    notes.push(`TFLOP/s = 2 * E * rows/expert * N * K / median time; % of the ${ceiling.side}^3 ceiling (${sig3(ceiling.tflops)} TFLOP/s)`);
    return { rows, notes, summary: { crossover: crossovers } };
  },
};
