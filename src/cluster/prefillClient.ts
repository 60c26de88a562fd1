// A typed client of the public API: eps.v1.PrefillService and grpc.health.v1 (used by the CLI's
// `prefill` command and by the tests).
import * as net from 'node:net';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { metadataInterceptor } from '../rpc/security';
import { prefillService, type ClusterMetricsMsg, type ModelInfoMsg, type PrefillRequestMsg, type PrefillResponseMsg } from '../rpc/protos';

export type HealthStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;

interface PrefillServiceClient extends grpc.Client {
  Prefill(req: Partial<PrefillRequestMsg>, options: grpc.CallOptions, cb: Callback<PrefillResponseMsg>): grpc.ClientUnaryCall;
  GetModelInfo(req: object, options: grpc.CallOptions, cb: Callback<ModelInfoMsg>): grpc.ClientUnaryCall;
  GetMetrics(req: object, options: grpc.CallOptions, cb: Callback<ClusterMetricsMsg>): grpc.ClientUnaryCall;
}

interface HealthClient extends grpc.Client {
  Check(req: { service: string }, options: grpc.CallOptions, cb: Callback<{ status: HealthStatus }>): grpc.ClientUnaryCall;
}

export interface PrefillClientOptions {
  /** Sent as `authorization: Bearer <key>` on every call (a cluster launched with --api-key-file). */
  apiKey?: string;
  /** TLS: the PEM of the CA (or self-signed certificate) that signed the server's certificate; absent: plaintext. */
  tlsRootCert?: Buffer;
}

/**
 * TLS to `address`. To an IP address, the certificate is still checked against that address, but the TLS
 * server name (SNI) sent is a placeholder: an IP address is not a valid server name (RFC 6066), and Node 26
 * refuses to send one, which grpc-js 1.14 would otherwise do.
 */
function tlsToAddress(address: string, rootCert: Buffer): { credentials(): grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const host = /^\[(.*)\]:\d+$/.exec(address)?.[1] ?? address.replace(/:\d+$/, '');
  if (net.isIP(host) === 0) return { credentials: () => grpc.credentials.createSsl(rootCert), options: {} };
  return {
    credentials: () =>
      grpc.credentials.createSsl(rootCert, null, null, { checkServerIdentity: (_name, cert) => tls.checkServerIdentity(host, cert) }),
    options: { 'grpc.ssl_target_name_override': 'eps-moe.ip-address' },
  };
}

export interface CallOptions {
  /** Milliseconds from now until the call's deadline. */
  timeoutMs?: number;
}

export class PrefillClient {
  private readonly prefillClient: PrefillServiceClient;
  private readonly healthClient: HealthClient;

  constructor(
    readonly address: string,
    opts: PrefillClientOptions = {},
  ) {
    const Prefill = grpc.makeClientConstructor(prefillService(), 'PrefillService');
    const Health = grpc.makeClientConstructor(healthService as unknown as grpc.ServiceDefinition, 'Health');
    const tls = opts.tlsRootCert ? tlsToAddress(address, opts.tlsRootCert) : null;
    const credentials = () => tls?.credentials() ?? grpc.credentials.createInsecure();
    const interceptors = opts.apiKey !== undefined ? [metadataInterceptor('authorization', `Bearer ${opts.apiKey}`)] : [];
    const options = {
      'grpc.max_send_message_length': 64 << 20,
      'grpc.max_receive_message_length': 64 << 20,
      interceptors,
      ...tls?.options,
    };
    this.prefillClient = new Prefill(address, credentials(), options) as unknown as PrefillServiceClient;
    // A channel of its own: health probes must not queue behind large prefill messages.
    this.healthClient = new Health(address, credentials(), {
      'grpc.use_local_subchannel_pool': 1,
      interceptors,
      ...tls?.options,
    }) as unknown as HealthClient;
  }

  prefill(req: Partial<PrefillRequestMsg>, opts: CallOptions = {}): Promise<PrefillResponseMsg> {
    return unary((cb) => this.prefillClient.Prefill(req, callOptions(opts), cb));
  }

  modelInfo(opts: CallOptions = {}): Promise<ModelInfoMsg> {
    return unary((cb) => this.prefillClient.GetModelInfo({}, callOptions(opts), cb));
  }

  metrics(opts: CallOptions = {}): Promise<ClusterMetricsMsg> {
    return unary((cb) => this.prefillClient.GetMetrics({}, callOptions(opts), cb));
  }

  async health(service = '', opts: CallOptions = { timeoutMs: 5000 }): Promise<HealthStatus> {
    const res = await unary<{ status: HealthStatus }>((cb) => this.healthClient.Check({ service }, callOptions(opts), cb));
    return res.status;
  }

  /** Resolves once the channel is connected (the server listens), or rejects after timeoutMs. */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) =>
      this.prefillClient.waitForReady(Date.now() + timeoutMs, (err) => (err ? reject(err) : resolve())),
    );
  }

  close(): void {
    this.prefillClient.close();
    this.healthClient.close();
  }
}

function callOptions(opts: CallOptions): grpc.CallOptions {
  return opts.timeoutMs === undefined ? {} : { deadline: Date.now() + opts.timeoutMs };
}

function unary<T>(call: (cb: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => call((err, res) => (err ? reject(err) : resolve(res as T))));
}
