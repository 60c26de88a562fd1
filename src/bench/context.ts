// What every suite gets: the device and a stream on it, the storage dtype, the sizes of this run,
// how to time, where progress goes, and the device's GEMM ceiling (measured once per run, by
// whichever suite asks first).
import type { Device, Stream } from '../native/device';
import type { DType } from '../native/addonTypes';
import type { MoeSchedule } from '../moe/schedule';
import type { BenchSizes } from './sizes';
import type { TimingOptions } from './timing';

export interface Ceiling {
  /** Side of the square GEMM. */
  side: number;
  dtype: DType;
  ms: number;
  tflops: number;
  inputSets: number;
}

export interface BenchContext {
  readonly device: Device;
  readonly stream: Stream;
  /** Storage dtype of every input and output: bf16 on GPUs, f32 on the CPU (its native type). */
  readonly dtype: DType;
  readonly sizes: BenchSizes;
  readonly quick: boolean;
  readonly timing: TimingOptions;
  /** How the MoE layers of whole-model suites run (--moe-schedule). */
  readonly schedule: MoeSchedule;
  /** A fresh seed for fill_random (inputs are random, never zeros: zeros make some kernels faster). */
  nextSeed(): number;
  /** One line of progress, for long suites. */
  progress(message: string): void;
  /** The square-GEMM ceiling TFLOP/s of this device in this run. */
  ceiling(): Promise<Ceiling>;
}

/** Wraps a measuring function so that it runs at most once. */
export function once<T>(measure: () => Promise<T>): () => Promise<T> {
  let result: Promise<T> | undefined;
  return () => (result ??= measure());
}
