// A float64 reference of one MoE layer after routing, written from the model's definition (no
// permute, no chunks, no ranks): per token, the routed experts' SwiGLU FFNs weighted by the router,
// plus the shared expert scaled by the sigmoid of its gate.
import { matmulRef, swigluRef } from './ops';

type Vec = ArrayLike<number>;

export interface MoeLayerRefWeights {
  /** Every expert, checkpoint order: gateUp [E, 2I, H], down [E, H, I]. */
  gateUp: Vec;
  down: Vec;
  /** The shared expert: gateUp [2Is, H], down [H, Is]; gate [1, H]. */
  shared?: { gateUp: Vec; down: Vec; gate: Vec };
}

export interface MoeLayerRefShape {
  H: number;
  I: number;
  Is: number;
}

/** out[T,H] for x[T,H], routed to experts idx[t][j] (checkpoint ids) with weights w[t][j]. */
export function moeLayerRef(
  x: Vec,
  idx: readonly (readonly number[])[],
  w: readonly (readonly number[])[],
  weights: MoeLayerRefWeights,
  { H, I, Is }: MoeLayerRefShape,
): Float64Array {
  const T = idx.length;
  const out = new Float64Array(T * H);
  const mlp = (row: Vec, gateUp: Vec, down: Vec, inter: number) =>
    matmulRef(swigluRef(matmulRef(row, gateUp, 1, 2 * inter, H), 1, inter), down, 1, H, inter);
  for (let t = 0; t < T; t++) {
    const row = Array.from({ length: H }, (_, h) => x[t * H + h]);
    idx[t].forEach((e, j) => {
      const gateUp = Array.prototype.slice.call(weights.gateUp, e * 2 * I * H, (e + 1) * 2 * I * H) as number[];
      const down = Array.prototype.slice.call(weights.down, e * H * I, (e + 1) * H * I) as number[];
      const y = mlp(row, gateUp, down, I);
      for (let h = 0; h < H; h++) out[t * H + h] += w[t][j] * y[h];
    });
    if (weights.shared) {
      const y = mlp(row, weights.shared.gateUp, weights.shared.down, Is);
      const gate = matmulRef(row, weights.shared.gate, 1, 1, H)[0];
      const s = 1 / (1 + Math.exp(-gate));
      for (let h = 0; h < H; h++) out[t * H + h] += s * y[h];
    }
  }
  return out;
}
