// Seeded random weights made on the device (fill_random), so that full-size models are benchmarked
// from a config alone, without writing or reading a checkpoint. Norm weights are ones; projections
// have std 1/sqrt(fan_in) so activations stay O(1); the router is wider so routing is not uniform.
import type { Stream, Tensor } from '../native/device';
import { tensorFromFloat32 } from '../native/device';
import * as ops from '../native/ops';
import type { WeightKey, WeightRole, WeightSource } from './weights';

const ROLES: WeightRole[] = [
  'embed',
  'finalNorm',
  'lmHead',
  'inputNorm',
  'postNorm',
  'q',
  'k',
  'v',
  'o',
  'qBias',
  'kBias',
  'vBias',
  'oBias',
  'qNorm',
  'kNorm',
  'router',
  'expertGateUp',
  'expertDown',
  'sharedGateUp',
  'sharedDown',
  'sharedGate',
  'denseGateUp',
  'denseDown',
  'routerBias',
  'mlaQA',
  'mlaQABias',
  'mlaQANorm',
  'mlaQB',
  'mlaKvA',
  'mlaKvABias',
  'mlaKvANorm',
  'mlaKvB',
];
const NORMS = new Set<WeightRole>(['finalNorm', 'inputNorm', 'postNorm', 'qNorm', 'kNorm', 'mlaQANorm', 'mlaKvANorm']);
const BIASES = new Set<WeightRole>(['qBias', 'kBias', 'vBias', 'oBias', 'routerBias', 'mlaQABias', 'mlaKvABias']);

export class RandomSource implements WeightSource {
  constructor(
    readonly seed: number,
    readonly tied = false,
  ) {}

  hasLmHead(): boolean {
    return !this.tied;
  }

  async fill(key: WeightKey, dst: Tensor, s: Stream): Promise<void> {
    if (NORMS.has(key.role)) {
      const ones = tensorFromFloat32(dst.device, s, 'f32', dst.shape, new Float32Array(dst.numel).fill(1));
      ops.copy(s, dst, ones);
      ones.dispose();
      return;
    }
    const fanIn = dst.shape[dst.shape.length - 1];
    let std = 1 / Math.sqrt(fanIn);
    if (key.role === 'embed') std = 1;
    else if (key.role === 'router') std = 4 / Math.sqrt(fanIn);
    else if (BIASES.has(key.role)) std = 0.02;
    ops.fillRandom(s, dst, this.keySeed(key), std);
  }

  /** A distinct, reproducible 31-bit seed per weight. */
  private keySeed(key: WeightKey): number {
    let h = (this.seed * 1000003) >>> 0;
    for (const v of [ROLES.indexOf(key.role), key.layer ?? -1, key.expert ?? -1]) {
      h = Math.imul(h ^ (v + 0x9e3779b9), 0x85ebca6b) >>> 0;
      h ^= h >>> 13;
    }
    return h & 0x7fffffff;
  }
}
