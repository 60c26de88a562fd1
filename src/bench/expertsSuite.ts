// `experts`: expert_matmul with the grouped kernel (one launch over all experts) against the dense
// one (a GEMM per expert) and, where the device runs it, grouped_sm90 (the Hopper kernel, issue 12);
// balanced and Zipf-skewed loads from few to many rows per expert, and the crossover: the balanced load
// above which dense beats grouped. This is the measurement behind the EPS scheduler's kernel choice.
import * as ops from '../native/ops';
import type { ExpertKernel } from '../native/ops';
import type { DType } from '../native/addonTypes';
import { dtypeBytes } from '../native/device';
import type { BenchContext } from './context';
import { crossover, type Crossover } from './crossover';
import { gemmFlops } from './flops';
import { InputSets, rotationCount } from './inputSets';
import type { ExpertLoad, ExpertShape } from './sizes';
import { percentOf, tflops } from './stats';
import type { Suite } from './suite';
import { fixed, sig3 } from './table';
import { timeOnStream } from './timing';
import { mulberry32 } from '../util/mulberry32';

export interface ExpertRow {
  shape: string;
  E: number;
  N: number;
  K: number;
  /** Every expert's rows when balanced; the mean when skewed. */
  rowsPerExpert: number;
  load: ExpertLoad;
  /** Rows over all experts (E x rowsPerExpert when balanced; the skewed counts' sum otherwise). */
  rows: number;
  /** Rows of each expert (expertLoad): what scripts/baselines/grouped_mm_bench.py gives torch._grouped_mm. */
  counts: number[];
  groupedMs: number;
  denseMs: number;
  groupedTflops: number;
  denseTflops: number;
  /** denseTflops / groupedTflops: above 1, dense wins. */
  denseOverGrouped: number;
  groupedPctOfCeiling: number;
  densePctOfCeiling: number;
  /** grouped_sm90 where the device runs it as itself for this shape; null elsewhere (it would be grouped again). */
  sm90Ms: number | null;
  sm90Tflops: number | null;
  sm90PctOfCeiling: number | null;
  inputSets: number;
}

/**
 * Rows per expert for a load with mean M: balanced, every expert M; zipf, expert i (in a shuffled order
 * fixed by E) weight 1 / (rank + 1)^1.2 of E x M rows, rounded down to a multiple of 8 (some get 0).
 */
export function expertLoad(load: ExpertLoad, E: number, M: number): number[] {
  if (load === 'balanced') return Array(E).fill(M);
  const weights = Array.from({ length: E }, (_, i) => 1 / (i + 1) ** 1.2);
  const total = weights.reduce((a, b) => a + b, 0);
  const counts = weights.map((w) => 8 * Math.floor(((w / total) * E * M) / 8));
  const next = mulberry32(E * 7919 + 17);
  for (let i = E - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [counts[i], counts[j]] = [counts[j], counts[i]];
  }
  return counts;
}

/** Whether grouped_sm90 runs as itself here for weights [E, N, K] (not as grouped). */
function sm90Runs(kernels: readonly ExpertKernel[], dtype: DType, N: number, K: number): boolean {
  return kernels.includes('grouped_sm90') && ops.groupedSm90Takes(dtype, N, K);
}

async function measure(
  ctx: BenchContext,
  shape: ExpertShape,
  M: number,
  load: ExpertLoad,
  pctOf: (t: number) => number,
): Promise<ExpertRow> {
  const { device, stream: s, dtype } = ctx;
  const { E, N, K } = shape;
  const counts = expertLoad(load, E, M);
  const R = counts.reduce((a, b) => a + b, 0);
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
    const sm90 = sm90Runs(ops.expertKernelsOf(device), dtype, N, K) ? await time('grouped_sm90') : null;
    const flops = gemmFlops(R, N, K);
    const groupedTflops = tflops(flops, grouped.medianMs);
    const denseTflops = tflops(flops, dense.medianMs);
    const sm90Tflops = sm90 ? tflops(flops, sm90.medianMs) : null;
    return {
      shape: shape.name,
      E,
      N,
      K,
      rowsPerExpert: M,
      load,
      rows: R,
      counts,
      groupedMs: grouped.medianMs,
      denseMs: dense.medianMs,
      groupedTflops,
      denseTflops,
      denseOverGrouped: denseTflops / groupedTflops,
      groupedPctOfCeiling: pctOf(groupedTflops),
      densePctOfCeiling: pctOf(denseTflops),
      sm90Ms: sm90 ? sm90.medianMs : null,
      sm90Tflops,
      sm90PctOfCeiling: sm90Tflops === null ? null : pctOf(sm90Tflops),
      inputSets: sets.count,
    };
  } finally {
    sets.dispose();
    out.dispose();
  }
}

