// Builds a rank's Communicator once the cluster has assembled: LocalCommunicator for one rank, the
// gRPC data plane on the CPU backend, NCCL on CUDA. NCCL needs one secret shared by every rank (its
// unique id): rank 0 makes it before joining, sends it with its Join request, and the router hands
// it to every rank in the assignment (`bootstrap`).
import * as path from 'node:path';
import type { Logger } from '../rpc/log';
import type { InternalChannel } from '../rpc/security';
import type { BackendKind } from '../native/addonTypes';
import { LocalCommunicator, type Communicator } from './communicator';
import { DataPlane } from './dataPlane';
import { GrpcCommunicator } from './grpcCommunicator';

export interface CommunicatorSetup {
  rank: number;
  world: number;
  backend: BackendKind;
  deviceIndex: number;
  /** host:port of every rank's RankService, in rank order. */
  peers: readonly string[];
  clusterId: string;
  /** Rank 0's communicatorBootstrap(), as the router relayed it. */
  bootstrap: Uint8Array;
  collectiveTimeoutMs: number;
  /** How the CPU data plane reaches peers (the cluster secret, mutual TLS). */
  channel?: InternalChannel;
  logger?: Logger;
}

export interface BuiltCommunicator {
  comm: Communicator;
  /** The data plane whose inbound streams the rank's RankService.Exchange must hand over (CPU, world > 1). */
  dataPlane: DataPlane | null;
}

/**
 * What the NCCL module (src/comm/ncclCommunicator.ts, CUDA backend) must export for this factory.
 * It is loaded only on CUDA clusters of more than one rank.
 */
export interface NcclModule {
  /** ncclGetUniqueId, as bytes (rank 0 only). */
  ncclUniqueId(): Uint8Array;
  /** ncclCommInitRank on the rank's device; every rank calls it with the same uniqueId. */
  createNcclCommunicator(opts: { rank: number; world: number; uniqueId: Uint8Array; deviceIndex: number }): Promise<Communicator>;
}

function loadNccl(): NcclModule {
  // Resolved at run time: the module exists only in builds with the CUDA backend's TypeScript side.
  return require(path.join(__dirname, 'ncclCommunicator')) as NcclModule;
}

/** Rank 0, before it joins: the bytes every rank will need (empty unless NCCL). */
export async function communicatorBootstrap(backend: BackendKind, world: number): Promise<Uint8Array> {
  if (backend !== 'cuda' || world === 1) return new Uint8Array(0);
  return loadNccl().ncclUniqueId();
}

export async function buildCommunicator(setup: CommunicatorSetup): Promise<BuiltCommunicator> {
  if (setup.world === 1) return { comm: new LocalCommunicator(), dataPlane: null };
  if (setup.backend === 'cuda') {
    if (setup.bootstrap.byteLength === 0) throw new Error('NCCL communicator: rank 0 sent no unique id');
    const comm = await loadNccl().createNcclCommunicator({
      rank: setup.rank,
      world: setup.world,
      uniqueId: setup.bootstrap,
      deviceIndex: setup.deviceIndex,
    });
    return { comm, dataPlane: null };
  }
  const dataPlane = new DataPlane({
    rank: setup.rank,
    world: setup.world,
    clusterId: setup.clusterId,
    peers: setup.peers,
    collectiveTimeoutMs: setup.collectiveTimeoutMs,
    channel: setup.channel,
    logger: setup.logger,
  });
  dataPlane.connect();
  return { comm: new GrpcCommunicator(dataPlane), dataPlane };
}
