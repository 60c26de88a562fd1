// eps.v1.PrefillService: admission (validation), hand-off to the request queue, and the mapping of
// errors to gRPC statuses. Bytes that do not decode as a PrefillRequest are INVALID_ARGUMENT too
// (grpc-js would answer INTERNAL), so that garbage never looks like a server fault. Admission by bytes
// comes first, in the decoder: a request that would take the bytes of requests in the router past the
// budget is refused (RESOURCE_EXHAUSTED) without being decoded; its bytes count until it is answered.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { BytesInFlightError, ClusterError, InvalidArgumentError, grpcStatusOf, messageOf } from '../rpc/errors';
import type { Logger } from '../rpc/log';
import { prefillService, type ClusterMetricsMsg, type ModelInfoMsg, type PrefillRequestMsg, type PrefillResponseMsg } from '../rpc/protos';
import type { RequestHandle } from './requestQueue';
import type { AdmittedRequest } from './validate';

/** Bytes (on the wire) of the requests in the router, from their decoding until their answer. */
export class ByteBudget {
  private used = 0;
  constructor(readonly limit: number) {}
  get inUse(): number {
    return this.used;
  }
  /** Takes `bytes` if they fit (a request alone always fits an empty budget); else null. */
  take(bytes: number): { lease: Lease; owner: object } | null {
    if (this.used > 0 && this.used + bytes > this.limit) return null;
    this.used += bytes;
    const lease = new Lease(() => (this.used -= bytes));
    // Backstop: a call cancelled between decoding and its handler never releases; its message being
    // collected does (`owner` travels with the decoded message and nothing else holds it).
    const owner = {};
    leases.register(owner, lease);
    return { lease, owner };
  }
}

class Lease {
  private released = false;
  constructor(private readonly giveBack: () => void) {}
  release(): void {
    if (this.released) return;
    this.released = true;
    this.giveBack();
  }
}

const leases = new FinalizationRegistry<Lease>((lease) => lease.release());

/** What the decoder hands the handler: a request, bytes that are not one, or a refusal by bytes. */
type Received =
  | { kind: 'request'; message: PrefillRequestMsg; lease: Lease; owner: object }
  | { kind: 'malformed'; reason: string; lease: Lease; owner: object }
  | { kind: 'overBudget'; bytes: number; limit: number };

export interface PrefillBackend {
  admit(req: PrefillRequestMsg): AdmittedRequest;
  submit(req: AdmittedRequest, timeoutMs: number): RequestHandle;
  modelInfo(): ModelInfoMsg;
  metrics(): Promise<ClusterMetricsMsg>;
}

/** The service definition with a decoder that never throws and that admits by bytes before decoding. */
export function tolerantPrefillService(budget: ByteBudget): grpc.ServiceDefinition {
  const def = prefillService();
  const prefill = def.Prefill;
  return {
    ...def,
    Prefill: {
      ...prefill,
      requestDeserialize: (bytes: Buffer): Received => {
        const taken = budget.take(bytes.length);
        if (!taken) return { kind: 'overBudget', bytes: bytes.length, limit: budget.limit };
        try {
          return { kind: 'request', message: prefill.requestDeserialize(bytes) as PrefillRequestMsg, ...taken };
        } catch (err) {
          return { kind: 'malformed', reason: messageOf(err), ...taken };
        }
      },
    },
  };
}

export function prefillHandlers(backend: PrefillBackend, logger: Logger): grpc.UntypedServiceImplementation {
  // Refusals are counted in the metrics; the log gets at most one line a second per cause (a flood of bad
  // requests must not flood the log), saying how many were left out since the last line.
  const lastLogged = new Map<string, { at: number; skipped: number }>();
  const logRefusal = (err: ClusterError, requestId: string): void => {
    const now = Date.now();
    const seen = lastLogged.get(err.code);
    if (seen && now - seen.at < 1000) {
      seen.skipped++;
      return;
    }
    lastLogged.set(err.code, { at: now, skipped: 0 });
    const fields = { requestId, code: err.code, details: err.message, notLogged: seen?.skipped ?? 0 };
    if (err.grpcStatus === grpc.status.INTERNAL) logger.error(fields, 'prefill failed (logged at most once a second per cause)');
    else logger.info(fields, 'prefill refused (logged at most once a second per cause)');
  };
  const prefill: grpc.handleUnaryCall<Received, PrefillResponseMsg> = (call, callback) => {
    const received = call.request;
    const fail = (err: unknown, requestId: string): void => {
      if (received.kind !== 'overBudget') received.lease.release();
      const code = grpcStatusOf(err);
      if (!(err instanceof ClusterError)) logger.error({ requestId, err: messageOf(err) }, 'prefill failed unexpectedly');
      else logRefusal(err, requestId);
      callback({ code, details: messageOf(err) });
    };
    if (received.kind === 'overBudget') {
      fail(new BytesInFlightError(received.bytes, received.limit), '');
      return;
    }
    if (received.kind === 'malformed') {
      fail(new InvalidArgumentError('request', `not an eps.v1.PrefillRequest (${received.reason})`), '');
      return;
    }
    const raw = received.message;
    let admitted: AdmittedRequest;
    try {
      admitted = backend.admit(raw);
    } catch (err) {
      fail(err, raw.requestId ?? '');
      return;
    }
    if (!admitted.requestId) admitted = { ...admitted, requestId: randomUUID() };
    let handle: RequestHandle;
    try {
      handle = backend.submit(admitted, remainingMs(call.getDeadline()));
    } catch (err) {
      fail(err, admitted.requestId);
      return;
    }
    call.on('cancelled', () => handle.cancel());
    handle.done.then(
      (res) => {
        logger.debug(
          { requestId: res.requestId, sequences: res.sequences.length, queueMs: res.queueMs, computeMs: res.computeMs },
          'prefill done',
        );
        received.lease.release();
        callback(null, res);
      },
      (err: unknown) => fail(err, admitted.requestId),
    );
  };
  const getModelInfo: grpc.handleUnaryCall<object, ModelInfoMsg> = (_call, callback) => callback(null, backend.modelInfo());
  const getMetrics: grpc.handleUnaryCall<object, ClusterMetricsMsg> = (_call, callback) => {
    backend.metrics().then(
      (m) => callback(null, m),
      (err: unknown) => callback({ code: grpcStatusOf(err), details: messageOf(err) }),
    );
  };
  return { Prefill: prefill, GetModelInfo: getModelInfo, GetMetrics: getMetrics } as grpc.UntypedServiceImplementation;
}

/** Milliseconds left until a gRPC deadline (Infinity when the client set none). */
function remainingMs(deadline: grpc.Deadline): number {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(at)) return Infinity;
  return at - Date.now();
}
