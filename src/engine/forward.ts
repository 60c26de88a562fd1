// The forward pass of one rank over a batch of packed sequences. Single-rank, multi-rank, CPU and
// CUDA all run this code; only the backend and the Communicator differ.
import type { Communicator } from '../comm/communicator';
import { type Device, type Event, type Stream, type Tensor, tensorFromInt32 } from '../native/device';
import type { DType } from '../native/addonTypes';
import * as ops from '../native/ops';
import type { ModelSpec } from '../model/config';
import type { CostModel } from '../moe/cost/costModel';
import { moeLayer, type MoeRouting } from '../moe/exec/moeLayer';
import type { MoeLayerStats, RouterGroups } from '../moe/exec/context';
import type { MoePlan } from '../moe/plan/plan';
import { type ExpertLayout, ExpertLayoutError, expertLayout } from '../moe/placement';
import { scheduleLayoutProblem, type DispatchMode, type MoeSchedule } from '../moe/schedule';
import { openSpan, traced, type OpSpan } from '../moe/exec/spans';
import { attentionBlock, type StepLayout } from './attention';
import { swigluMlp } from '../moe/exec/mlp';
import { TensorScope } from '../native/scope';
import type { LayerWeights, ModelWeights } from './weightTypes';
import { modelNorm } from './norm';
import type { NonFinite } from './nonFinite';

export interface ForwardOptions {
  /** Logits for every position (else only each sequence's last). */
  allLogits?: boolean;
  /** Record every MoE op's start and end on its stream (device events) for a trace. */
  trace?: boolean;
  /** Debug: count non-finite values of every layer's MLP output too (read once, after the step); default the runner's. */
  checkLayers?: boolean;
  /**
   * Called once every op of the step is enqueued, before its results are read back: the caller may start enqueueing
   * the next step, which the device runs right after this one instead of after the host's round trip (the reads,
   * the answers, the next request's unpacking). Not with `trace` (its spans need the device idle at the step's start).
   */
  onEnqueued?: () => void;
}

/** An op as measured: ms from the start of the step. */
export interface MeasuredOp {
  layer: number;
  stream: 'compute' | 'comm';
  name: string;
  startMs: number;
  endMs: number;
  args: Record<string, string | number>;
}

export interface ForwardResult {
  /** Per sequence: rows x vocab logits, row-major (one row unless allLogits). */
  logits: Float32Array[];
  /** The plan of every MoE layer, in layer order. */
  plans: MoePlan[];
  /** With options.trace: the MoE layers' ops as they ran. */
  measured?: MeasuredOp[];
  /** The sequences whose logits hold NaN or Inf (count_nonfinite on the device); empty when all are finite. */
  nonfinite: NonFinite[];
  /** What each MoE layer's host sync saw, in layer order (as plans). */
  layerStats: MoeLayerStats[];
}

export interface RunnerOptions {
  schedule: MoeSchedule;
  costModel?: CostModel;
  /** How the MoE dispatch sends rows (moe/schedule.ts DispatchMode; default auto). */
  dispatch?: DispatchMode;
  /** Debug: check every layer's MLP output for non-finite values (ForwardOptions.checkLayers). */
  checkLayers?: boolean;
}

export class InvalidInputError extends Error {
  readonly code = 'EPS_INVALID_INPUT';
}

export class ModelRunner {
  private readonly compute: Stream;
  private readonly commStream: Stream;
  private readonly routing: MoeRouting;
  private readonly layout: ExpertLayout;

  constructor(
    readonly spec: ModelSpec,
    readonly weights: ModelWeights,
    readonly device: Device,
    readonly comm: Communicator,
    readonly actDtype: DType,
    readonly options: RunnerOptions,
  ) {
    const { moe } = spec;
    // The layout the routers were loaded for: their output index is its virtual expert id.
    this.layout = expertLayout(moe.numExperts, comm.world, weights.expertGroups);
    const problem = scheduleLayoutProblem(options.schedule, this.layout.groups);
    if (problem) throw new ExpertLayoutError(problem);
    this.compute = device.stream();
    this.commStream = device.stream({ highPriority: true });
    this.routing = {
      numExperts: moe.numExperts,
      topK: moe.topK,
      normTopkProb: moe.normTopkProb,
      routedScale: moe.routedScale,
      expertIntermediate: moe.expertIntermediate,
      sharedIntermediate: moe.sharedIntermediate,
    };
    if (moe.routing) this.routing.selection = routerGroups(moe.routing, this.layout);
  }

