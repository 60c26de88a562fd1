// FLOP and parameter counts of the things the suites time. Pure functions of shapes and a
// ModelSpec, so they are checked against published numbers (Mixtral-8x7B: 46.7B parameters, 12.9B
// active per token) without running anything.
import type { ModelSpec } from '../model/config';

/** out[M,N] = a[M,K] @ w[N,K]^T: one multiply and one add per (m, n, k). */
export function gemmFlops(M: number, N: number, K: number): number {
  return 2 * M * N * K;
}

/**
 * Causal attention of packed sequences: QK^T costs 2 * hd and PV 2 * hdv FLOPs per (query, key) pair
 * and query head, and causal masking keeps about half of the S^2 pairs:
 *   2 * (S^2 / 2) * (hd + hdv) * nq  per sequence of S tokens, i.e. 4 * (S^2 / 2) * hd * nq when
 * hdv == hd (the usual convention of FlashAttention's benchmarks; softmax and the exact diagonal,
 * S(S+1)/2 pairs, are left out). hdv defaults to hd; DeepSeek's MLA has hd 192, hdv 128.
 */
export function causalAttentionFlops(seqLens: readonly number[], numHeads: number, headDim: number, headDimV: number = headDim): number {
  return seqLens.reduce((sum, S) => sum + 2 * ((S * S) / 2) * (headDim + headDimV) * numHeads, 0);
}

export const ATTENTION_FLOPS_FORMULA =
  'attention FLOPs = sum over sequences of 2 * S^2/2 * (qk_head_dim + v_head_dim) * query_heads ' +
  '(= 4 * S^2/2 * head_dim * query_heads when they are equal; causal half of QK^T and PV)';

interface LayerParams {
  /** Matmul weights every token of the layer multiplies with (attention, router, top-k experts, shared, dense). */
  activeMatmul: number;
  /** Every parameter of the layer (all experts, biases, norms). */
  total: number;
}

function layerParams(spec: ModelSpec, layer: number): LayerParams {
  const H = spec.hiddenSize;
  const qDim = spec.numHeads * spec.headDim;
  const kvDim = spec.numKvHeads * spec.headDim;
  const attention = H * qDim + 2 * H * kvDim + qDim * H;
  let attentionExtra = 0;
  if (spec.attentionBias) attentionExtra += qDim + 2 * kvDim;
  if (spec.attentionOutputBias) attentionExtra += H;
  if (spec.qkNorm) attentionExtra += 2 * spec.headDim;
  const norms = 2 * H;

  if (spec.layers[layer].mlp === 'dense') {
    const dense = 3 * H * spec.denseIntermediate;
    return { activeMatmul: attention + dense, total: attention + attentionExtra + norms + dense };
  }
  const { numExperts, topK, expertIntermediate, sharedIntermediate, sharedGate } = spec.moe;
  const router = H * numExperts;
  const expert = 3 * H * expertIntermediate; // gate, up and down projections
  const shared = 3 * H * sharedIntermediate + (sharedGate ? H : 0);
  return {
    activeMatmul: attention + router + topK * expert + shared,
    total: attention + attentionExtra + norms + router + numExperts * expert + shared,
  };
}

/** Every parameter of the model, as a checkpoint stores them (lm_head counted once when tied). */
export function totalParams(spec: ModelSpec): number {
  const embed = spec.vocabSize * spec.hiddenSize;
  let total = embed + (spec.tieWordEmbeddings ? 0 : embed) + spec.hiddenSize; // + final norm
  for (let l = 0; l < spec.numLayers; l++) total += layerParams(spec, l).total;
  return total;
}

/**
 * Matmul weights one token passes through in the decoder layers (attention projections, router,
 * its top-k experts, shared expert, dense MLPs). The embedding is a lookup, not a matmul, and the
 * lm_head runs only for the rows whose logits are asked for, so neither is included here.
 */
export function activeMatmulParamsPerToken(spec: ModelSpec): number {
  let total = 0;
  for (let l = 0; l < spec.numLayers; l++) total += layerParams(spec, l).activeMatmul;
  return total;
}

/** Active parameters per token as model cards count them: the above plus embedding, lm_head and norms. */
export function activeParamsPerToken(spec: ModelSpec): number {
  return totalParams(spec) - inactiveExpertParams(spec);
}

function inactiveExpertParams(spec: ModelSpec): number {
  const perExpert = 3 * spec.hiddenSize * spec.moe.expertIntermediate;
  const moeLayers = spec.layers.filter((l) => l.mlp === 'moe').length;
  return moeLayers * (spec.moe.numExperts - spec.moe.topK) * perExpert;
}

export interface PrefillFlops {
  /** 2 * active matmul params * tokens, plus the lm_head rows actually computed (one per sequence). */
  matmul: number;
  /** causalAttentionFlops over every layer. */
  attention: number;
  total: number;
}

/** The model FLOPs of one prefill step of the given sequences (logits of each sequence's last token). */
export function prefillFlops(spec: ModelSpec, seqLens: readonly number[]): PrefillFlops {
  const tokens = seqLens.reduce((a, b) => a + b, 0);
  const lmHead = gemmFlops(seqLens.length, spec.vocabSize, spec.hiddenSize);
  const matmul = 2 * activeMatmulParamsPerToken(spec) * tokens + lmHead;
  const attention = spec.numLayers * causalAttentionFlops(seqLens, spec.numHeads, spec.headDim);
  return { matmul, attention, total: matmul + attention };
}

export const PREFILL_FLOPS_FORMULA =
  'model FLOPs = 2 * active matmul params per token * tokens (attention projections, router, top-k experts, shared/dense MLPs) ' +
  '+ 2 * sequences * hidden * vocab (lm_head on each last token) + layers * attention FLOPs';
