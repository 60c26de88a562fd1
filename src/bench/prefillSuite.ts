// `prefill`: the whole forward of one rank (all layers, the MoE layers with their host sync, the
// last-token logits) of a model made from a preset's config with random weights on the device.
// Reports tokens/s and model FLOP utilisation against the GEMM ceiling measured in the same run.
import { LocalCommunicator } from '../comm/communicator';
import { loadRankEngine } from '../engine/rankEngine';
import { dtypeBytes } from '../native/device';
import { parseModelConfig, type ModelSpec } from '../model/config';
import { presetConfig } from '../model/makeModel';
import { Xoshiro128 } from '../model/prng';
import type { MoePlan } from '../moe/plan/plan';
import { formatMoeSchedule } from '../moe/schedule';
import type { BenchContext } from './context';
import { PREFILL_FLOPS_FORMULA, prefillFlops, totalParams } from './flops';
import { percentOf, tflops } from './stats';
import type { Suite } from './suite';
import { fixed, sig3 } from './table';
import { timeWallClock } from './timing';

export interface PrefillRow {
  model: string;
  batch: number;
  seqLen: number;
  tokens: number;
  /** The schedule the engine ran (--moe-schedule after the engine's defaults), e.g. "fixed:1:grouped". */
  schedule: string;
  /** The expert kernels of the MoE layers' chunks in a timed step, e.g. "grouped 32/32". */
  kernels: string;
  ms: number;
  tokensPerSec: number;
  /** Model FLOPs of one step (PREFILL_FLOPS_FORMULA), of which attention. */
  modelTflop: number;
  attentionTflop: number;
  tflops: number;
  /** Model FLOP utilisation: tflops / the ceiling of this run, in percent. */
  mfuPct: number;
  ceilingTflops: number;
  reps: number;
}

const RANDOM_WEIGHTS_SEED = 1234;
const GiB = 1024 ** 3;

function modelSpec(preset: string, overrides: readonly string[] = []): ModelSpec {
  const where = overrides.length ? `preset ${preset} with --override ${overrides.join(' ')}` : `preset ${preset}`;
  return parseModelConfig(presetConfig(preset, undefined, overrides), where);
}

/** Bytes the forward needs besides weights, generously: activations of the largest batch + 2 GiB. */
function activationBytes(spec: ModelSpec, tokens: number, eltBytes: number): number {
  const H = spec.hiddenSize;
  const I = Math.max(spec.moe.expertIntermediate, spec.denseIntermediate, spec.moe.sharedIntermediate);
  const attention = (spec.numHeads + 2 * spec.numKvHeads) * spec.headDim * 2;
  const moe = spec.moe.topK * (2 * H + 3 * I);
  return tokens * eltBytes * (6 * H + attention + moe) + 2 * GiB;
}

function formatCount(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : `${(n / 1e6).toFixed(2)}M`;
}

/** Random token ids: routing under random weights then spreads tokens over experts about evenly. */
function randomSequences(batch: number, seqLen: number, vocab: number, seed: number): number[][] {
  const rng = new Xoshiro128(seed, 'bench-prefill-tokens');
  return Array.from({ length: batch }, () => Array.from({ length: seqLen }, () => rng.nextUint32() % vocab));
}

/** How often each expert kernel ran over the chunks of all MoE layers: "grouped 32/32", "dense 20/32, grouped 12/32". */
export function kernelsUsed(plans: readonly MoePlan[]): string {
  const counts = new Map<string, number>();
  let total = 0;
  for (const p of plans) {
    for (const c of p.chunks) {
      counts.set(c.kernel, (counts.get(c.kernel) ?? 0) + 1);
      total++;
    }
  }
  if (total === 0) return '-';
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([k, n]) => `${k} ${n}/${total}`)
    .join(', ');
}

