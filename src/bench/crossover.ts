// Where dense per-expert GEMMs start to beat one grouped GEMM: the number the EPS scheduler's
// kernel choice turns on. Pure, so it is tested on made-up curves.

export interface KernelPoint {
  rowsPerExpert: number;
  groupedTflops: number;
  denseTflops: number;
}

export interface Crossover {
  /** The first (smallest) rows-per-expert where dense beats grouped; null when it never does. */
  firstDenseWin: number | null;
  /** The smallest rows-per-expert from which dense beats grouped at every larger size measured; null when dense loses at the largest. */
  denseWinsFrom: number | null;
}

export function crossover(points: readonly KernelPoint[]): Crossover {
  const sorted = [...points].sort((a, b) => a.rowsPerExpert - b.rowsPerExpert);
  const wins = sorted.map((p) => p.denseTflops > p.groupedTflops);
  const first = wins.indexOf(true);
  let from: number | null = null;
  for (let i = sorted.length - 1; i >= 0 && wins[i]; i--) from = sorted[i].rowsPerExpert;
  return { firstDenseWin: first < 0 ? null : sorted[first].rowsPerExpert, denseWinsFrom: from };
}
