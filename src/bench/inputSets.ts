// Rotating input buffers. A kernel that reads the same few MB on every repetition finds them in the
// GPU's L2 cache (50 MB on H100/H200) and looks faster than it will be in the model, where its
// inputs were just written by other kernels. When one set of inputs would fit in L2, the suites
// allocate several sets and use them in turn, so that each repetition reads from memory.
import type { Tensor } from '../native/device';

export const L2_BYTES = 50 * 1024 * 1024;
/** Rotate through enough sets to cover this much memory: twice L2 evicts the previous set. */
const ROTATION_BYTES = 2 * L2_BYTES;
const MAX_SETS = 8;

/** How many input sets to rotate through when one set takes `bytesPerSet` bytes. */
export function rotationCount(bytesPerSet: number): number {
  if (bytesPerSet >= L2_BYTES) return 1;
  return Math.min(MAX_SETS, Math.max(2, Math.ceil(ROTATION_BYTES / Math.max(bytesPerSet, 1))));
}

/** `count` sets made by make(i); pick(i) gives the set for repetition i; dispose() frees them all. */
export class InputSets<T extends Record<string, Tensor>> {
  private readonly sets: T[] = [];

  constructor(count: number, make: (i: number) => T) {
    try {
      for (let i = 0; i < count; i++) this.sets.push(make(i));
    } catch (e) {
      this.dispose();
      throw e;
    }
  }

  get count(): number {
    return this.sets.length;
  }

  pick(i: number): T {
    return this.sets[i % this.sets.length];
  }

  dispose(): void {
    for (const set of this.sets.splice(0)) for (const t of Object.values(set)) t.dispose();
  }
}
