// The dispatch the usual expert-parallel stacks run: one row per (token, slot) pair. Expert ids are
// virtual (placement.ts) and the router's rows are in that order, so moe_permute sorts a unit's rows
// by expert group, then destination rank: each group's rows to a peer are contiguous, and a chunk's
// dispatch is one all-to-all per group it holds (plan.ts ChunkExchange).
//
// A unit is what one permute sorts and one unpermute adds back: a chunk's own tokens (token axis), or
// every token of the layer shared by all chunks (expert axis: the first chunk permutes them all, each
// chunk sends its groups' slices and combines back into the same rows, the last one un-permutes).
import type { Stream, Tensor } from '../../native/device';
import * as ops from '../../native/ops';
import { sum } from '../../util/arrays';
import type { ChunkExchange, ChunkPlan, MoePlan } from '../plan/plan';
import type { MoeLayerContext } from './context';
import { checkHandle, type Dispatcher, type DispatchHandle, type ExpertFfn } from './dispatcher';
import { openSpan } from './spans';
import type { MoeWeights } from './weights';

interface PermuteUnit {
  tokenStart: number;
  tokens: number;
  /** The chunk that permutes (the unit's first) and the one that un-permutes (its last). */
  firstChunk: number;
  lastChunk: number;
  /** Rows sorted by virtual expert, and where each (token, slot) went. */
  permuted?: Tensor;
  rowMap?: Tensor;
  /** The expert outputs back from the combines, in the permuted rows' order. */
  combined?: Tensor;
}

export interface PairsHandle extends DispatchHandle {
  readonly owner: PairsDispatcher;
  combined: boolean;
  /** The chunk's exchanges: rows sent and received per peer, and where they sit in both buffers. */
  readonly exchanges: readonly ChunkExchange[];
  /** The chunk's first row in its unit's permuted buffer, and its row count there. */
  readonly rowStart: number;
  readonly rows: number;
  /** The rows received (alone: the chunk's slice of the permuted buffer itself). */
  readonly received: Tensor;
  /** The FFN's outputs, rows as received (alone: the slice of the combined buffer itself). */
  out?: Tensor;
}

/** A unit's rows sorted by expert (moe_permute), made before the plan by permuteEarly, and the rows per expert. */
export interface EarlyPermute {
  tokens: number;
  permuted: Tensor;
  rowMap: Tensor;
  counts: Tensor;
}

/**
 * The permute of every token of the layer, enqueued on `s` before the plan exists: alone (world 1) every plan
 * but a fixed one of several chunks is one chunk of every token, whose permute needs nothing the plan decides.
 * Enqueued after the counts' read, the GPU sorts the rows while the host waits for the counts and plans.
 */
export function permuteEarly(ctx: MoeLayerContext, h: Tensor, topkIdx: Tensor, s: Stream): EarlyPermute {
  const T = h.shape[0];
  const permuted = ctx.scope.tensor(ctx.actDtype, [T * ctx.routing.topK, h.shape[1]]);
  const rowMap = ctx.scope.tensor('i32', [T, ctx.routing.topK]);
  const counts = ctx.scope.tensor('i32', [ctx.routing.numExperts]);
  if (T > 0) {
    const sp = openSpan(ctx.onSpan, s);
    ops.moePermute(s, permuted, rowMap, counts, h, topkIdx);
    sp?.end('compute', 'permute 0', { tokens: T });
  }
  return { tokens: T, permuted, rowMap, counts };
}

export class PairsDispatcher implements Dispatcher<PairsHandle> {
  private readonly units: PermuteUnit[];

  constructor(
    private readonly ctx: MoeLayerContext,
    private readonly plan: MoePlan,
    private readonly io: { h: Tensor; out: Tensor; topkIdx: Tensor; topkW: Tensor },
    private readonly w: MoeWeights,
    early?: EarlyPermute,
  ) {
    const unitOf = (c: ChunkPlan): PermuteUnit => ({
      tokenStart: c.tokenStart,
      tokens: c.tokenEnd - c.tokenStart,
      firstChunk: c.index,
      lastChunk: c.index,
    });
    // The expert axis: one unit of every token (each chunk's token range is the whole layer's).
    const all = plan.axis === 'experts' ? { ...unitOf(plan.chunks[0]), lastChunk: plan.chunks.length - 1 } : undefined;
    this.units = plan.chunks.map((c) => all ?? unitOf(c));
    if (early) {
      const only = this.units[0];
      if (this.units.length !== 1 || only.tokenStart !== 0 || only.tokens !== early.tokens)
        throw new Error(`moe: a permute made before the plan fits one chunk of all ${early.tokens} tokens; the plan has ${this.units.length} chunks`);
      only.permuted = early.permuted;
      only.rowMap = early.rowMap;
    }
  }

