// Rendezvous: ranks join (eps.v1.CoordinatorService.Join) until the world is complete, then every
// rank gets its assignment (rank, world, every peer's address, the communicator bootstrap bytes).
// Each rank's Join stream stays open for the life of the cluster: it closing is how the router
// learns, at once, that a rank process is gone.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { RankLostError, RendezvousError } from '../rpc/errors';
import type { Logger } from '../rpc/log';
import { peerHost } from './peerAddress';
import type { ClusterAssignmentMsg, JoinEventMsg, JoinRequestMsg } from '../rpc/protos';

export interface JoinedRank {
  rank: number;
  /** host:port of its RankService. */
  address: string;
  pid: number;
  hostname: string;
  nodeRank: number;
  localRank: number;
}

type JoinCall = grpc.ServerWritableStream<JoinRequestMsg, JoinEventMsg>;

interface Member {
  info: JoinedRank;
  call: JoinCall;
  bootstrap: Buffer;
}

export class Coordinator {
  readonly clusterId = randomUUID();
  private readonly members = new Map<number, Member>();
  private assembled = false;
  private closed = false;
  /** The cluster already failed: ranks going away now are being stopped, not lost. */
  private failed = false;
  private readonly lostListeners: ((err: RankLostError) => void)[] = [];
  private resolveAssembled!: (ranks: JoinedRank[]) => void;
  private rejectAssembled!: (err: Error) => void;
  /** Resolves with every rank, in rank order, once all have joined. */
  readonly whenAssembled: Promise<JoinedRank[]>;

  constructor(
    readonly world: number,
    readonly backend: string,
    private readonly logger: Logger,
  ) {
    this.whenAssembled = new Promise((resolve, reject) => {
      this.resolveAssembled = resolve;
      this.rejectAssembled = reject;
    });
    this.whenAssembled.catch(() => undefined); // the launcher awaits it; an early failure is not unhandled
  }

  /** Called once per lost rank after assembly (its Join stream closed or failed). */
  onRankLost(listener: (err: RankLostError) => void): void {
    this.lostListeners.push(listener);
  }

  /** eps.v1.CoordinatorService.Join */
  readonly join = (call: JoinCall): void => {
    const req = call.request;
    const refuse = (details: string): void => {
      this.logger.warn({ rank: req.rank, details }, 'join refused');
      // grpc-js turns an 'error' emitted on a server stream into the call's status.
      call.emit('error', { code: grpc.status.FAILED_PRECONDITION, details });
    };
    if (this.closed) return refuse('the cluster is stopping');
    if (this.assembled) return refuse(`the cluster already has its ${this.world} ranks`);
    if (req.worldSize !== this.world) return refuse(`rank ${req.rank} expects world size ${req.worldSize}; the router has ${this.world}`);
    if (!Number.isInteger(req.rank) || req.rank < 0 || req.rank >= this.world)
      return refuse(`rank ${req.rank} is outside [0, ${this.world})`);
    if (req.backend !== this.backend) return refuse(`rank ${req.rank} runs backend ${req.backend}; the cluster runs ${this.backend}`);
    if (this.members.has(req.rank)) return refuse(`rank ${req.rank} has already joined`);
    if (!(req.port > 0 && req.port < 65536)) return refuse(`rank ${req.rank} gave no port`);

    const host = req.host ? req.host : peerHost(call.getPeer());
    const info: JoinedRank = {
      rank: req.rank,
      address: `${host}:${req.port}`,
      pid: req.pid,
      hostname: req.hostname,
      nodeRank: req.nodeRank,
      localRank: req.localRank,
    };
    const member: Member = { info, call, bootstrap: req.commBootstrap };
    this.members.set(req.rank, member);
    this.logger.info({ rank: info.rank, address: info.address, pid: info.pid, hostname: info.hostname }, 'rank joined');

    let gone = false;
    const onGone = (why: string): void => {
      if (gone) return;
      gone = true;
      if (!this.assembled) {
        // Before assembly a rank may come and go (e.g. restarted by its node's launcher).
        if (this.members.get(req.rank) === member) this.members.delete(req.rank);
        this.logger.warn({ rank: req.rank, why }, 'rank left before the cluster assembled');
        return;
      }
      if (this.closed) return;
      if (this.failed) {
        this.logger.info({ rank: req.rank, why }, 'rank left the failed cluster');
        return;
      }
      const err = new RankLostError(req.rank, why);
      this.logger.error({ rank: req.rank, why }, 'rank lost');
      for (const l of this.lostListeners) l(err);
    };
    call.on('cancelled', () => onGone('its connection to the router closed'));
    call.on('error', (err: Error) => onGone(`its join stream failed: ${err.message}`));
    call.on('close', () => onGone('its join stream closed'));

    if (this.members.size === this.world) this.assemble();
  };

  /** From now on ranks that go away are expected (the cluster failed and is being torn down). */
  markFailed(): void {
    this.failed = true;
  }

  /**
   * Ends every Join stream: with OK for a planned stop (ranks exit 0), or with UNAVAILABLE and
   * `failure` when the cluster failed (ranks exit non-zero, and so do the launchers of other nodes).
   */
  release(failure?: string): void {
    if (this.closed) return;
    this.closed = true;
    this.rejectAssembled(new RendezvousError('the cluster stopped before every rank joined'));
    for (const m of this.members.values()) {
      if (failure === undefined) m.call.end();
      else m.call.emit('error', { code: grpc.status.UNAVAILABLE, details: `the cluster failed: ${failure}` });
    }
  }

  /** Fails a rendezvous still waiting (e.g. on a timeout). */
  abort(reason: string): void {
    if (this.assembled) return;
    this.rejectAssembled(new RendezvousError(reason));
    this.release();
  }

  private assemble(): void {
    this.assembled = true;
    const ranks = [...this.members.values()].map((m) => m.info).sort((a, b) => a.rank - b.rank);
    const bootstrap = this.members.get(0)?.bootstrap ?? Buffer.alloc(0);
    const peers = ranks.map((r) => ({ rank: r.rank, address: r.address }));
    for (const m of this.members.values()) {
      const assignment: ClusterAssignmentMsg = {
        rank: m.info.rank,
        worldSize: this.world,
        peers,
        commBootstrap: bootstrap,
        clusterId: this.clusterId,
      };
      m.call.write({ assignment });
    }
    this.logger.info({ world: this.world, clusterId: this.clusterId }, 'cluster assembled');
    this.resolveAssembled(ranks);
  }
}
