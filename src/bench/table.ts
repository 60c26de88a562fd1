// Aligned text tables for stdout: one header line, a rule, one line per row; numbers right-aligned.

export interface Column<R> {
  header: string;
  /** The cell text of a row. */
  cell: (row: R) => string;
  /** Text columns are left-aligned; numbers (the default) right-aligned. */
  align?: 'left' | 'right';
}

export function formatTable<R>(columns: readonly Column<R>[], rows: readonly R[]): string {
  const cells = rows.map((r) => columns.map((c) => c.cell(r)));
  const widths = columns.map((c, j) => Math.max(c.header.length, ...cells.map((line) => line[j].length)));
  const fmt = (texts: string[]) =>
    texts
      .map((t, j) => (columns[j].align === 'left' ? t.padEnd(widths[j]) : t.padStart(widths[j])))
      .join('  ')
      .trimEnd();
  const lines = [fmt(columns.map((c) => c.header)), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const line of cells) lines.push(fmt(line));
  return lines.join('\n') + '\n';
}

/** A number with `digits` decimals; '-' for null/undefined/non-finite. */
export function fixed(v: number | null | undefined, digits: number): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits);
}

/** Three significant figures for rates whose range spans GFLOP/s (CPU) to hundreds of TFLOP/s (GPU). */
export function sig3(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '-';
  if (v === 0) return '0';
  const digits = Math.max(0, 2 - Math.floor(Math.log10(Math.abs(v))));
  return v.toFixed(Math.min(digits, 6));
}