  /** Checks sequences against the model; throws InvalidInputError naming the sequence and position. */
  validate(sequences: readonly (readonly number[])[]): void {
    const { spec } = this;
    sequences.forEach((seq, i) => {
      if (seq.length === 0) throw new InvalidInputError(`sequences[${i}] is empty`);
      if (seq.length > spec.maxPositions) {
        throw new InvalidInputError(`sequences[${i}] has ${seq.length} tokens, more than the model's ${spec.maxPositions} positions`);
      }
      // Attention is full causal: equal to the model's sliding window only up to the window.
      if (spec.slidingWindow !== null && seq.length > spec.slidingWindow) {
        throw new InvalidInputError(
          `sequences[${i}] has ${seq.length} tokens, more than the model's sliding window of ${spec.slidingWindow}`,
        );
      }
      seq.forEach((id, j) => {
        if (!Number.isInteger(id) || id < 0 || id >= spec.vocabSize) {
          throw new InvalidInputError(`sequences[${i}][${j}] = ${id} is not a token id in [0, ${spec.vocabSize})`);
        }
      });
    });
  }

  async forward(sequences: readonly (readonly number[])[], options: ForwardOptions = {}): Promise<ForwardResult> {
    this.validate(sequences);
    const s = this.compute;
    const scope = new TensorScope(this.device);
    const spans: { layer: number; span: OpSpan }[] = [];
    const stepStart: Event | undefined = options.trace ? s.record() : undefined;
    // Host times from here, device times from stepStart: resolveSpans aligns the two clocks.
    const hostStepStart = stepStart ? performance.now() : 0;
    try {
      const { spec, weights } = this;
      const packed = pack(sequences);
      const T = packed.tokens.length;
      const x = scope.tensor(this.actDtype, [T, spec.hiddenSize]);
      let layout: StepLayout | undefined;
      if (T > 0) {
        const ids = scope.adopt(tensorFromInt32(this.device, s, [T], packed.tokens));
        ops.embedding(s, x, weights.embed, ids);
        layout = {
          positions: scope.adopt(tensorFromInt32(this.device, s, [T], packed.positions)),
          cuSeqlens: scope.adopt(tensorFromInt32(this.device, s, [packed.cuSeqlens.length], Int32Array.from(packed.cuSeqlens))),
          cuSeqlensHost: packed.cuSeqlens,
        };
      }
      const plans: MoePlan[] = [];
      const layerStats: MoeLayerStats[] = [];
      // Debug: per layer, non-finite values of each token's MLP output, read after the step (no extra host sync).
      const layerChecks: Tensor[] = [];
      const checkLayers = (options.checkLayers ?? this.options.checkLayers ?? false) && T > 0;
      // A layer's MLP output is added into x by the next layer's input norm, in the norm's pass (native/ops.md
      // rmsnorm's residual), so it outlives its layer: two buffers, in turn.
      const mlpOuts = [0, 1].map(() => scope.tensor(this.actDtype, [T, spec.hiddenSize]));
      let pending: Tensor | undefined;
      const spanOf = (i: number) => (options.trace ? (span: OpSpan) => spans.push({ layer: i, span }) : undefined);
      for (const [i, w] of weights.layers.entries()) {
        // Temporaries of one layer; ops keep what they read alive until they have run.
        const ls = new TensorScope(this.device);
        try {
          const check = checkLayers ? scope.tensor('i32', [T]) : undefined;
          if (check) layerChecks.push(check);
          const mlpOut = mlpOuts[i % 2];
          const plan = await this.layer(ls, w, x, pending, mlpOut, layout, spanOf(i), check, (st) => layerStats.push(st));
          pending = mlpOut;
          if (plan) plans.push(plan);
        } finally {
          ls.dispose();
        }
      }
      // The last layer's MLP output: no norm follows it before the final one (over the picked rows only).
      if (T > 0 && pending) {
        const last = pending;
        traced(spanOf(weights.layers.length - 1), s, 'residual_add', { tokens: T }, () => ops.add(s, x, x, last));
      }
      const onEnqueued = options.trace ? undefined : options.onEnqueued;
      const { logits, bad } =
        T > 0 ? await this.logits(s, scope, x, packed.cuSeqlens, options.allLogits ?? false, onEnqueued) : { logits: [], bad: [] };
      if (T === 0) onEnqueued?.();
      const nonfinite: NonFinite[] = bad.filter((b) => b.values > 0);
      if (nonfinite.length > 0 && layerChecks.length > 0) await firstBadLayers(s, layerChecks, packed.cuSeqlens, nonfinite);
      // The reads above came after every op of the step on the compute stream, which waited for the comm stream's;
      // with the next step already enqueued behind them, waiting for the streams would wait for it too.
      if (!onEnqueued) {
        await s.synchronize();
        await this.commStream.synchronize();
      }
      const measured = stepStart ? resolveSpans(stepStart, hostStepStart, spans) : undefined;
      return { logits, plans, measured, nonfinite, layerStats };
    } finally {
      scope.dispose();
      stepStart?.dispose();
      for (const { span } of spans) {
        span.start.dispose();
        span.end.dispose();
      }
    }
  }

