// Errors of the cluster, each a class with a code and the gRPC status it maps to, so that the edge
// (router handlers, CLI) turns them into answers without string matching.
import { status } from '@grpc/grpc-js';

export type ClusterErrorCode =
  | 'INVALID_ARGUMENT'
  | 'QUEUE_FULL'
  | 'BYTES_IN_FLIGHT'
  | 'DEADLINE_EXCEEDED'
  | 'CANCELLED'
  | 'UNAVAILABLE'
  | 'RANK_LOST'
  | 'RENDEZVOUS_FAILED'
  | 'PEER_LOST'
  | 'COLLECTIVE_TIMEOUT'
  | 'LAUNCH_FAILED'
  | 'NON_FINITE';

export abstract class ClusterError extends Error {
  abstract readonly code: ClusterErrorCode;
  abstract readonly grpcStatus: status;
}

/** A request the server refuses; `field` names the offending field (e.g. "sequences[2].ids[5]"). */
export class InvalidArgumentError extends ClusterError {
  readonly code = 'INVALID_ARGUMENT';
  readonly grpcStatus = status.INVALID_ARGUMENT;
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'InvalidArgumentError';
  }
}

export class QueueFullError extends ClusterError {
  readonly code = 'QUEUE_FULL';
  readonly grpcStatus = status.RESOURCE_EXHAUSTED;
  constructor(limit: number) {
    super(`request queue is full (${limit} sequences waiting); retry later`);
    this.name = 'QueueFullError';
  }
}

/** Requests already in the router total too many bytes: this one is refused before it is decoded. */
export class BytesInFlightError extends ClusterError {
  readonly code = 'BYTES_IN_FLIGHT';
  readonly grpcStatus = status.RESOURCE_EXHAUSTED;
  constructor(bytes: number, limit: number) {
    super(`requests of ${limit} bytes in all are already being served; this one (${bytes} bytes) is refused before decoding; retry later`);
    this.name = 'BytesInFlightError';
  }
}

export class DeadlineExceededError extends ClusterError {
  readonly code = 'DEADLINE_EXCEEDED';
  readonly grpcStatus = status.DEADLINE_EXCEEDED;
  constructor(where: string) {
    super(`deadline exceeded ${where}`);
    this.name = 'DeadlineExceededError';
  }
}

export class CancelledError extends ClusterError {
  readonly code = 'CANCELLED';
  readonly grpcStatus = status.CANCELLED;
  constructor() {
    super('cancelled by the client');
    this.name = 'CancelledError';
  }
}

/** The cluster cannot serve: still loading, draining, or broken. */
export class UnavailableError extends ClusterError {
  readonly code = 'UNAVAILABLE';
  readonly grpcStatus = status.UNAVAILABLE;
  constructor(reason: string) {
    super(reason);
    this.name = 'UnavailableError';
  }
}

/** A rank process went away (or failed a step); the cluster cannot run further steps. */
export class RankLostError extends ClusterError {
  readonly code = 'RANK_LOST';
  readonly grpcStatus = status.UNAVAILABLE;
  constructor(
    readonly rank: number,
    reason: string,
  ) {
    super(`rank ${rank} lost: ${reason}`);
    this.name = 'RankLostError';
  }
}

export class RendezvousError extends ClusterError {
  readonly code = 'RENDEZVOUS_FAILED';
  readonly grpcStatus = status.FAILED_PRECONDITION;
  constructor(reason: string) {
    super(reason);
    this.name = 'RendezvousError';
  }
}

/** The data plane lost a peer: its stream closed or failed. */
export class PeerLostError extends ClusterError {
  readonly code = 'PEER_LOST';
  readonly grpcStatus = status.UNAVAILABLE;
  constructor(
    readonly peer: number,
    reason: string,
  ) {
    super(`data plane: peer rank ${peer} lost: ${reason}`);
    this.name = 'PeerLostError';
  }
}

export class CollectiveTimeoutError extends ClusterError {
  readonly code = 'COLLECTIVE_TIMEOUT';
  readonly grpcStatus = status.UNAVAILABLE;
  constructor(collective: number, peer: number, ms: number) {
    super(`data plane: collective ${collective} got nothing from rank ${peer} in ${ms} ms`);
    this.name = 'CollectiveTimeoutError';
  }
}

/** The model computed NaN or Inf for a sequence (its weights or its numerics): the request fails, the cluster goes on. */
export class NonFiniteResultError extends ClusterError {
  readonly code = 'NON_FINITE';
  readonly grpcStatus = status.INTERNAL;
  constructor(what: string) {
    super(what);
    this.name = 'NonFiniteResultError';
  }
}

export class LaunchError extends ClusterError {
  readonly code = 'LAUNCH_FAILED';
  readonly grpcStatus = status.UNAVAILABLE;
  constructor(reason: string) {
    super(reason);
    this.name = 'LaunchError';
  }
}

/** The gRPC status an error maps to at the edge: ClusterErrors carry theirs, anything else is INTERNAL. */
export function grpcStatusOf(err: unknown): status {
  return err instanceof ClusterError ? err.grpcStatus : status.INTERNAL;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