export const prefillSuite: Suite<PrefillRow> = {
  name: 'prefill',
  title: 'whole-model prefill on one device (random weights)',
  columns: [
    { header: 'model', cell: (r) => r.model, align: 'left' },
    { header: 'batch', cell: (r) => `${r.batch} x ${r.seqLen}` },
    { header: 'tokens', cell: (r) => String(r.tokens) },
    { header: 'schedule', cell: (r) => r.schedule, align: 'left' },
    { header: 'kernels', cell: (r) => r.kernels, align: 'left' },
    { header: 'ms/step', cell: (r) => sig3(r.ms) },
    { header: 'tokens/s', cell: (r) => r.tokensPerSec.toFixed(0) },
    { header: 'TFLOP/step', cell: (r) => sig3(r.modelTflop) },
    { header: 'TFLOP/s', cell: (r) => sig3(r.tflops) },
    { header: 'MFU %', cell: (r) => fixed(r.mfuPct, 1) },
  ],
  doesNotFit(ctx: BenchContext) {
    // The CPU backend reports no free-memory figure; its quick model is a few MB.
    if (ctx.device.backend === 'cpu') return undefined;
    const spec = modelSpec(ctx.sizes.prefillPreset, ctx.sizes.prefillOverrides);
    const elt = dtypeBytes[ctx.dtype];
    const maxTokens = Math.max(...ctx.sizes.prefill.map((c) => c.batch * c.seqLen));
    const need = totalParams(spec) * elt + activationBytes(spec, maxTokens, elt);
    const free = ctx.device.freeBytes();
    if (need <= free) return undefined;
    return `${ctx.sizes.prefillPreset} needs about ${(need / GiB).toFixed(1)} GiB on the device (weights + activations), ${(free / GiB).toFixed(1)} GiB are free`;
  },
  async run(ctx: BenchContext) {
    const ceiling = await ctx.ceiling();
    const preset = ctx.sizes.prefillPreset;
    const spec = modelSpec(preset, ctx.sizes.prefillOverrides);
    ctx.progress(`prefill: making ${preset} (${formatCount(totalParams(spec))} parameters) with random weights on ${ctx.device.name}`);
    let lastTenth = -1;
    const engine = await loadRankEngine({
      spec,
      randomSeed: RANDOM_WEIGHTS_SEED,
      backend: ctx.device.backend,
      deviceIndex: ctx.device.index,
      comm: new LocalCommunicator(),
      schedule: ctx.schedule,
      weightDtype: ctx.dtype,
      actDtype: ctx.dtype,
      onLoadProgress: (done, total) => {
        const tenth = Math.floor((10 * done) / total);
        if (tenth > lastTenth) {
          lastTenth = tenth;
          ctx.progress(`prefill: weights ${done}/${total} tensors`);
        }
      },
    });
    const rows: PrefillRow[] = [];
    try {
      const reps = Math.min(ctx.timing.reps, ctx.sizes.maxPrefillReps);
      for (const [i, c] of ctx.sizes.prefill.entries()) {
        ctx.progress(`prefill ${c.batch} x ${c.seqLen} (${i + 1}/${ctx.sizes.prefill.length}): 1 warm-up + ${reps} steps`);
        const sequences = randomSequences(c.batch, c.seqLen, spec.vocabSize, ctx.nextSeed());
        let plans: MoePlan[] = [];
        const t = await timeWallClock({ warmup: 1, reps }, async () => {
          plans = (await engine.runner.forward(sequences)).plans;
        });
        const flops = prefillFlops(spec, Array(c.batch).fill(c.seqLen));
        const rate = tflops(flops.total, t.medianMs);
        const tokens = c.batch * c.seqLen;
        rows.push({
          model: preset,
          batch: c.batch,
          seqLen: c.seqLen,
          tokens,
          schedule: formatMoeSchedule(engine.runner.options.schedule),
          kernels: kernelsUsed(plans),
          ms: t.medianMs,
          tokensPerSec: tokens / (t.medianMs / 1000),
          modelTflop: flops.total / 1e12,
          attentionTflop: flops.attention / 1e12,
          tflops: rate,
          mfuPct: percentOf(rate, ceiling.tflops),
          ceilingTflops: ceiling.tflops,
          reps,
        });
      }
    } finally {
      await engine.dispose();
    }
    return {
      rows,
      notes: [
        `${PREFILL_FLOPS_FORMULA}`,
        `time = wall clock of a whole forward (host syncs included), median of the timed steps after one warm-up; MFU = model TFLOP/s / the ${ceiling.side}^3 ${ceiling.dtype} GEMM ceiling of this run (${sig3(ceiling.tflops)} TFLOP/s), not the datasheet peak`,
        `token ids uniform at random, weights random (seed ${RANDOM_WEIGHTS_SEED}): expert loads are near balanced, a best case for the MoE layers`,
      ],
      summary: { ceilingTflops: ceiling.tflops },
    };
  },
};
