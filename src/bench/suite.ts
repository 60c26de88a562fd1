// A suite: a named set of measurements with its own row type and table layout.
import type { BenchContext } from './context';
import type { Column } from './table';

export const SUITE_NAMES = ['gemm', 'experts', 'attention', 'prefill'] as const;
export type SuiteName = (typeof SUITE_NAMES)[number];

export function isSuiteName(name: string): name is SuiteName {
  return (SUITE_NAMES as readonly string[]).includes(name);
}

export interface SuiteOutput<R> {
  rows: R[];
  /** Lines printed under the table and kept in the JSON: formulas, derived results (crossovers). */
  notes: string[];
  /** Derived results in a structured form for the JSON (e.g. the experts crossover per shape). */
  summary?: Record<string, unknown>;
}

export interface Suite<R> {
  readonly name: SuiteName;
  readonly title: string;
  readonly columns: readonly Column<R>[];
  /** Why this suite cannot run on the device (e.g. the model does not fit), or undefined when it can. */
  doesNotFit?(ctx: BenchContext): string | undefined;
  run(ctx: BenchContext): Promise<SuiteOutput<R>>;
}