  /**
   * One layer: x += residual (the previous layer's MLP output, if any) + attention, then mlpOut = the MLP's output
   * (MoE or dense), which the caller adds into x (the next layer's input norm does, in its pass).
   */
  private async layer(
    scope: TensorScope,
    w: LayerWeights,
    x: Tensor,
    residual: Tensor | undefined,
    mlpOut: Tensor,
    layout: StepLayout | undefined,
    onSpan: ((span: OpSpan) => void) | undefined,
    check?: Tensor,
    onStats?: (stats: MoeLayerStats) => void,
  ): Promise<MoePlan | undefined> {
    const { spec, weights } = this;
    const s = this.compute;
    const T = x.shape[0];
    let attnOut: Tensor | undefined;
    if (layout) {
      const span = openSpan(onSpan, s);
      attnOut = attentionBlock(
        { stream: s, scope, spec, actDtype: this.actDtype, layout, invFreq: weights.invFreq, attentionScaling: weights.attentionScaling, onSpan },
        w,
        x,
        residual,
      );
      span?.end('compute', 'attention_block', { tokens: T });
    }
    const hn = scope.tensor(this.actDtype, [T, spec.hiddenSize]);
    // x += attention output, in the post-attention norm's pass.
    if (T > 0) traced(onSpan, s, 'post_norm', { tokens: T }, () => modelNorm(s, hn, x, w.postNorm, spec, attnOut));
    let plan: MoePlan | undefined;
    if (w.mlp.kind === 'moe') {
      plan = await moeLayer(
        {
          compute: s,
          comm: this.commStream,
          scope,
          communicator: this.comm,
          actDtype: this.actDtype,
          routing: this.routing,
          layout: this.layout,
          schedule: this.options.schedule,
          costModel: this.options.costModel,
          dispatch: this.options.dispatch,
          onSpan,
          onStats,
        },
        w.mlp.moe,
        hn,
        mlpOut,
      );
    } else if (T > 0) {
      const span = openSpan(onSpan, s);
      swigluMlp(s, scope, this.actDtype, w.mlp.dense, hn, mlpOut);
      span?.end('compute', 'dense_mlp', { tokens: T });
    }
    if (check) ops.countNonfinite(s, check, mlpOut);
    return plan;
  }

  /** Each sequence's logits rows, and how many of its logits are non-finite (counted on the device). */
  private async logits(
    s: Stream,
    scope: TensorScope,
    x: Tensor,
    cu: number[],
    all: boolean,
    onEnqueued?: () => void,
  ): Promise<{ logits: Float32Array[]; bad: NonFinite[] }> {
    const { spec, weights } = this;
    const rows = all ? Array.from({ length: cu[cu.length - 1] }, (_, i) => i) : cu.slice(1).map((end) => end - 1);
    const idx = scope.adopt(tensorFromInt32(this.device, s, [rows.length], Int32Array.from(rows)));
    const picked = scope.tensor(this.actDtype, [rows.length, spec.hiddenSize]);
    ops.gatherRows(s, picked, x, idx);
    modelNorm(s, picked, picked, weights.finalNorm, spec);
    const out = scope.tensor('f32', [rows.length, spec.vocabSize]);
    ops.matmul(s, out, picked, weights.lmHead);
    const counts = scope.tensor('i32', [rows.length]);
    ops.countNonfinite(s, counts, out);
    const reads = [out.read(s), counts.read(s)];
    for (const r of reads) r.catch(() => undefined); // awaited below; a failure of the second while the first is awaited is not unhandled
    onEnqueued?.();
    const flat = (await reads[0]) as Float32Array;
    const perRow = (await reads[1]) as Int32Array;
    const V = spec.vocabSize;
    const bad: NonFinite[] = [];
    const logits = cu.slice(1).map((end, b) => {
      const start = all ? cu[b] : b;
      const stop = all ? end : b + 1;
      bad.push({ sequence: b, values: perRow.subarray(start, stop).reduce((a, n) => a + n, 0), of: (stop - start) * V });
      return flat.slice(start * V, stop * V);
    });
    return { logits, bad };
  }

