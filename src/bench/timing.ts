// Times a region of device work with events recorded around it on the stream, as CUDA benchmarks
// do: the host enqueues every repetition back to back and synchronises once, so the numbers are
// device time (plus any gap the host leaves when it cannot enqueue fast enough, which is part of
// what a kernel that needs many launches costs).
import type { Event, Stream } from '../native/device';
import { median } from './stats';

export interface Timing {
  medianMs: number;
  minMs: number;
  samplesMs: number[];
}

export interface TimingOptions {
  /** Untimed runs first (cuBLAS heuristics, allocator, caches). */
  warmup: number;
  reps: number;
}

/** Runs body(i) warmup + reps times on `s`; the median of the timed ones. `i` counts all runs from 0. */
export async function timeOnStream(s: Stream, opts: TimingOptions, body: (i: number) => void): Promise<Timing> {
  if (!Number.isInteger(opts.reps) || opts.reps < 1) throw new RangeError(`reps must be a positive integer, got ${opts.reps}`);
  for (let i = 0; i < opts.warmup; i++) body(i);
  await s.synchronize();
  const marks: [Event, Event][] = [];
  try {
    for (let r = 0; r < opts.reps; r++) {
      const a = s.record();
      body(opts.warmup + r);
      const b = s.record();
      marks.push([a, b]);
    }
    await s.synchronize();
    const samplesMs = marks.map(([a, b]) => b.elapsedSince(a));
    return { medianMs: median(samplesMs), minMs: Math.min(...samplesMs), samplesMs };
  } finally {
    for (const [a, b] of marks) {
      a.dispose();
      b.dispose();
    }
  }
}

/** Wall-clock time of an async step that ends synchronised with the device (a whole forward). */
export async function timeWallClock(opts: TimingOptions, step: (i: number) => Promise<void>): Promise<Timing> {
  for (let i = 0; i < opts.warmup; i++) await step(i);
  const samplesMs: number[] = [];
  for (let r = 0; r < opts.reps; r++) {
    const t0 = performance.now();
    await step(opts.warmup + r);
    samplesMs.push(performance.now() - t0);
  }
  return { medianMs: median(samplesMs), minMs: Math.min(...samplesMs), samplesMs };
}
