// Small arithmetic shared by the suites: medians of timings and FLOP rates.

/** The median of the samples (mean of the two middle ones for an even count). */
export function median(samples: readonly number[]): number {
  if (samples.length === 0) throw new RangeError('median of no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** TFLOP/s of `flops` floating-point operations done in `ms` milliseconds. */
export function tflops(flops: number, ms: number): number {
  if (!(ms > 0)) throw new RangeError(`a rate needs a positive time, got ${ms} ms`);
  return flops / ms / 1e9;
}

/** `part` as a percentage of `whole`. */
export function percentOf(part: number, whole: number): number {
  return (100 * part) / whole;
}
