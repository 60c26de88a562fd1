// The forward pass of one rank over a batch of packed sequences. Single-rank, multi-rank, CPU and
// CUDA all run this code; only the backend and the Communicator differ.
import type { Communicator } from '../comm/communicator';
import { type Device, type Stream, type Tensor, tensorFromInt32 } from '../native/device';
import type { DType } from '../native/addonTypes';
import * as ops from '../native/ops';
import type { ModelSpec } from '../model/config';
import { moeLayer, type MoeLayerStats } from '../moe/moeLayer';
import { type ExpertRange, expertRanges } from '../moe/placement';
import { attentionBlock, type StepLayout } from './attention';
import { swigluMlp } from './mlp';
import { TensorScope } from './scope';
import type { LayerWeights, ModelWeights } from './weightTypes';

export interface ForwardOptions {
  /** Logits for every position (else only each sequence's last). */
  allLogits?: boolean;
}

export interface ForwardResult {
  /** Per sequence: rows x vocab logits, row-major (one row unless allLogits). */
  logits: Float32Array[];
  moeStats: MoeLayerStats[];
}

export class InvalidInputError extends Error {
  readonly code = 'EPS_INVALID_INPUT';
}

export class ModelRunner {
  private readonly stream: Stream;

  constructor(
    readonly spec: ModelSpec,
    readonly weights: ModelWeights,
    readonly device: Device,
    readonly comm: Communicator,
    readonly actDtype: DType,
    readonly expertKernel: 'grouped' | 'dense' = 'grouped',
  ) {
    this.stream = device.stream();
  }

  /** Checks token ids against the vocabulary; throws InvalidInputError naming the sequence and position. */
  validate(sequences: readonly (readonly number[])[]): void {
    sequences.forEach((seq, i) => {
      if (seq.length === 0) throw new InvalidInputError(`sequences[${i}] is empty`);
      if (seq.length > this.spec.maxPositions)
        throw new InvalidInputError(`sequences[${i}] has ${seq.length} tokens, more than the model's ${this.spec.maxPositions} positions`);
      seq.forEach((id, j) => {
        if (!Number.isInteger(id) || id < 0 || id >= this.spec.vocabSize)
          throw new InvalidInputError(`sequences[${i}][${j}] = ${id} is not a token id in [0, ${this.spec.vocabSize})`);
      });
    });
  }

  async forward(sequences: readonly (readonly number[])[], options: ForwardOptions = {}): Promise<ForwardResult> {
    this.validate(sequences);
    const s = this.stream;
    const scope = new TensorScope(this.device);
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
      const ranges = expertRanges(spec.moe.numExperts, this.comm.world);
      const moeStats: MoeLayerStats[] = [];
      for (const w of weights.layers) {
        // Temporaries of one layer; ops keep what they read alive until they have run.
        const ls = new TensorScope(this.device);
        try {
          await this.layer(ls, w, x, layout, ranges, moeStats);
        } finally {
          ls.dispose();
        }
      }
      const logits = T > 0 ? await this.logits(s, scope, x, packed.cuSeqlens, options.allLogits ?? false) : [];
      await s.synchronize();
      return { logits, moeStats };
    } finally {
      scope.dispose();
    }
  }

  private async layer(
    scope: TensorScope,
    w: LayerWeights,
    x: Tensor,
    layout: StepLayout | undefined,
    ranges: ExpertRange[],
    moeStats: MoeLayerStats[],
  ): Promise<void> {
    const { spec, weights } = this;
    const s = this.stream;
    const T = x.shape[0];
    if (layout) {
      attentionBlock(
        { stream: s, scope, spec, actDtype: this.actDtype, layout, invFreq: weights.invFreq, attentionScaling: weights.attentionScaling },
        w,
        x,
      );
    }
    const hn = scope.tensor(this.actDtype, [T, spec.hiddenSize]);
    const mlpOut = scope.tensor(this.actDtype, [T, spec.hiddenSize]);
    if (T > 0) ops.rmsnorm(s, hn, x, w.postNorm, spec.rmsNormEps);
    if (w.mlp.kind === 'moe') {
      const routing = {
        numExperts: spec.moe.numExperts,
        topK: spec.moe.topK,
        normTopkProb: spec.moe.normTopkProb,
        routedScale: spec.moe.routedScale,
      };
      const ctx = { stream: s, scope, comm: this.comm, actDtype: this.actDtype, routing, ranges, kernel: this.expertKernel };
      moeStats.push(await moeLayer(ctx, w.mlp.moe, hn, mlpOut));
    } else if (T > 0) {
      swigluMlp(s, scope, this.actDtype, w.mlp.dense, hn, mlpOut);
    }
    if (T > 0) ops.add(s, x, x, mlpOut);
  }

  private async logits(s: Stream, scope: TensorScope, x: Tensor, cu: number[], all: boolean): Promise<Float32Array[]> {
    const { spec, weights } = this;
    const rows = all ? Array.from({ length: cu[cu.length - 1] }, (_, i) => i) : cu.slice(1).map((end) => end - 1);
    const idx = scope.adopt(tensorFromInt32(this.device, s, [rows.length], Int32Array.from(rows)));
    const picked = scope.tensor(this.actDtype, [rows.length, spec.hiddenSize]);
    ops.gatherRows(s, picked, x, idx);
    ops.rmsnorm(s, picked, picked, weights.finalNorm, spec.rmsNormEps);
    const out = scope.tensor('f32', [rows.length, spec.vocabSize]);
    ops.matmul(s, out, picked, weights.lmHead);
    const flat = (await out.read(s)) as Float32Array;
    const V = spec.vocabSize;
    return cu.slice(1).map((end, b) => {
      const start = all ? cu[b] : b;
      const stop = all ? end : b + 1;
      return flat.slice(start * V, stop * V);
    });
  }

  dispose(): void {
    this.stream.dispose();
  }
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
