// The reference of moe_rank_dispatch, written from ops.md independently of the kernels: list the
// distinct (rank, token) pairs, sort them, and read each row's slots off the pair.

export interface RankDispatchRef {
  /** Rows in order: the (rank, token) pair each row carries. */
  pairs: { rank: number; token: number }[];
  counts: number[];
  /** [T,W] flattened: the row of (t,p) or -1. */
  rowMap: number[];
  /** [rows,k] flattened. */
  localIdx: number[];
  localW: number[];
}

/** `offsets`: W+1 expert offsets, rank p holding experts [offsets[p], offsets[p+1]). */
export function rankDispatchRef(
  topkIdx: readonly number[],
  topkW: ArrayLike<number>,
  T: number,
  k: number,
  offsets: readonly number[],
): RankDispatchRef {
  const W = offsets.length - 1;
  const owner = (e: number): number => {
    for (let p = 0; p < W; p++) if (e >= offsets[p] && e < offsets[p + 1]) return p;
    return -1;
  };
  const keys = new Set<string>();
  const pairs: { rank: number; token: number }[] = [];
  for (let t = 0; t < T; t++)
    for (let j = 0; j < k; j++) {
      const p = owner(topkIdx[t * k + j]);
      const key = `${p}:${t}`;
      if (p >= 0 && !keys.has(key)) {
        keys.add(key);
        pairs.push({ rank: p, token: t });
      }
    }
  pairs.sort((a, b) => a.rank - b.rank || a.token - b.token);
  const counts = Array.from({ length: W }, (_, p) => pairs.filter((x) => x.rank === p).length);
  const rowMap = new Array<number>(T * W).fill(-1);
  const localIdx: number[] = [];
  const localW: number[] = [];
  pairs.forEach(({ rank, token }, row) => {
    rowMap[token * W + rank] = row;
    for (let j = 0; j < k; j++) {
      const e = topkIdx[token * k + j];
      const mine = owner(e) === rank;
      localIdx.push(mine ? e - offsets[rank] : -1);
      localW.push(mine ? topkW[token * k + j] : 0);
    }
  });
  return { pairs, counts, rowMap, localIdx, localW };
}
