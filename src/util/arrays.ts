// Small helpers over arrays of numbers, used across folders (a leaf: imports nothing).

export function sum(xs: ArrayLike<number>): number {
  let total = 0;
  for (let i = 0; i < xs.length; i++) total += xs[i];
  return total;
}

/** The starts of consecutive ranges of these lengths. */
export function prefixStarts(counts: readonly number[]): number[] {
  let at = 0;
  return counts.map((n) => {
    const start = at;
    at += n;
    return start;
  });
}
