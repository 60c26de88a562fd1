// Errors of `eps-moe bench`, with codes the CLI (and tests) can tell apart.

export type BenchErrorCode =
  /** A suite name that is not one of SUITE_NAMES. */
  | 'BENCH_UNKNOWN_SUITE'
  /** --backend names a backend this addon build does not have. */
  | 'BENCH_BACKEND_UNAVAILABLE'
  /** A bad option value (e.g. --reps 0). */
  | 'BENCH_OPTIONS'
  /** An explicitly requested suite does not fit on the device. */
  | 'BENCH_DOES_NOT_FIT';

export class BenchError extends Error {
  constructor(
    readonly code: BenchErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'BenchError';
  }
}
