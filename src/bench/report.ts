// The JSON `eps-moe bench --json FILE` writes: what ran where, with which builds, and every row.
import type { BackendKind, DType } from '../native/addonTypes';
import type { AttentionRow } from './attentionSuite';
import type { ExpertRow } from './expertsSuite';
import type { GemmRow } from './gemmSuite';
import type { PrefillRow } from './prefillSuite';
import type { SuiteName } from './suite';

export interface SuiteRows {
  gemm: GemmRow;
  experts: ExpertRow;
  attention: AttentionRow;
  prefill: PrefillRow;
}

export interface BenchReport {
  /** ISO 8601, when the run started. */
  date: string;
  /** The device's name, e.g. "NVIDIA H200" or "cpu (2 threads)". */
  gpu: string;
  backend: BackendKind;
  /** addon().versions(): napi, and cuda/cublas/nccl where the CUDA backend is built in. */
  versions: Record<string, string>;
  node: string;
  quick: boolean;
  dtype: DType;
  reps: number;
  /** The square-GEMM ceiling of this run, when a suite measured it. */
  ceiling: { side: number; tflops: number } | null;
  suites: { [K in SuiteName]?: SuiteRows[K][] };
  notes: { [K in SuiteName]?: string[] };
  summary: { [K in SuiteName]?: Record<string, unknown> };
  /** Suites left out, and why (e.g. the model does not fit in device memory). */
  skipped: { [K in SuiteName]?: string };
}
