// Which experts each rank holds, and in what order the router numbers them.
//
// Ranks: rank p holds the checkpoint's experts [first_p, first_p + count_p), contiguous, as even as
// possible (the first E % W ranks hold one more), stacked in that (local) order.
//
// Groups (the EPS scheduler's expert axis): each rank's local experts are cut into G groups of
// consecutive local experts, as even as possible (a rank with fewer than G experts has empty groups).
// The router numbers experts by VIRTUAL id: all ranks' group-0 experts (rank-major, local order),
// then all ranks' group-1 experts, and so on. The expert-sorted permuted buffer is then ordered by
// group, and within a group by destination rank: one group's rows are one contiguous all-to-all
// (rows per peer contiguous, in peer order), which is what a chunk of the expert axis sends.
// With G = 1 the virtual order is the checkpoint's order.
export interface ExpertRange {
  first: number;
  count: number;
}

export class ExpertLayoutError extends Error {
  readonly code = 'EPS_EXPERT_LAYOUT';
  constructor(message: string) {
    super(message);
    this.name = 'ExpertLayoutError';
  }
}

/** Part `index` of `n` items cut into `parts` contiguous parts, as even as possible (the first n % parts get one more). */
function evenPart(n: number, parts: number, index: number): ExpertRange {
  const base = Math.floor(n / parts);
  const extra = n % parts;
  return { first: index * base + Math.min(index, extra), count: base + (index < extra ? 1 : 0) };
}

export function expertRange(numExperts: number, world: number, rank: number): ExpertRange {
  if (!Number.isInteger(world) || world < 1) throw new RangeError(`world must be a positive integer, got ${world}`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= world) throw new RangeError(`rank ${rank} is outside a world of ${world}`);
  return evenPart(numExperts, world, rank);
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

/** The ranks' experts cut into groups, and the virtual order built on them (see the top of this file). */
export class ExpertLayout {
  readonly numExperts: number;
  readonly world: number;
  readonly groups: number;
  private readonly local: ExpertRange[]; // [rank * G + group]: local expert indices
  private readonly virtualFirst: Int32Array; // [group * W + rank], plus numExperts at the end
  private readonly globalIds: Int32Array; // by virtual id
  private readonly virtualIds: Int32Array; // by global id
  private readonly rankIds: Int32Array; // by virtual id
  private readonly groupIds: Int32Array; // by virtual id

  /** `ranges`: every rank's experts in rank order, contiguous from expert 0 (expertRanges gives them). */
  constructor(
    readonly ranges: readonly ExpertRange[],
    groups = 1,
  ) {
    const world = ranges.length;
    if (world < 1) throw new ExpertLayoutError('an expert layout needs at least one rank');
    let next = 0;
    ranges.forEach(({ first, count }, r) => {
      if (first !== next || !Number.isInteger(count) || count < 0) {
        throw new ExpertLayoutError(`ranges[${r}] = {first: ${first}, count: ${count}} does not continue from expert ${next}`);
      }
      next += count;
    });
    const most = Math.max(...ranges.map((r) => r.count));
    if (!Number.isInteger(groups) || groups < 1 || groups > Math.max(1, most)) {
      throw new ExpertLayoutError(
        `expert groups must be an integer from 1 to ${Math.max(1, most)} (the most experts a rank holds: ${next} experts on ${world} ranks), got ${groups}`,
      );
    }
    this.numExperts = next;
    this.world = world;
    this.groups = groups;
    this.local = [];
    for (const { count } of ranges) for (let g = 0; g < groups; g++) this.local.push(evenPart(count, groups, g));
    this.virtualFirst = new Int32Array(groups * world + 1);
    this.globalIds = new Int32Array(next);
    this.virtualIds = new Int32Array(next);
    this.rankIds = new Int32Array(next);
    this.groupIds = new Int32Array(next);
    let v = 0;
    for (let g = 0; g < groups; g++) {
      for (let p = 0; p < world; p++) {
        this.virtualFirst[g * world + p] = v;
        const part = this.localGroup(p, g);
        for (let j = 0; j < part.count; j++, v++) {
          const global = ranges[p].first + part.first + j;
          this.globalIds[v] = global;
          this.virtualIds[global] = v;
          this.rankIds[v] = p;
          this.groupIds[v] = g;
        }
      }
    }
    this.virtualFirst[groups * world] = v;
  }

  /** Rank p's experts in group g, as indices into its stacked (local) weights. */
  localGroup(rank: number, group: number): ExpertRange {
    return this.local[rank * this.groups + group];
  }

  /** Rank p's experts in group g, as virtual ids (a contiguous range). */
  virtualRange(rank: number, group: number): ExpertRange {
    const first = this.virtualFirst[group * this.world + rank];
    return { first, count: this.virtualFirst[group * this.world + rank + 1] - first };
  }

  /** The virtual ids of group g, every rank's (rank-major): a contiguous range. */
  groupRange(group: number): ExpertRange {
    const first = this.virtualFirst[group * this.world];
    return { first, count: this.virtualFirst[(group + 1) * this.world] - first };
  }

  /** The checkpoint's expert id of virtual id v. */
  globalOf(v: number): number {
    return this.globalIds[v];
  }

  virtualOf(global: number): number {
    return this.virtualIds[global];
  }

  rankOf(v: number): number {
    return this.rankIds[v];
  }

  groupOf(v: number): number {
    return this.groupIds[v];
  }

  /** Whether the virtual order is the checkpoint's (G = 1): nothing needs reordering. */
  get identity(): boolean {
    return this.groups === 1;
  }

  /** Rows each rank receives in groups [groupStart, groupEnd), from counts per virtual expert. */
  rowsPerRank(counts: ArrayLike<number>, groupStart = 0, groupEnd = this.groups): number[] {
    const rows = new Array<number>(this.world).fill(0);
    for (let g = groupStart; g < groupEnd; g++) {
      for (let p = 0; p < this.world; p++) {
        const { first, count } = this.virtualRange(p, g);
        for (let v = first; v < first + count; v++) rows[p] += counts[v];
      }
    }
    return rows;
  }
}

/** The layout of E experts on W ranks in G groups (placement as expertRanges). */
export function expertLayout(numExperts: number, world: number, groups = 1): ExpertLayout {
  return new ExpertLayout(expertRanges(numExperts, world), groups);
}
