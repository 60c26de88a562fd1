// The shapes each suite measures. Full sizes are those of real MoE models on a GPU; quick sizes
// (--quick, and always on the CPU backend) divide the dimensions so every suite finishes in
// seconds on two CPU cores, keeping the same structure (same shapes, same ratios, same cases).

export interface GemmShape {
  /** Which weight of which model this is. */
  name: string;
  M: number;
  N: number;
  K: number;
}

/**
 * How rows spread over the experts: balanced (every expert the same count) or Zipf-skewed (expert i,
 * in a fixed shuffled order, gets weight 1 / (rank + 1)^1.2 of E x the mean, rounded down to a multiple
 * of 8 as torch._grouped_mm's groups must be: some experts get none). See expertsSuite.ts expertLoad.
 */
export type ExpertLoad = 'balanced' | 'zipf';

export interface ExpertShape {
  name: string;
  E: number;
  N: number;
  K: number;
  /** Rows per expert: every expert's count when balanced, the mean when skewed. */
  rowsPerExpert: number[];
  /** The loads measured at each size (default: balanced only). */
  loads?: ExpertLoad[];
}

export interface AttentionHeads {
  numHeads: number;
  numKvHeads: number;
  /** Query/key head dim. */
  headDim: number;
  /** Value (and output) head dim when it differs from headDim (DeepSeek's MLA: qk 192, v 128). */
  headDimV?: number;
}

export interface AttentionCase {
  name: string;
  seqLens: number[];
  /** Heads of this case; BenchSizes.attentionHeads when absent. */
  heads?: AttentionHeads;
}

export interface PrefillCase {
  batch: number;
  seqLen: number;
}

export interface BenchSizes {
  gemm: GemmShape[];
  /** Side of the square GEMM that measures the device's ceiling. */
  ceilingSide: number;
  experts: ExpertShape[];
  /** The heads of the attention cases that name none. */
  attentionHeads: AttentionHeads;
  attention: AttentionCase[];
  /** A preset of src/model/presets.ts; its config gives the model shape (--preset). */
  prefillPreset: string;
  /** `KEY=VALUE` changes to that config (--override), e.g. num_hidden_layers=8. */
  prefillOverrides?: readonly string[];
  prefill: PrefillCase[];
  /** Timed repetitions when --reps is not given, and untimed ones before them. */
  defaultReps: number;
  warmup: number;
  /** Prefill steps take seconds at full size: at most this many timed steps. */
  maxPrefillReps: number;
}

const powersOfTwo = (from: number, to: number): number[] => {
  const out: number[] = [];
  for (let m = from; m <= to; m *= 2) out.push(m);
  return out;
};

/** Expert weights as the fused layout stores them: gate_up [2I, H] and down [H, I]. */
function modelGemms(M: number, div: number): GemmShape[] {
  const shapes: [string, number, number][] = [
    ['mixtral-8x7b w1+w3 (gate_up)', 28672, 4096],
    ['mixtral-8x7b w2 (down)', 4096, 14336],
    ['mixtral-8x7b q+k+v', 6144, 4096],
    ['deepseek-v2 expert gate_up', 3072, 5120],
    ['deepseek-v2 expert down', 5120, 1536],
    ['qwen3-30b-a3b expert gate_up', 1536, 2048],
    ['qwen3-30b-a3b expert down', 2048, 768],
  ];
  return shapes.map(([name, N, K]) => ({ name, M, N: N / div, K: K / div }));
}

/** DeepSeek-V2/V3 MLA as attention sees it: q/k head dim 192 (128 nope + 64 rope), v 128, nq == nkv. */
const mla = (heads: number): AttentionHeads => ({ numHeads: heads, numKvHeads: heads, headDim: 192, headDimV: 128 });

/** A packed prefill batch of mixed lengths, 37 to 8K, ragged at the kernels' tiles (28,437 tokens). */
const MIXED_LENGTHS = [512, 1024, 2048, 4096, 700, 37, 8192, 1500, 3000, 129, 5000, 2199];