  /** The unit's permute, by its first chunk (later chunks of the unit have nothing to sort). */
  permute(chunk: number, s: Stream): undefined {
    const unit = this.units[chunk];
    if (chunk !== unit.firstChunk) return;
    const { scope, actDtype, routing } = this.ctx;
    const k = routing.topK;
    const H = this.io.h.shape[1];
    unit.combined = scope.tensor(actDtype, [unit.tokens * k, H]);
    if (unit.permuted) return; // (made before the plan: permuteEarly)
    unit.permuted = scope.tensor(actDtype, [unit.tokens * k, H]);
    unit.rowMap = scope.tensor('i32', [unit.tokens, k]);
    if (unit.tokens === 0) return;
    const sp = openSpan(this.ctx.onSpan, s);
    const counts = scope.tensor('i32', [routing.numExperts]);
    const t0 = unit.tokenStart;
    ops.moePermute(s, unit.permuted, unit.rowMap, counts, this.io.h.rows(t0, unit.tokens), this.io.topkIdx.rows(t0, unit.tokens));
    sp?.end('compute', `permute ${chunk}`, { tokens: unit.tokens });
  }

  /** One all-to-all per exchange (group): its slice of the permuted rows to the peers owning its experts. */
  async dispatch(chunk: number, s: Stream): Promise<PairsHandle> {
    const { communicator, scope, actDtype } = this.ctx;
    const c = this.plan.chunks[chunk];
    const permuted = this.units[chunk].permuted!;
    const rowStart = c.exchanges.length > 0 ? c.exchanges[0].sendOffset : 0;
    const rows = sum(c.sentRows);
    const handle = { owner: this, combined: false, chunk, exchanges: c.exchanges, rowStart, rows };
    // Alone, the rows stay here, in the order the FFN takes them: the chunk's slice itself.
    if (communicator.world === 1) return { ...handle, received: permuted.rows(rowStart, rows) };
    const received = scope.tensor(actDtype, [sum(c.recvRows), this.io.h.shape[1]]);
    const sp = openSpan(this.ctx.onSpan, s);
    for (const x of c.exchanges) {
      const send = permuted.rows(x.sendOffset, sum(x.sentRows));
      await communicator.allToAll(s, send, x.sentRows, received.rows(x.recvOffset, sum(x.recvRows)), x.recvRows);
    }
    sp?.end(this.streamName(s), `dispatch ${chunk}`, { sent: rows, received: received.shape[0] });
    return { ...handle, received };
  }

  /** The experts' FFN over each exchange's rows, with the weights of the group's local experts (a view). */
  experts(handle: PairsHandle, s: Stream, ffn: ExpertFfn): void {
    const { scope, actDtype, communicator } = this.ctx;
    const x = handle.received;
    const kernel = this.plan.chunks[handle.chunk].kernel;
    // Alone, the outputs go straight where the combine would put them.
    handle.out =
      communicator.world === 1
        ? this.units[handle.chunk].combined!.rows(handle.rowStart, handle.rows)
        : scope.tensor(actDtype, [x.shape[0], this.io.h.shape[1]]);
    if (x.shape[0] === 0 || this.w.local.count === 0) return;
    const sp = openSpan(this.ctx.onSpan, s);
    const { gateUp, down } = this.w.experts;
    const whole = handle.exchanges.length === 1 && handle.exchanges[0].localCount === this.w.local.count;
    for (const ex of handle.exchanges) {
      const n = sum(ex.recvRows);
      if (n === 0 || ex.localCount === 0) continue;
      // One group holding every local expert (G = 1) uses the stacks themselves, not views of them.
      const experts = whole
        ? this.w.experts
        : { gateUp: gateUp.rows(ex.localFirst, ex.localCount), down: down.rows(ex.localFirst, ex.localCount) };
      ffn(s, x.rows(ex.recvOffset, n), experts, ex.segments, kernel, handle.out.rows(ex.recvOffset, n));
    }
    sp?.end('compute', `ffn ${handle.chunk}`, { rows: x.shape[0], kernel });
  }

  /** The dispatch reversed: each exchange's outputs back to the rows its inputs came from. */
  async combine(handle: PairsHandle, s: Stream): Promise<void> {
    checkHandle(handle, this);
    const { communicator } = this.ctx;
    if (communicator.world === 1) return; // the FFN wrote them in place
    const combined = this.units[handle.chunk].combined!;
    const sp = openSpan(this.ctx.onSpan, s);
    for (const x of handle.exchanges) {
      const back = combined.rows(x.sendOffset, sum(x.sentRows));
      await communicator.allToAll(s, handle.out!.rows(x.recvOffset, sum(x.recvRows)), x.recvRows, back, x.sentRows);
    }
    sp?.end(this.streamName(s), `combine ${handle.chunk}`, { rows: handle.received.shape[0] });
  }

  /** The unit's unpermute, by its last chunk: after its combine, so after every combine of the unit (one comm stream, in order). */
  unpermute(chunk: number, s: Stream, accumulate: boolean): void {
    const unit = this.units[chunk];
    if (chunk !== unit.lastChunk || unit.tokens === 0) return;
    const t0 = unit.tokenStart;
    const sp = openSpan(this.ctx.onSpan, s);
    ops.moeUnpermute(s, this.io.out.rows(t0, unit.tokens), unit.combined!, unit.rowMap!, this.io.topkW.rows(t0, unit.tokens), accumulate);
    sp?.end('compute', `unpermute ${chunk}`, { tokens: unit.tokens });
  }

  private streamName(s: Stream): 'compute' | 'comm' {
    return s === this.ctx.compute ? 'compute' : 'comm';
  }
}
