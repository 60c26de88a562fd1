// How many bytes of weights one rank of a cluster will hold, from the ModelSpec alone: checked at load
// against the memory the device has free, before anything is allocated, so that a config whose sizes
// cannot fit (a typo, or a model too large for the cluster) is one line instead of an out-of-memory
// failure half-way through loading. An estimate of the weights only (activations come on top of it):
// parameters per rank (the routed experts split W ways, the rest replicated) times the storage dtype.
import type { DType } from '../native/addonTypes';
import type { ModelSpec } from './config';

const DTYPE_BYTES: Record<DType, number> = { f32: 4, bf16: 2, f16: 2, i32: 4, i64: 8 }; // as native/device.ts's (model/ imports no native code)

/** Parameters of one rank: everything but the routed experts in full, E/W of the routed experts. */
export function parametersPerRank(spec: ModelSpec, world: number): number {
  const H = spec.hiddenSize;
  const V = spec.vocabSize;
  let n = V * H * (spec.tieWordEmbeddings ? 1 : 2) + H;
  const attention = attentionParameters(spec);
  const { numExperts: E, expertIntermediate: I, sharedIntermediate: Is } = spec.moe;
  const expertsHere = Math.ceil(E / Math.max(1, world));
  for (const layer of spec.layers) {
    n += attention + 2 * H;
    if (layer.mlp === 'dense') n += 3 * H * spec.denseIntermediate;
    else
      n += E * H + expertsHere * 3 * H * I + 3 * H * Is + (spec.moe.sharedGate ? H : 0) + (spec.moe.routing?.scoreCorrectionBias ? E : 0);
  }
  return n;
}

function attentionParameters(spec: ModelSpec): number {
  const H = spec.hiddenSize;
  const { numHeads: nh, numKvHeads: nkv, headDim: hd } = spec;
  const m = spec.mla;
  if (!m) return H * nh * hd + 2 * H * nkv * hd + nh * hd * H + (spec.qkNorm ? 2 * hd : 0);
  const qk = m.qkNopeHeadDim + m.qkRopeHeadDim;
  const q = m.qLoraRank === null ? H * nh * qk : H * m.qLoraRank + m.qLoraRank + m.qLoraRank * nh * qk;
  const kv = H * (m.kvLoraRank + m.qkRopeHeadDim) + m.kvLoraRank + m.kvLoraRank * nh * (m.qkNopeHeadDim + m.vHeadDim);
  return q + kv + nh * m.vHeadDim * H;
}

/** Bytes of weights one rank holds, stored as `dtype`. */
export function weightBytesPerRank(spec: ModelSpec, world: number, dtype: DType): number {
  return parametersPerRank(spec, world) * (DTYPE_BYTES[dtype] ?? 4);
}

/** "12.3 GB" / "512.0 MB": sizes for messages. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return `${bytes} bytes`;
  if (bytes >= 1e15) return `${bytes.toExponential(2)} bytes`;
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  return `${(bytes / 1e6).toFixed(1)} MB`;
}