export const FULL_SIZES: BenchSizes = {
  gemm: modelGemms(4096, 1),
  ceilingSide: 8192,
  // The expert GEMMs of real MoE models (issue 12), the local experts of one rank: Qwen3-30B-A3B's 128 on
  // one GPU; DeepSeek-V2's 160 over 2 ranks; DeepSeek-V3's 256 over 8; Mixtral's 8 over 2.
  experts: [
    { name: 'qwen3-30b-a3b gate_up E128', E: 128, N: 1536, K: 2048, rowsPerExpert: powersOfTwo(32, 4096), loads: ['balanced', 'zipf'] },
    { name: 'qwen3-30b-a3b down E128', E: 128, N: 2048, K: 768, rowsPerExpert: powersOfTwo(32, 4096), loads: ['balanced', 'zipf'] },
    { name: 'deepseek-v2-like E80', E: 80, N: 3072, K: 5120, rowsPerExpert: powersOfTwo(32, 4096), loads: ['balanced', 'zipf'] },
    { name: 'deepseek-v2 down E80', E: 80, N: 5120, K: 1536, rowsPerExpert: powersOfTwo(32, 4096), loads: ['balanced', 'zipf'] },
    { name: 'deepseek-v3 gate_up E32', E: 32, N: 4096, K: 7168, rowsPerExpert: powersOfTwo(32, 4096), loads: ['balanced', 'zipf'] },
    { name: 'deepseek-v3 down E32', E: 32, N: 7168, K: 2048, rowsPerExpert: powersOfTwo(32, 4096), loads: ['balanced', 'zipf'] },
    { name: 'mixtral-like E4', E: 4, N: 28672, K: 4096, rowsPerExpert: powersOfTwo(64, 4096) },
  ],
  attentionHeads: { numHeads: 32, numKvHeads: 8, headDim: 128 },
  // Issue 13: GQA 32/8 x 128 (Mixtral, Qwen3-30B-A3B) from 1K to 32K, packed batches (equal and mixed
  // lengths, the engine's layout), head dim 64 (64/8: gpt-oss-like) and 256 (16/8: Gemma-2-like), the
  // same FLOPs per token pair as 32 x 128; DeepSeek's MLA (qk 192, v 128, nq == nkv: V2-Lite's 16
  // heads, V2/V3's 128). scripts/baselines/sdpa_attention.py times torch SDPA on these rows.
  attention: [
    { name: '1 x 1K', seqLens: [1024] },
    { name: '1 x 4K', seqLens: [4096] },
    { name: '1 x 8K', seqLens: [8192] },
    { name: '1 x 16K', seqLens: [16384] },
    { name: '1 x 32K', seqLens: [32768] },
    { name: '8 x 1K packed', seqLens: Array(8).fill(1024) },
    { name: '12 mixed packed (37..8K)', seqLens: MIXED_LENGTHS },
    { name: '1 x 4K hd64 64/8', seqLens: [4096], heads: { numHeads: 64, numKvHeads: 8, headDim: 64 } },
    { name: '1 x 8K hd64 64/8', seqLens: [8192], heads: { numHeads: 64, numKvHeads: 8, headDim: 64 } },
    { name: '1 x 4K hd256 16/8', seqLens: [4096], heads: { numHeads: 16, numKvHeads: 8, headDim: 256 } },
    { name: '1 x 8K hd256 16/8', seqLens: [8192], heads: { numHeads: 16, numKvHeads: 8, headDim: 256 } },
    { name: '1 x 4K mla 192/128 16h', seqLens: [4096], heads: mla(16) },
    { name: '1 x 8K mla 192/128 16h', seqLens: [8192], heads: mla(16) },
    { name: '1 x 4K mla 192/128 128h', seqLens: [4096], heads: mla(128) },
    { name: '1 x 8K mla 192/128 128h', seqLens: [8192], heads: mla(128) },
    { name: '1 x 16K mla 192/128 128h', seqLens: [16384], heads: mla(128) },
    { name: '4 mixed packed mla 192/128 128h', seqLens: [700, 2048, 4096, 1500], heads: mla(128) },
  ],
  prefillPreset: 'mixtral-8x7b',
  prefill: [
    { batch: 8, seqLen: 2048 },
    { batch: 32, seqLen: 512 },
  ],
  defaultReps: 20,
  warmup: 2,
  maxPrefillReps: 5,
};

// Dimensions / 16 (heads / 4), experts / 10, rows and sequence lengths / 16: the same cases, at
// sizes two CPU cores run in a few seconds per suite.
export const QUICK_SIZES: BenchSizes = {
  gemm: modelGemms(256, 16),
  ceilingSide: 512,
  experts: [
    { name: 'deepseek-v2-like E80 /10,/16', E: 8, N: 192, K: 320, rowsPerExpert: powersOfTwo(4, 64) },
    { name: 'mixtral-like E4 /16', E: 4, N: 1792, K: 256, rowsPerExpert: powersOfTwo(4, 64) },
  ],
  attentionHeads: { numHeads: 8, numKvHeads: 2, headDim: 64 },
  attention: [
    { name: '1 x 128', seqLens: [128] },
    { name: '1 x 256', seqLens: [256] },
    { name: '1 x 512', seqLens: [512] },
    { name: '4 x 128 packed', seqLens: Array(4).fill(128) },
    { name: '5 mixed packed (3..256)', seqLens: [32, 3, 256, 45, 130] },
    { name: '1 x 256 hd16 16/2', seqLens: [256], heads: { numHeads: 16, numKvHeads: 2, headDim: 16 } },
    { name: '1 x 256 hd128 4/2', seqLens: [256], heads: { numHeads: 4, numKvHeads: 2, headDim: 128 } },
    // MLA keeps its real head dims (the differing-dims path is the point), with 2 heads.
    { name: '1 x 128 mla 192/128 2h', seqLens: [128], heads: mla(2) },
    { name: '3 mixed packed mla 192/128 2h', seqLens: [40, 128, 7], heads: mla(2) },
  ],
  prefillPreset: 'tiny-mixtral',
  prefill: [
    { batch: 8, seqLen: 128 },
    { batch: 32, seqLen: 32 },
  ],
  defaultReps: 5,
  warmup: 1,
  maxPrefillReps: 3,
};

export function benchSizes(quick: boolean): BenchSizes {
  return quick ? QUICK_SIZES : FULL_SIZES;
}
