// `attention`: causal attention (ops.attention) with grouped-query heads: one long sequence at
// several lengths, packed batches of equal and of mixed lengths, other head dims, and DeepSeek's MLA
// head dims (qk 192, v 128) (issue 13; sizes.ts lists the cases). Each row carries its sequence lengths
// and heads so that scripts/baselines/sdpa_attention.py can time torch SDPA on the same cases. Where the
// device has several attention kernels (CUDA on Hopper: sm80 and sm90, chosen by EPS_ATTENTION_KERNEL,
// native/ops.md), each case is also timed on each of them (byKernel): before and after in one run.
import * as ops from '../native/ops';
import { dtypeBytes, tensorFromInt32 } from '../native/device';
import { withEnv } from '../util/env';
import type { BenchContext } from './context';
import { ATTENTION_FLOPS_FORMULA, causalAttentionFlops } from './flops';
import { InputSets, rotationCount } from './inputSets';
import type { AttentionCase } from './sizes';
import { percentOf, tflops } from './stats';
import type { Suite } from './suite';
import { fixed, sig3 } from './table';
import { timeOnStream } from './timing';

export interface AttentionRow {
  name: string;
  sequences: number;
  tokens: number;
  numHeads: number;
  numKvHeads: number;
  /** Query/key head dim. */
  headDim: number;
  /** Value/output head dim (== headDim except for MLA). */
  headDimV: number;
  /** The packed sequences' lengths, in order (tokens is their sum). */
  seqLens: number[];
  gflop: number;
  ms: number;
  tflops: number;
  pctOfCeiling: number;
  inputSets: number;
  /** Where the device has several attention kernels: each one's time and rate, forced by EPS_ATTENTION_KERNEL. */
  byKernel?: Record<string, { ms: number; tflops: number }>;
}

/** The kernels the attention op can be made to run by EPS_ATTENTION_KERNEL (none to choose from: []). */
export function forcibleKernels(ctx: BenchContext): string[] {
  const kernels = ctx.device.native.attentionKernels ?? [];
  return kernels.length > 1 ? kernels : [];
}

/** Runs `fn` with EPS_ATTENTION_KERNEL=kernel (the addon reads it at each call), then restores it. */
export function withKernel<T>(kernel: string, fn: () => Promise<T>): Promise<T> {
  return withEnv({ EPS_ATTENTION_KERNEL: kernel }, fn);
}

async function measure(ctx: BenchContext, c: AttentionCase, ceilingTflops: number): Promise<AttentionRow> {
  const { device, stream: s, dtype } = ctx;
  const heads = c.heads ?? ctx.sizes.attentionHeads;
  const { numHeads, numKvHeads, headDim } = heads;
  const headDimV = heads.headDimV ?? headDim;
  const cu = [0];
  for (const S of c.seqLens) cu.push(cu[cu.length - 1] + S);
  const T = cu[cu.length - 1];
  const bytesPerSet = T * (numHeads * headDim + numKvHeads * (headDim + headDimV)) * dtypeBytes[dtype];
  const sets = new InputSets(rotationCount(bytesPerSet), () => {
    const q = device.tensor(dtype, [T, numHeads, headDim]);
    const k = device.tensor(dtype, [T, numKvHeads, headDim]);
    const v = device.tensor(dtype, [T, numKvHeads, headDimV]);
    for (const t of [q, k, v]) ops.fillRandom(s, t, ctx.nextSeed(), 1);
    const cuSeqlens = tensorFromInt32(device, s, [cu.length], Int32Array.from(cu));
    return { q, k, v, cuSeqlens };
  });
  const out = device.tensor(dtype, [T, numHeads, headDimV]);
  try {
    const scale = 1 / Math.sqrt(headDim);
    const time = () =>
      timeOnStream(s, ctx.timing, (i) => {
        const { q, k, v, cuSeqlens } = sets.pick(i);
        ops.attention(s, out, q, k, v, cuSeqlens, cu, scale);
      });
    const flops = causalAttentionFlops(c.seqLens, numHeads, headDim, headDimV);
    const t = await time();
    const rate = tflops(flops, t.medianMs);
    let byKernel: AttentionRow['byKernel'];
    for (const kernel of forcibleKernels(ctx)) {
      const kt = await withKernel(kernel, time);
      byKernel = { ...byKernel, [kernel]: { ms: kt.medianMs, tflops: tflops(flops, kt.medianMs) } };
    }
    return {
      name: c.name,
      sequences: c.seqLens.length,
      tokens: T,
      numHeads,
      numKvHeads,
      headDim,
      headDimV,
      seqLens: [...c.seqLens],
      gflop: flops / 1e9,
      ms: t.medianMs,
      tflops: rate,
      pctOfCeiling: percentOf(rate, ceilingTflops),
      inputSets: sets.count,
      ...(byKernel ? { byKernel } : {}),
    };
  } finally {
    sets.dispose();
    out.dispose();
  }
}

export const attentionSuite: Suite<AttentionRow> = {
  name: 'attention',
  title: 'causal attention (GQA), packed sequences',
  columns: [
    { header: 'case', cell: (r) => r.name, align: 'left' },
    { header: 'tokens', cell: (r) => String(r.tokens) },
    { header: 'heads q/kv x dim', cell: (r) => `${r.numHeads}/${r.numKvHeads} x ${r.headDim === r.headDimV ? r.headDim : `${r.headDim}/${r.headDimV}`}` },
    { header: 'GFLOP', cell: (r) => sig3(r.gflop) },
    { header: 'ms', cell: (r) => sig3(r.ms) },
    { header: 'TFLOP/s', cell: (r) => sig3(r.tflops) },
    { header: '% ceiling', cell: (r) => fixed(r.pctOfCeiling, 1) },
    // Forced kernels (CUDA on Hopper): '-' where the device has only one.
    { header: 'sm80 TFLOP/s', cell: (r) => (r.byKernel?.sm80 ? sig3(r.byKernel.sm80.tflops) : '-') },
    { header: 'sm90 TFLOP/s', cell: (r) => (r.byKernel?.sm90 ? sig3(r.byKernel.sm90.tflops) : '-') },
  ],
  async run(ctx: BenchContext) {
    const ceiling = await ctx.ceiling();
    const rows: AttentionRow[] = [];
    for (const [i, c] of ctx.sizes.attention.entries()) {
      ctx.progress(`attention ${c.name} (${i + 1}/${ctx.sizes.attention.length})`);
      rows.push(await measure(ctx, c, ceiling.tflops));
    }
    const kernels = forcibleKernels(ctx);
    const notes = [`${ATTENTION_FLOPS_FORMULA}; scale 1/sqrt(head_dim); ${ctx.dtype} q, k, v, out`];
    if (kernels.length > 0)
      notes.push(`TFLOP/s: the op as it runs by default; ${kernels.join(', ')}: each kernel forced with EPS_ATTENTION_KERNEL`);
    return { rows, notes };
  },
};
