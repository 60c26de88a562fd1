// Routings for the MoE layer benchmark: every token picks k distinct experts, either uniformly
// (balanced) or from a Zipf-like popularity (skewed: a few hot experts, as real routers show).

import { Xoshiro128 } from '../../model/prng';

export type RoutingKind = 'balanced' | 'skewed';

export interface Routing {
  /** [T, k] global expert ids, distinct per token. */
  idx: Int32Array;
  /** [T, k] positive weights summing to 1 per token. */
  weights: Float32Array;
}

/** Uniform doubles in [0, 1) from the project's seeded generator (src/model/prng.ts). */
function rng(seed: number): () => number {
  const g = new Xoshiro128(seed, 'moe-routing');
  return () => g.nextUint32() / 4294967296;
}

/** Expert popularity: uniform, or p(e) ~ 1/(rank(e)+1) with the hot experts at random ids. */
function popularity(kind: RoutingKind, E: number, random: () => number): Float64Array {
  const p = new Float64Array(E).fill(1);
  if (kind === 'skewed') {
    const order = Array.from({ length: E }, (_, i) => i);
    for (let i = E - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    order.forEach((e, r) => (p[e] = 1 / (r + 1)));
  }
  return p;
}

/**
 * Token draws come from `seed` (one per rank); the popularity from `popularitySeed`, the same on every
 * rank, so that all ranks agree on which experts are hot.
 */
export function makeRouting(kind: RoutingKind, T: number, E: number, k: number, seed: number, popularitySeed = 7): Routing {
  if (k > E) throw new RangeError(`top-${k} of ${E} experts`);
  const p = popularity(kind, E, rng(popularitySeed));
  const random = rng(seed);
  const cumulative = new Float64Array(E);
  let total = 0;
  p.forEach((v, e) => (cumulative[e] = total += v));
  const idx = new Int32Array(T * k);
  const weights = new Float32Array(T * k);
  const picked = new Set<number>();
  for (let t = 0; t < T; t++) {
    picked.clear();
    let sum = 0;
    for (let j = 0; j < k; j++) {
      let e: number;
      do {
        const u = random() * total;
        let lo = 0;
        let hi = E - 1;
        while (lo < hi) {
          const mid = (lo + hi) >> 1;
          if (cumulative[mid] < u) lo = mid + 1;
          else hi = mid;
        }
        e = lo;
      } while (picked.has(e));
      picked.add(e);
      idx[t * k + j] = e;
      const w = 0.5 + random();
      weights[t * k + j] = w;
      sum += w;
    }
    for (let j = 0; j < k; j++) weights[t * k + j] /= sum;
  }
  return { idx, weights };
}
