// auto's decisions remembered by the layer's load signature, so that a layer whose load looks like an
// earlier one's weighs one candidate instead of searching them all. The search (planner.ts) is pure
// but not free: 0.2-0.4 ms of host time on an H200 host's CPU for a DeepSeek-V2 layer, with garbage
// collection pauses of a few ms now and then, and it runs between the layer's host sync and the first
// all-to-all, while the GPU waits. At 1K tokens per rank that was a third of the layer.
//
// Every rank computes the signature from the gathered counts alone and runs the same layers in the
// same order, so every rank's cache holds the same entries and every rank makes the same choice.
import type { CostModel } from '../cost/costModel';
import type { DispatchKind } from './plan';
import type { PlanAxis } from '../schedule';

/** What auto decided for a signature; the kernels and chunk bounds are worked out again each time. */
export interface PlanDecision {
  axis: PlanAxis;
  degree: number;
  dispatch: DispatchKind;
}

/** Relative width of a signature's buckets: loads within about 10% of each other share a decision. */
const BUCKET_RATIO = 1.1;
/** Entries per cost model; past it the cache starts over (decisions are cheap to make again). */
const MAX_ENTRIES = 4096;

const caches = new WeakMap<CostModel, Map<string, PlanDecision>>();

/** The bucket of a non-negative load: equal for loads within about 10% of each other. */
export function loadBucket(x: number): number {
  return x <= 0 ? -1 : Math.round(Math.log(x) / Math.log(BUCKET_RATIO));
}

/** A signature from the layer's shape of search and its per-rank loads (each a list of numbers). */
export function loadSignature(fixed: readonly (string | number)[], loads: readonly number[]): string {
  return `${fixed.join(',')}|${loads.map(loadBucket).join(',')}`;
}

export function cachedDecision(model: CostModel, signature: string): PlanDecision | undefined {
  return caches.get(model)?.get(signature);
}

export function rememberDecision(model: CostModel, signature: string, decision: PlanDecision): void {
  let cache = caches.get(model);
  if (!cache) {
    cache = new Map();
    caches.set(model, cache);
  }
  if (cache.size >= MAX_ENTRIES) cache.clear();
  cache.set(signature, { ...decision });
}
