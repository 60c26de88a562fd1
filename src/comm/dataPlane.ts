// The CPU backend's data plane: rank-to-rank gRPC streams that carry the bytes of collectives.
// Rank i opens one client stream (RankService.Exchange) to every peer j and writes, in order, the
// frames of every collective it sends to j; j's server side files them in a mailbox by
// (collective number, sender). Collectives are numbered in call order, which is the same on every
// rank (the MoE layer calls them in the same order everywhere), so no other matching is needed.
//
// Failure: a peer's stream closing or failing (its process died, the network went away) fails every
// pending and later collective at once with PeerLostError, so a step never hangs on a dead peer; a
// peer that is alive but silent for collectiveTimeoutMs fails it with CollectiveTimeoutError.
import * as grpc from '@grpc/grpc-js';
import { CollectiveTimeoutError, PeerLostError } from '../rpc/errors';
import type { Logger } from '../rpc/log';
import { rankService, type DataFrameMsg, type ExchangeSummaryMsg } from '../rpc/protos';
import { INSECURE_CHANNEL, type InternalChannel } from '../rpc/security';

/** Bytes per frame: well under gRPC's default 4 MiB message limit. */
export const FRAME_BYTES = 1 << 20;

export interface DataPlaneOptions {
  rank: number;
  world: number;
  clusterId: string;
  /** host:port of every rank's RankService, in rank order (this rank's own entry is not used). */
  peers: readonly string[];
  collectiveTimeoutMs: number;
  /** How streams to peers connect: the cluster secret on every call (their RankService refuses calls
   *  without it), mutual TLS when configured. Default: plaintext without a secret (tests of the plane alone). */
  channel?: InternalChannel;
  logger?: Logger;
}

interface Waiter {
  collective: number;
  from: number;
  resolve: (bytes: Uint8Array) => void;
  reject: (err: Error) => void;
}

/** Frames of one message being reassembled. */
interface Partial {
  chunks: Buffer[];
  received: number;
}

type ExchangeCall = grpc.ServerReadableStream<DataFrameMsg, ExchangeSummaryMsg>;
type ExchangeCallback = grpc.sendUnaryData<ExchangeSummaryMsg>;

export class DataPlane {
  readonly rank: number;
  readonly world: number;
  private readonly opts: DataPlaneOptions;
  private readonly outgoing = new Map<number, grpc.ClientWritableStream<DataFrameMsg>>();
  private readonly clients: grpc.Client[] = [];
  /** key `${collective}:${from}` -> complete message not yet asked for. */
  private readonly mailbox = new Map<string, Uint8Array>();
  private readonly partials = new Map<string, Partial>();
  private readonly waiters = new Map<string, Waiter>();
  private readonly inbound = new Map<number, ExchangeCall>();
  private nextCollective = 1;
  private failure: Error | null = null;
  private closing = false;

  constructor(opts: DataPlaneOptions) {
    if (opts.peers.length !== opts.world) throw new Error(`data plane: ${opts.peers.length} peer addresses for world ${opts.world}`);
    this.opts = opts;
    this.rank = opts.rank;
    this.world = opts.world;
  }

  /** Opens the outgoing stream to every peer. Streams carry a hello frame at once, so that both ends
   *  watch each other from the start (a peer that dies between steps is seen before the next step). */
  connect(): void {
    const Client = grpc.makeClientConstructor(rankService(), 'RankService');
    const channel = this.opts.channel ?? INSECURE_CHANNEL;
    for (let peer = 0; peer < this.world; peer++) {
      if (peer === this.rank) continue;
      const client = new Client(this.opts.peers[peer], channel.credentials, channel.options);
      this.clients.push(client);
      const call = (client as unknown as ExchangeClient).Exchange((err: grpc.ServiceError | null) => {
        if (err && !this.closing) this.fail(new PeerLostError(peer, `stream to it failed: ${err.message}`));
      });
      call.on('error', () => undefined); // surfaced through the callback above
      call.write(this.frame(0, 0, 1, Buffer.alloc(0)));
      this.outgoing.set(peer, call);
    }
  }

  /** RankService.Exchange: a peer's stream of frames to this rank. */
  acceptStream(call: ExchangeCall, callback: ExchangeCallback): void {
    let from = -1;
    let frames = 0;
    let answered = false;
    const answer: ExchangeCallback = (err, res) => {
      if (answered) return;
      answered = true;
      callback(err, res);
    };
    call.on('data', (f: DataFrameMsg) => {
      frames++;
      if (f.collective === 0) {
        if (f.clusterId !== this.opts.clusterId || f.fromRank >= this.world || f.fromRank === this.rank) {
          answer({
            code: grpc.status.FAILED_PRECONDITION,
            details: `data plane of rank ${this.rank}: refused hello from rank ${f.fromRank} of cluster ${f.clusterId}`,
          });
          return;
        }
        from = f.fromRank;
        this.inbound.set(from, call);
        return;
      }
      if (from < 0 || f.fromRank !== from) return;
      this.onFrame(f);
    });
    const onGone = (why: string): void => {
      if (from >= 0 && !this.closing) this.fail(new PeerLostError(from, why));
    };
    call.on('end', () => {
      answer(null, { frames });
      onGone('it closed its stream');
    });
    call.on('error', (err: Error) => onGone(`its stream failed: ${err.message}`));
    call.on('cancelled' as 'error', () => onGone('its stream was cancelled'));
  }

