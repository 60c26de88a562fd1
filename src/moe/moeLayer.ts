// One MoE layer on one rank: route, permute by expert, dispatch to the ranks that hold the experts,
// run the expert FFNs, combine back, un-permute with the routing weights. The per-expert counts come
// to the host once (the layer's one host sync): they size the all-to-all and choose the kernels.
import type { Communicator } from '../comm/communicator';
import type { Stream, Tensor } from '../native/device';
import type { DType } from '../native/addonTypes';
import * as ops from '../native/ops';
import type { TensorScope } from '../engine/scope';
import type { MlpWeights, MoeWeights } from '../engine/weightTypes';
import { swigluMlp } from '../engine/mlp';
import { type ExpertRange, rowsPerRank } from './placement';

export interface MoeRouting {
  numExperts: number;
  topK: number;
  normTopkProb: boolean;
  routedScale: number;
}

export interface MoeLayerContext {
  stream: Stream;
  scope: TensorScope;
  comm: Communicator;
  actDtype: DType;
  routing: MoeRouting;
  /** Every rank's experts, in rank order. */
  ranges: readonly ExpertRange[];
  kernel: 'grouped' | 'dense';
}

/** What the layer did, for metrics and the scheduler's cost model. */
export interface MoeLayerStats {
  /** Rows this rank's experts computed, per local expert segment. */
  segmentRows: number[];
  sentRows: number[];
  receivedRows: number[];
}

/** out[T,H] = MoE(h[T,H]). T may be 0: the rank still serves the other ranks' tokens. */
export async function moeLayer(ctx: MoeLayerContext, w: MoeWeights, h: Tensor, out: Tensor): Promise<MoeLayerStats> {
  const { stream: s, scope, comm, routing } = ctx;
  const T = h.shape[0];
  const H = h.shape[1];
  const E = routing.numExperts;
  const k = routing.topK;

  const rowMap = scope.tensor('i32', [T, k]);
  const topkW = scope.tensor('f32', [T, k]);
  const permuted = scope.tensor(ctx.actDtype, [T * k, H]);
  let counts: Int32Array = new Int32Array(E);
  if (T > 0) {
    const logits = scope.tensor('f32', [T, E]);
    ops.matmul(s, logits, h, w.router);
    const topkIdx = scope.tensor('i32', [T, k]);
    ops.router(s, topkIdx, topkW, logits, k, routing.normTopkProb, routing.routedScale);
    const countsDev = scope.tensor('i32', [E]);
    ops.moePermute(s, permuted, rowMap, countsDev, h, topkIdx);
    counts = (await countsDev.read(s)) as Int32Array;
  }

  // Dispatch: rows for rank p are contiguous in `permuted` (experts of a rank are contiguous).
  let received = permuted;
  let segments = Array.from(counts);
  let sentRows = [T * k];
  let receivedRows = [T * k];
  if (comm.world > 1) {
    sentRows = rowsPerRank(counts, ctx.ranges);
    const all = await comm.allGather(counts);
    const local = ctx.ranges[comm.rank];
    segments = [];
    receivedRows = all.map((c) => {
      let sum = 0;
      for (let e = local.first; e < local.first + local.count; e++) {
        segments.push(c[e]);
        sum += c[e];
      }
      return sum;
    });
    received = scope.tensor(ctx.actDtype, [sum(receivedRows), H]);
    await comm.allToAll(s, permuted, sentRows, received, receivedRows);
  }

  const expertOut = scope.tensor(ctx.actDtype, [received.shape[0], H]);
  if (received.shape[0] > 0) expertFfn(ctx, w.experts, received, segments, expertOut);

  let combined = expertOut;
  if (comm.world > 1) {
    combined = scope.tensor(ctx.actDtype, [T * k, H]);
    await comm.allToAll(s, expertOut, receivedRows, combined, sentRows);
  }

  if (T > 0) {
    ops.moeUnpermute(s, out, combined, rowMap, topkW, false);
    if (w.shared) sharedExpert(ctx, w.shared, w.sharedGate, h, out);
  }
  return { segmentRows: segments, sentRows, receivedRows };
}

/** The experts' SwiGLU FFN over rows grouped in segments (segment i uses local expert i % Elocal). */
function expertFfn(ctx: MoeLayerContext, experts: MlpWeights, x: Tensor, segments: number[], out: Tensor): void {
  const { stream: s, scope } = ctx;
  const R = x.shape[0];
  const I2 = experts.gateUp.shape[1];
  const gateUp = scope.tensor(ctx.actDtype, [R, I2]);
  ops.expertMatmul(s, gateUp, x, experts.gateUp, segments, ctx.kernel);
  const act = scope.tensor(ctx.actDtype, [R, I2 / 2]);
  ops.swiglu(s, act, gateUp);
  ops.expertMatmul(s, out, act, experts.down, segments, ctx.kernel);
}

/** Qwen2-MoE: out += sigmoid(h @ gate^T) * SwiGLU(h); without a gate, out += SwiGLU(h). */
function sharedExpert(ctx: MoeLayerContext, mlp: MlpWeights, gate: Tensor | undefined, h: Tensor, out: Tensor): void {
  const { stream: s, scope } = ctx;
  const T = h.shape[0];
  const y = scope.tensor(ctx.actDtype, [T, h.shape[1]]);
  swigluMlp(s, scope, ctx.actDtype, mlp, h, y);
  if (gate) {
    const g = scope.tensor('f32', [T, 1]);
    ops.matmul(s, g, h, gate);
    ops.sigmoidGateAdd(s, out, y, g);
  } else {
    ops.add(s, out, out, y);
  }
}

function sum(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}
