// The seam between moving rows and computing on them, in the shape the field settled on (vLLM's
// prepare/finalize vs experts, DeepEP's dispatch -> handle -> combine(handle)). A Dispatcher owns the
// all-to-all side of one planned layer: it sorts a chunk's rows for sending (permute), sends them to
// the ranks that hold their experts (dispatch, which returns a handle), feeds the received rows to the
// experts' FFN and folds the outputs back into what the combine returns (experts), sends them back
// (combine, which takes the handle: its counts and buffers are the dispatch's own), and adds each
// token's rows back into the layer's output (unpermute). Two implementations: pairsDispatcher.ts
// (a row per (token, expert) pair) and dedupDispatcher.ts (a row per (token, destination rank)).
import type { Event, Stream, Tensor } from '../../native/device';
import type { ExpertKernel } from '../../native/ops';
import type { MlpWeights } from './weights';

/**
 * The experts' SwiGLU FFN over rows in segments (segment i uses expert i % experts), written to out. The
 * segments' row counts on the host, or on the device (an i32 tensor: ops.expertMatmul says what that costs).
 */
export type ExpertFfn = (s: Stream, x: Tensor, experts: MlpWeights, segments: number[] | Tensor, kernel: ExpertKernel, out: Tensor) => void;

/** What a dispatch returns and its combine takes: one chunk's rows in flight. */
export interface DispatchHandle {
  readonly chunk: number;
}

export interface Dispatcher<H extends DispatchHandle = DispatchHandle> {
  /**
   * Step 'permute chunk' on the compute stream. Returns the event the chunk's dispatch waits for when
   * that is not simply the end of this step (the dedup dispatch's rows were made before the host sync).
   */
  permute(chunk: number, s: Stream): Event | undefined;
  /** The chunk's rows to the ranks holding their experts. */
  dispatch(chunk: number, s: Stream): Promise<H>;
  /** On the compute stream: the experts' FFN over the received rows, into what the combine sends back. */
  experts(handle: H, s: Stream, ffn: ExpertFfn): void;
  /** The FFN's outputs back to the rows they came from (once per handle). */
  combine(handle: H, s: Stream): Promise<void>;
  /** Step 'unpermute chunk' on the compute stream: tokens' rows added back into the layer's output, onto it or overwriting it. */
  unpermute(chunk: number, s: Stream, accumulate: boolean): void;
}

/** A handle may be combined once, by the dispatcher that made it. */
export function checkHandle(handle: { owner: unknown; combined: boolean; chunk: number }, dispatcher: unknown): void {
  if (handle.owner !== dispatcher) throw new Error(`combine: the handle of chunk ${handle.chunk} comes from another dispatcher`);
  if (handle.combined) throw new Error(`combine: chunk ${handle.chunk} was combined already`);
  handle.combined = true;
}
