// W ranks in one process (one event loop, a device each): their collectives meet in a shared hub.
// For tests and CPU benchmarks of multi-rank code paths without processes; the k-th collective call
// of every rank is matched with the k-th of the others, as NCCL matches calls.
import type { Stream, Tensor } from '../native/device';
import type { Communicator } from './communicator';

interface Round {
  posts: unknown[];
  arrived: number;
  done: Promise<void>;
  release: () => void;
}

class Hub {
  private readonly rounds = new Map<number, Round>();

  constructor(readonly world: number) {}

  /** Posts `value` as `rank` in round `n`; resolves with every rank's value once all have posted. */
  async exchange<T>(n: number, rank: number, value: T): Promise<T[]> {
    let round = this.rounds.get(n);
    if (!round) {
      let release!: () => void;
      const done = new Promise<void>((r) => (release = r));
      round = { posts: new Array(this.world), arrived: 0, done, release };
      this.rounds.set(n, round);
    }
    round.posts[rank] = value;
    round.arrived++;
    if (round.arrived === this.world) {
      this.rounds.delete(n);
      round.release();
    }
    await round.done;
    return round.posts as T[];
  }
}

export class InProcessCommunicator implements Communicator {
  private calls = 0;

  private constructor(
    private readonly hub: Hub,
    readonly rank: number,
    readonly world: number,
  ) {}

  /** One communicator per rank, all joined. */
  static group(world: number): InProcessCommunicator[] {
    const hub = new Hub(world);
    return Array.from({ length: world }, (_, r) => new InProcessCommunicator(hub, r, world));
  }

  async allToAll(stream: Stream, send: Tensor, sendRows: number[], recv: Tensor, recvRows: number[]): Promise<void> {
    const rowBytes = send.shape[0] > 0 ? send.byteLength / send.shape[0] : 0;
    const totalSend = sendRows.reduce((a, b) => a + b, 0);
    const bytes = new Uint8Array(totalSend > 0 ? await send.rows(0, totalSend).bytes(stream) : new ArrayBuffer(0));
    const pieces: Uint8Array[] = [];
    let off = 0;
    for (const n of sendRows) {
      pieces.push(bytes.subarray(off * rowBytes, (off + n) * rowBytes));
      off += n;
    }
    const all = await this.hub.exchange(this.calls++, this.rank, pieces);
    let row = 0;
    all.forEach((fromPeer, p) => {
      const piece = fromPeer[this.rank];
      const n = recvRows[p];
      const recvRowBytes = recv.shape[0] > 0 ? recv.byteLength / recv.shape[0] : 0;
      if (piece.byteLength !== n * recvRowBytes) {
        throw new Error(`all-to-all: rank ${p} sent ${piece.byteLength} bytes to rank ${this.rank}, which expected ${n} rows`);
      }
      if (n > 0) recv.rows(row, n).upload(stream, piece);
      row += n;
    });
  }

  async allGather(local: Int32Array): Promise<Int32Array[]> {
    return this.hub.exchange(this.calls++, this.rank, Int32Array.from(local));
  }

  async close(): Promise<void> {}
}
