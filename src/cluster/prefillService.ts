// eps.v1.PrefillService: admission (validation), hand-off to the request queue, and the mapping of
// errors to gRPC statuses. Bytes that do not decode as a PrefillRequest are INVALID_ARGUMENT too
// (grpc-js would answer INTERNAL), so that garbage never looks like a server fault.
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { ClusterError, InvalidArgumentError, grpcStatusOf, messageOf } from '../rpc/errors';
import type { Logger } from '../rpc/log';
import { prefillService, type ClusterMetricsMsg, type ModelInfoMsg, type PrefillRequestMsg, type PrefillResponseMsg } from '../rpc/protos';
import type { RequestHandle } from './requestQueue';
import type { AdmittedRequest } from './validate';

/** What a request that did not decode becomes, so that the handler can answer INVALID_ARGUMENT. */
class MalformedMessage {
  constructor(readonly reason: string) {}
}

export interface PrefillBackend {
  admit(req: PrefillRequestMsg): AdmittedRequest;
  submit(req: AdmittedRequest, timeoutMs: number): RequestHandle;
  modelInfo(): ModelInfoMsg;
  metrics(): Promise<ClusterMetricsMsg>;
}

/** The service definition with a decoder that never throws. */
export function tolerantPrefillService(): grpc.ServiceDefinition {
  const def = prefillService();
  const prefill = def.Prefill;
  return {
    ...def,
    Prefill: {
      ...prefill,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return prefill.requestDeserialize(bytes);
        } catch (err) {
          return new MalformedMessage(messageOf(err));
        }
      },
    },
  };
}

export function prefillHandlers(backend: PrefillBackend, logger: Logger): grpc.UntypedServiceImplementation {
  const prefill: grpc.handleUnaryCall<PrefillRequestMsg | MalformedMessage, PrefillResponseMsg> = (call, callback) => {
    const fail = (err: unknown, requestId: string): void => {
      const code = grpcStatusOf(err);
      if (!(err instanceof ClusterError)) logger.error({ requestId, err: messageOf(err) }, 'prefill failed unexpectedly');
      else logger.info({ requestId, code: err.code, details: err.message }, 'prefill refused');
      callback({ code, details: messageOf(err) });
    };
    const raw = call.request;
    if (raw instanceof MalformedMessage) {
      fail(new InvalidArgumentError('request', `not an eps.v1.PrefillRequest (${raw.reason})`), '');
      return;
    }
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
