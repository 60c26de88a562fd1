// Mulberry32: a tiny seeded generator of floats in [0, 1), for loads that must be the same on every run
// (benchmark skews, test counts). Not the weights' generator (model/prng.ts matches Python's bit for bit).

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