  /**
   * Takes the number of the next collective. Call it synchronously where the collective is called,
   * before any await, so that collectives keep call order even when their bytes are ready out of order.
   */
  reserve(): number {
    return this.nextCollective++;
  }

  /**
   * One collective: sends `perPeer[p]` to each peer p and resolves with what each peer sent to this
   * rank (this rank's own entry is `perPeer[rank]`, unchanged).
   */
  exchange(perPeer: readonly Uint8Array[], collective = this.reserve()): Promise<Uint8Array[]> {
    if (perPeer.length !== this.world) return Promise.reject(new Error(`data plane: ${perPeer.length} buffers for world ${this.world}`));
    if (this.failure) return Promise.reject(this.failure);
    for (let peer = 0; peer < this.world; peer++) {
      if (peer !== this.rank) this.send(peer, collective, perPeer[peer]);
    }
    const received: Promise<Uint8Array>[] = [];
    for (let peer = 0; peer < this.world; peer++) {
      received.push(peer === this.rank ? Promise.resolve(perPeer[peer]) : this.receive(collective, peer));
    }
    return Promise.all(received);
  }

  /** Every rank's `local`, in rank order. */
  allGather(local: Uint8Array, collective = this.reserve()): Promise<Uint8Array[]> {
    return this.exchange(new Array<Uint8Array>(this.world).fill(local), collective);
  }

  /** The error that broke the data plane, if any. */
  get failed(): Error | null {
    return this.failure;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.rejectAll(new Error('data plane closed'));
    for (const call of this.outgoing.values()) call.end();
    this.outgoing.clear();
    for (const client of this.clients) client.close();
  }

  private send(peer: number, collective: number, bytes: Uint8Array): void {
    const stream = this.outgoing.get(peer);
    if (!stream) throw new Error(`data plane: not connected to rank ${peer}`);
    const chunks = Math.max(1, Math.ceil(bytes.byteLength / FRAME_BYTES));
    for (let c = 0; c < chunks; c++) {
      const part = bytes.subarray(c * FRAME_BYTES, Math.min(bytes.byteLength, (c + 1) * FRAME_BYTES));
      stream.write(this.frame(collective, c, chunks, Buffer.from(part.buffer, part.byteOffset, part.byteLength)));
    }
  }

  private frame(collective: number, chunk: number, chunks: number, data: Buffer): DataFrameMsg {
    return { fromRank: this.rank, collective, chunk, chunks, data, clusterId: this.opts.clusterId };
  }

  private onFrame(f: DataFrameMsg): void {
    const key = `${f.collective}:${f.fromRank}`;
    let bytes: Uint8Array;
    if (f.chunks <= 1) {
      bytes = f.data;
    } else {
      const partial = this.partials.get(key) ?? { chunks: new Array<Buffer>(f.chunks), received: 0 };
      partial.chunks[f.chunk] = f.data;
      partial.received++;
      if (partial.received < f.chunks) {
        this.partials.set(key, partial);
        return;
      }
      this.partials.delete(key);
      bytes = Buffer.concat(partial.chunks);
    }
    const waiter = this.waiters.get(key);
    if (waiter) {
      this.waiters.delete(key);
      waiter.resolve(bytes);
    } else {
      this.mailbox.set(key, bytes);
    }
  }

  private receive(collective: number, from: number): Promise<Uint8Array> {
    const key = `${collective}:${from}`;
    const ready = this.mailbox.get(key);
    if (ready) {
      this.mailbox.delete(key);
      return Promise.resolve(ready);
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      // fail() rejects every waiter, this one included.
      const timer = setTimeout(
        () => this.fail(new CollectiveTimeoutError(collective, from, this.opts.collectiveTimeoutMs)),
        this.opts.collectiveTimeoutMs,
      );
      timer.unref();
      this.waiters.set(key, {
        collective,
        from,
        resolve: (b) => {
          clearTimeout(timer);
          resolve(b);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    this.opts.logger?.warn({ err: err.message }, 'data plane failed');
    this.rejectAll(err);
  }

  private rejectAll(err: Error): void {
    const waiters = [...this.waiters.values()];
    this.waiters.clear();
    for (const w of waiters) w.reject(err);
  }
}

/** The one method of the generated RankService client this file calls. */
interface ExchangeClient {
  Exchange(callback: (err: grpc.ServiceError | null, res?: ExchangeSummaryMsg) => void): grpc.ClientWritableStream<DataFrameMsg>;
}