  dispose(): void {
    this.compute.dispose();
    this.commStream.dispose();
  }
}

/** Fills firstLayer of each non-finite sequence: the first layer whose MLP output was non-finite at one of its tokens. */
async function firstBadLayers(s: Stream, checks: Tensor[], cu: number[], found: NonFinite[]): Promise<void> {
  for (const [layer, t] of checks.entries()) {
    const perToken = (await t.read(s)) as Int32Array;
    for (const nf of found) {
      if (nf.firstLayer === undefined && perToken.subarray(cu[nf.sequence], cu[nf.sequence + 1]).some((n) => n > 0)) nf.firstLayer = layer;
    }
  }
}

/**
 * Spans as measured, from the step's start. Each gets `aheadUs`: how long after the host opened it the device began
 * it (the work queued ahead of it). Near 0: the device had run dry and was waiting for the host right there, so
 * a slow span is the host's doing; large: the device was busy and the span's time is its own. The two clocks are
 * aligned where the device waited most (a traced step starts on an idle device, so its first spans are such
 * places), which also absorbs the stepStart event's own latency and the timestamps' granularity.
 */
function resolveSpans(stepStart: Event, hostStepStart: number, spans: { layer: number; span: OpSpan }[]): MeasuredOp[] {
  const measured = spans.map(({ layer, span }) => {
    const startMs = span.start.elapsedSince(stepStart);
    const lagMs = startMs - (span.hostOpenMs - hostStepStart);
    return { layer, stream: span.stream, name: span.name, startMs, endMs: span.end.elapsedSince(stepStart), args: span.args, lagMs };
  });
  const origin = measured.reduce((least, m) => Math.min(least, m.lagMs), Infinity);
  return measured.map(({ lagMs, args, ...m }) => ({ ...m, args: { ...args, aheadUs: Math.round((lagMs - origin) * 1000) } }));
}

/**
 * The router op's scoring and groups for a DeepSeek model. Groups are contiguous in the checkpoint's expert
 * order; where the router's columns are virtual ids (expert groups of the placement), each column's group is
 * that of its checkpoint expert.
 */
export function routerGroups(r: NonNullable<ModelSpec['moe']['routing']>, layout: ExpertLayout): RouterGroups {
  const sel: RouterGroups = { scoring: r.scoring, method: r.method, groups: r.groups, topkGroup: r.topkGroup };
  if (r.method === 'greedy' || layout.identity) return sel;
  const per = layout.numExperts / r.groups;
  return { ...sel, expertGroup: Array.from({ length: layout.numExperts }, (_, v) => Math.floor(layout.globalOf(v) / per)) };
}

/** Packs sequences back to back: token ids, positions within each sequence, and sequence starts. */
export function pack(sequences: readonly (readonly number[])[]): { tokens: Int32Array; positions: Int32Array; cuSeqlens: number[] } {
  const cuSeqlens = [0];
  for (const seq of sequences) cuSeqlens.push(cuSeqlens[cuSeqlens.length - 1] + seq.length);
  const T = cuSeqlens[cuSeqlens.length - 1];
  const tokens = new Int32Array(T);
  const positions = new Int32Array(T);
  sequences.forEach((seq, b) => {
    tokens.set(seq, cuSeqlens[b]);
    for (let j = 0; j < seq.length; j++) positions[cuSeqlens[b] + j] = j;
  });
  return { tokens, positions, cuSeqlens };
}
