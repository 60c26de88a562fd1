// Which experts each rank holds: contiguous, as even as possible (the first E % W ranks hold one more).

export interface ExpertRange {
  first: number;
  count: number;
}

export function expertRange(numExperts: number, world: number, rank: number): ExpertRange {
  if (!Number.isInteger(world) || world < 1) throw new RangeError(`world must be a positive integer, got ${world}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= world) throw new RangeError(`rank ${rank} is outside a world of ${world}`);
  const base = Math.floor(numExperts / world);
  const extra = numExperts % world;
  const count = base + (rank < extra ? 1 : 0);
  const first = rank * base + Math.min(rank, extra);
  return { first, count };
}

/** All ranks' ranges, in rank order. */
export function expertRanges(numExperts: number, world: number): ExpertRange[] {
  return Array.from({ length: world }, (_, r) => expertRange(numExperts, world, r));
}

/** Sums per-expert counts into per-rank counts (experts of a rank are contiguous). */
export function rowsPerRank(counts: ArrayLike<number>, ranges: readonly ExpertRange[]): number[] {
  return ranges.map(({ first, count }) => {
    let s = 0;
    for (let e = first; e < first + count; e++) s += counts[e];
    return s;
  });
}