export const expertsSuite: Suite<ExpertRow> = {
  name: 'experts',
  title: 'expert_matmul, grouped vs dense vs grouped_sm90 (Hopper), rows per expert balanced and Zipf-skewed',
  columns: [
    { header: 'shape', cell: (r) => r.shape, align: 'left' },
    { header: 'E', cell: (r) => String(r.E) },
    { header: 'N', cell: (r) => String(r.N) },
    { header: 'K', cell: (r) => String(r.K) },
    { header: 'load', cell: (r) => r.load, align: 'left' },
    { header: 'rows/expert', cell: (r) => String(r.rowsPerExpert) },
    { header: 'grouped TF/s', cell: (r) => sig3(r.groupedTflops) },
    { header: 'dense TF/s', cell: (r) => sig3(r.denseTflops) },
    { header: 'sm90 TF/s', cell: (r) => (r.sm90Tflops === null ? '-' : sig3(r.sm90Tflops)) },
    { header: 'dense/grouped', cell: (r) => fixed(r.denseOverGrouped, 2) },
    { header: 'grouped %ceil', cell: (r) => fixed(r.groupedPctOfCeiling, 1) },
    { header: 'dense %ceil', cell: (r) => fixed(r.densePctOfCeiling, 1) },
    { header: 'sm90 %ceil', cell: (r) => (r.sm90PctOfCeiling === null ? '-' : fixed(r.sm90PctOfCeiling, 1)) },
  ],
  async run(ctx: BenchContext) {
    const ceiling = await ctx.ceiling();
    const pctOf = (t: number) => percentOf(t, ceiling.tflops);
    const rows: ExpertRow[] = [];
    const notes: string[] = [];
    const crossovers: ({ shape: string; E: number; N: number; K: number } & Crossover)[] = [];
    const loadsOf = (shape: ExpertShape): ExpertLoad[] => shape.loads ?? ['balanced'];
    const total = ctx.sizes.experts.reduce((n, sh) => n + sh.rowsPerExpert.length * loadsOf(sh).length, 0);
    for (const shape of ctx.sizes.experts) {
      const shapeRows: ExpertRow[] = [];
      for (const load of loadsOf(shape)) {
        for (const M of shape.rowsPerExpert) {
          ctx.progress(`experts ${shape.name} ${load} rows/expert=${M} (${rows.length + shapeRows.length + 1}/${total})`);
          shapeRows.push(await measure(ctx, shape, M, load, pctOf));
        }
      }
      rows.push(...shapeRows);
      const c = crossover(shapeRows.filter((r) => r.load === 'balanced'));
      crossovers.push({ shape: shape.name, E: shape.E, N: shape.N, K: shape.K, ...c });
      const first = c.firstDenseWin === null ? 'dense never beats grouped' : `dense first beats grouped at ${c.firstDenseWin} rows/expert`;
      const stable =
        c.denseWinsFrom === null || c.denseWinsFrom === c.firstDenseWin ? '' : ` (and at every size from ${c.denseWinsFrom} up)`;
      notes.push(`crossover ${shape.name} (E=${shape.E} N=${shape.N} K=${shape.K}): ${first}${stable}`);
    }
    notes.push(`TFLOP/s = 2 * rows * N * K / median time; % of the ${ceiling.side}^3 ceiling (${sig3(ceiling.tflops)} TFLOP/s)`);
    notes.push(
      'zipf: expert i (shuffled) gets 1/(rank+1)^1.2 of E x rows/expert rows, rounded down to a multiple of 8; ' +
        `sm90: grouped_sm90, ${ops.expertKernelsOf(ctx.device).includes('grouped_sm90') ? 'bf16 shapes with N, K multiples of 8' : '"-": this device runs it as grouped (not compute capability 9.0, or no sm_90a build)'}`,
    );
    return { rows, notes, summary: { crossover: crossovers } };
  },
};
