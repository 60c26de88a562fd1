// How the ranks of a cluster exchange tokens. The MoE layer speaks only to this interface; NCCL (GPU)
// and the gRPC data plane (CPU backend) implement it, and LocalCommunicator serves a single rank.
import type { Stream, Tensor } from '../native/device';

export interface Communicator {
  readonly rank: number;
  readonly world: number;
  /**
   * All-to-all of rows. `send` holds, in peer order, sendRows[p] rows for each peer p; `recv`
   * receives, in peer order, recvRows[p] rows from each peer p. Row width and dtype are those of
   * the tensors (same on both sides). Enqueued in `stream` order; the promise resolves once the op
   * is enqueued (GPU) or done (CPU), after which later ops on `stream` may read `recv`.
   * Every rank must call it, also with all counts zero.
   */
  allToAll(stream: Stream, send: Tensor, sendRows: number[], recv: Tensor, recvRows: number[]): Promise<void>;
  /** Every rank contributes `local` (same length everywhere); returns all ranks' arrays in rank order. */
  allGather(local: Int32Array): Promise<Int32Array[]>;
  close(): Promise<void>;
}

/** The communicator of a one-rank cluster: everything stays local. */
export class LocalCommunicator implements Communicator {
  readonly rank = 0;
  readonly world = 1;
  async allToAll(stream: Stream, send: Tensor, sendRows: number[], recv: Tensor, recvRows: number[]): Promise<void> {
    if (sendRows[0] !== recvRows[0]) throw new Error(`local all-to-all: send ${sendRows[0]} rows, recv ${recvRows[0]}`);
    if (sendRows[0] > 0) {
      const { copy } = await import('../native/ops');
      copy(stream, recv.rows(0, recvRows[0]), send.rows(0, sendRows[0]));
    }
  }
  async allGather(local: Int32Array): Promise<Int32Array[]> {
    return [local];
  }
  async close(): Promise<void> {}
}
