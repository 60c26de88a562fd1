// The MoE layer shapes the EPS benchmark measures (issue 5): hidden, expert intermediate, experts,
// top-k and shared experts of the three families the paper and our users care about.
import type { MoeLayerDims } from '../../moe/cost/costModel';

/** A named layer shape; sharedIntermediate is the total of the shared experts (DeepSeek-V2: 2 x 1536). */
export interface MoeLayerShape extends MoeLayerDims {
  name: string;
}

export const MOE_SHAPES: readonly MoeLayerShape[] = [
  { name: 'deepseek-v2', hidden: 5120, expertIntermediate: 1536, numExperts: 160, topK: 6, sharedIntermediate: 2 * 1536 },
  { name: 'mixtral-8x7b', hidden: 4096, expertIntermediate: 14336, numExperts: 8, topK: 2, sharedIntermediate: 0 },
  { name: 'qwen3-30b-a3b', hidden: 2048, expertIntermediate: 768, numExperts: 128, topK: 8, sharedIntermediate: 0 },
];

/** Shapes small enough for the CPU backend (CI, development): same structure, tiny sizes. */
export const QUICK_MOE_SHAPES: readonly MoeLayerShape[] = [
  { name: 'deepseek-like-tiny', hidden: 64, expertIntermediate: 32, numExperts: 16, topK: 6, sharedIntermediate: 64 },
  { name: 'mixtral-like-tiny', hidden: 64, expertIntermediate: 128, numExperts: 8, topK: 2, sharedIntermediate: 0 },
];

export function findMoeShape(name: string): MoeLayerShape | undefined {
  return [...MOE_SHAPES, ...QUICK_MOE_SHAPES].find((s) => s.name === name);
}
