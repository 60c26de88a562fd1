// The router: the cluster's public face (eps.v1.PrefillService, grpc.health.v1, reflection) and its
// coordinator (rendezvous of ranks, model load, steps). It runs inside the launcher of node 0.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { ReflectionService } from '@grpc/reflection';
import type { ModelSpec } from '../model/config';
import type { BackendKind } from '../native/addonTypes';
import { SERVER_OPTIONS } from '../rpc/channelOptions';
import {
  apiKeyInterceptor,
  internalChannel,
  internalServerCredentials,
  internalServerOptions,
  publicServerCredentials,
  type InternalSecurity,
  type TlsMaterial,
} from '../rpc/security';
import { Coordinator, type JoinedRank } from './coordinator';
import { ClusterError, RendezvousError, UnavailableError, messageOf } from '../rpc/errors';
import type { ClusterTuning } from './tuning';
import type { Logger } from '../rpc/log';
import { ByteBudget, prefillHandlers, tolerantPrefillService } from './prefillService';
import { coordinatorService, prefillPackageDefinition, type LoadProgressMsg, type ModelInfoMsg, type StepResponseMsg } from '../rpc/protos';
import { RankClient } from './rankClient';
import type { ClusterMetrics } from './metrics';
import { RequestQueue } from './requestQueue';
import type { TextTokenizer } from './textTokenizer';
import { admitRequest, maxRequestBytes, type RequestLimits } from './validate';

export interface RouterOptions extends Pick<
  ClusterTuning,
  | 'maxTokensPerRank'
  | 'maxWaitMs'
  | 'maxQueuedSequences'
  | 'maxSequencesPerRequest'
  | 'maxTopLogprobs'
  | 'maxInflightRequestBytes'
  | 'stepTimeoutMs'
> {
  modelDir: string;
  spec: ModelSpec;
  tokenizer: TextTokenizer | null;
  backend: BackendKind;
  world: number;
  /** Public server. Port 0 picks a free one. */
  host: string;
  port: number;
  /** Rendezvous server (ranks join here). */
  coordinatorHost: string;
  coordinatorPort: number;
  security: RouterSecurity;
  logger: Logger;
  /** Prometheus metrics (metrics.ts): counted here, served by the launcher on --metrics-port. */
  metrics?: ClusterMetrics;
}

export interface RouterSecurity {
  /** The cluster secret (and mutual TLS) of the rendezvous server and of every call to a rank. */
  internal: InternalSecurity;
  /** TLS of the public server, or null: plaintext. */
  publicTls: TlsMaterial | null;
  /** Bearer tokens the public API requires (health probes excepted); empty: none required. */
  apiKeys: string[];
}

/** The rendezvous server's receive limit: a JoinRequest (its NCCL bootstrap is 128 bytes). */
const COORDINATOR_MAX_RECEIVE_BYTES = 64 << 10;

export type RouterState = 'starting' | 'loading' | 'serving' | 'draining' | 'stopped' | 'failed';

/** Weight loading over the whole cluster, in the engine's units (tensors), summed over ranks. */
export interface ClusterLoadProgress {
  loaded: number;
  total: number;
  ranksDone: number;
  world: number;
}

const HEALTH_SERVICES = ['', 'eps.v1.PrefillService'];

export class Router {
  private stateValue: RouterState = 'starting';
  private readonly health = new HealthImplementation(Object.fromEntries(HEALTH_SERVICES.map((s) => [s, 'NOT_SERVING'])));
  private readonly coordinator: Coordinator;
  private readonly requests: RequestQueue;
  private readonly limits: RequestLimits;
  private readonly publicServer: grpc.Server;
  private readonly coordinatorServer: grpc.Server;
  private readonly requestBytes: ByteBudget;
  /** The public server's receive limit: larger requests are refused by their length prefix. */
  readonly maxRequestBytes: number;
  private drainAborted: (() => void) | null = null;
  private ranks: RankClient[] = [];
  private joined: JoinedRank[] = [];
  private failureValue: ClusterError | null = null;
  private readonly failureListeners: ((err: ClusterError) => void)[] = [];
  publicAddress = '';
  coordinatorAddress = '';

  private constructor(private readonly opts: RouterOptions) {
    const { spec } = opts;
    this.coordinator = new Coordinator(opts.world, opts.backend, opts.logger);
    const bounds: [number, string][] = [
      [spec.maxPositions, "the model's max positions"],
      [opts.maxTokensPerRank, 'the tokens a rank takes per step'],
    ];
    if (spec.slidingWindow !== null) bounds.push([spec.slidingWindow, "the model's attention window"]);
    const [maxSequenceTokens, maxSequenceTokensReason] = bounds.reduce((a, b) => (b[0] < a[0] ? b : a));
    this.limits = {
      vocabSize: spec.vocabSize,
      maxSequenceTokens,
      maxSequenceTokensReason,
      maxSequencesPerRequest: opts.maxSequencesPerRequest,
      maxTopLogprobs: Math.min(opts.maxTopLogprobs, spec.vocabSize),
    };
    this.requests = new RequestQueue(
      { runStep: (stepId, perRank) => this.runStep(stepId, perRank) },
      {
        ranks: opts.world,
        maxTokensPerRank: opts.maxTokensPerRank,
        maxWaitMs: opts.maxWaitMs,
        maxQueuedSequences: opts.maxQueuedSequences,
        logger: opts.logger,
      },
    );
    this.maxRequestBytes = maxRequestBytes(this.limits, opts.tokenizer !== null);
    this.requestBytes = new ByteBudget(Math.max(opts.maxInflightRequestBytes, this.maxRequestBytes));
    const { security } = opts;
    this.publicServer = new grpc.Server({
      ...SERVER_OPTIONS,
      'grpc.max_receive_message_length': this.maxRequestBytes,
      // The metrics interceptor first (outermost): it sees the calls the API-key check refuses too.
      interceptors: [
        ...(opts.metrics ? [opts.metrics.interceptor()] : []),
        ...(security.apiKeys.length > 0 ? [apiKeyInterceptor(security.apiKeys, opts.logger)] : []),
      ],
    });
    opts.metrics?.attach({
      queuedSequences: () => this.requests.queuedSequences,
      inflightRequestBytes: () => this.requestBytes.inUse,
      ranks: () => Promise.all(this.ranks.map((r) => r.health().catch(() => null))).then((rs) => rs.filter((r) => r !== null)),
    });
    this.coordinatorServer = new grpc.Server(
      internalServerOptions(security.internal, SERVER_OPTIONS, COORDINATOR_MAX_RECEIVE_BYTES, opts.logger),
    );
    this.requests.onFatal((err) => this.enterFailure(err));
    this.coordinator.onRankLost((err) => this.requests.fail(err));
  }

  /** Binds the public and rendezvous servers; ranks may join from then on. */
  static async start(opts: RouterOptions): Promise<Router> {
    const router = new Router(opts);
    await router.bind();
    return router;
  }

  get state(): RouterState {
    return this.stateValue;
  }
  get failure(): ClusterError | null {
    return this.failureValue;
  }
  get ranksJoined(): readonly JoinedRank[] {
    return this.joined;
  }

  /** Called once if the cluster breaks (a rank lost, a step failed). */
  onFailure(listener: (err: ClusterError) => void): void {
    this.failureListeners.push(listener);
  }

  /** Waits for every rank to join, loads the model on all of them, then serves. */
  async bringUp(rendezvousTimeoutMs: number, onProgress?: (p: ClusterLoadProgress) => void): Promise<JoinedRank[]> {
    const timer = setTimeout(
      () => this.coordinator.abort(`only some of the ${this.opts.world} ranks joined within ${rendezvousTimeoutMs} ms`),
      rendezvousTimeoutMs,
    );
    try {
      this.joined = await this.coordinator.whenAssembled;
    } finally {
      clearTimeout(timer);
    }
    const channel = internalChannel(this.opts.security.internal);
    this.ranks = this.joined.map((r) => new RankClient(r.rank, r.address, channel));
    this.setState('loading');
    const progress: LoadProgressMsg[] = this.ranks.map(() => ({ loaded: 0, total: 0, done: false }));
    const report = (): void =>
      onProgress?.({
        loaded: progress.reduce((a, p) => a + p.loaded, 0),
        total: progress.reduce((a, p) => a + p.total, 0),
        ranksDone: progress.filter((p) => p.done).length,
        world: this.opts.world,
      });
    const loads = this.ranks.map((rank, r) =>
      rank.load(this.opts.modelDir, (p) => {
        progress[r] = p;
        report();
      }),
    );
    // A rank lost while loading must not leave bringUp waiting on the others.
    const lost = new Promise<never>((_, reject) => this.onFailure(reject));
    lost.catch(() => undefined); // a failure after bring-up is the launcher's business, not this promise's
    try {
      await Promise.race([Promise.all(loads), lost]);
    } catch (err) {
      const failure = err instanceof ClusterError ? err : new UnavailableError(`loading the model failed: ${messageOf(err)}`);
      this.requests.fail(failure);
      throw failure;
    }
    if (this.failureValue) throw this.failureValue;
    this.setState('serving');
    return this.joined;
  }

  /** Stops taking requests and waits (at most timeoutMs) for queued and running ones to finish. */
  async drain(timeoutMs: number): Promise<void> {
    if (this.stateValue === 'serving' || this.stateValue === 'loading' || this.stateValue === 'starting') this.setState('draining');
    this.requests.stopAccepting('the server is draining');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    const aborted = new Promise<void>((resolve) => (this.drainAborted = resolve));
    await Promise.race([this.requests.whenIdle(), timeout, aborted]);
    clearTimeout(timer);
    this.drainAborted = null;
    this.requests.close(new UnavailableError('the server stopped before this request ran'));
  }

  /** Ends a drain now (a second signal): what is queued or running fails UNAVAILABLE. */
  abortDrain(): void {
    this.drainAborted?.();
  }

  /** Asks every rank to shut down, ends the rendezvous, closes both servers. */
  async stop(reason: string): Promise<void> {
    if (this.stateValue === 'stopped') return;
    if (this.stateValue !== 'failed') this.setState('stopped');
    this.requests.close(new UnavailableError(`the server stopped: ${reason}`));
    // Ending the Join streams first: a rank exiting is then a planned stop, not a lost rank.
    this.coordinator.release(this.failureValue?.message);
    const failed = this.failureValue !== null;
    await Promise.allSettled(this.ranks.map((r) => r.shutdown(reason, failed, 3000)));
    for (const r of this.ranks) r.close();
    await Promise.all([shutdownServer(this.publicServer), shutdownServer(this.coordinatorServer)]);
    this.stateValue = 'stopped';
  }

  private async bind(): Promise<void> {
    const { opts } = this;
    this.coordinatorServer.addService(coordinatorService(), { Join: this.coordinator.join } as grpc.UntypedServiceImplementation);
    this.coordinatorAddress = await bindServer(
      this.coordinatorServer,
      opts.coordinatorHost,
      opts.coordinatorPort,
      internalServerCredentials(opts.security.internal),
    );

    this.publicServer.addService(
      tolerantPrefillService(this.requestBytes),
      prefillHandlers(
        {
          admit: (req) => admitRequest(req, this.limits, opts.tokenizer),
          submit: (req, timeoutMs) => {
            if (this.stateValue !== 'serving') throw new UnavailableError(this.unavailableReason());
            const handle = this.requests.submit(req, timeoutMs);
            const { metrics } = opts;
            if (metrics) {
              handle.done.then(
                (res) =>
                  metrics.answered(
                    res.sequences.length,
                    res.sequences.reduce((a, s) => a + s.tokenCount, 0),
                    res.queueMs,
                  ),
                () => undefined,
              );
            }
            return handle;
          },
          modelInfo: () => this.modelInfo(),
          metrics: async () => ({ ranks: await Promise.all(this.ranks.map((r) => r.health())) }),
        },
        opts.logger,
      ),
    );
    this.health.addToServer(this.publicServer);
    new ReflectionService(reflectedPackages()).addToServer(this.publicServer);
    this.publicAddress = await bindServer(this.publicServer, opts.host, opts.port, publicServerCredentials(opts.security.publicTls));
  }

  private async runStep(stepId: number, perRank: { ids: number[]; topLogprobs: number }[][]): Promise<StepResponseMsg[]> {
    const t0 = performance.now();
    const responses = await Promise.all(
      this.ranks.map((rank, r) =>
        rank.step({ stepId, sequences: perRank[r] }, this.opts.stepTimeoutMs).catch((err: unknown) => {
          throw new UnavailableError(`step ${stepId} failed on rank ${r}: ${messageOf(err)}`);
        }),
      ),
    );
    this.opts.metrics?.step(
      performance.now() - t0,
      responses.map((res) => res.computeMs),
    );
    const nonFinite = responses.reduce((a, res) => a + (res.nonfinite?.length ?? 0), 0);
    if (nonFinite > 0) this.opts.metrics?.nonFiniteSequences(nonFinite);
    return responses;
  }

  private modelInfo(): ModelInfoMsg {
    const { spec } = this.opts;
    return {
      name: path.basename(path.resolve(this.opts.modelDir)),
      modelType: spec.family,
      vocabSize: spec.vocabSize,
      maxSequenceTokens: this.limits.maxSequenceTokens,
      worldSize: this.opts.world,
      backend: this.opts.backend,
      hasTokenizer: this.opts.tokenizer !== null,
      maxTopLogprobs: this.limits.maxTopLogprobs,
      numLayers: spec.numLayers,
      numExperts: spec.moe.numExperts,
      expertsPerToken: spec.moe.topK,
    };
  }

  private unavailableReason(): string {
    switch (this.stateValue) {
      case 'starting':
        return `the cluster is starting (${this.opts.world} ranks joining)`;
      case 'loading':
        return 'the cluster is loading the model';
      case 'failed':
        return `the cluster failed: ${this.failureValue?.message ?? 'unknown'}`;
      default:
        return `the server is ${this.stateValue}`;
    }
  }

  private enterFailure(err: ClusterError): void {
    if (this.failureValue) return;
    this.failureValue = err;
    this.coordinator.markFailed();
    this.opts.logger.error({ err: err.message }, 'cluster failed');
    this.setState('failed');
    for (const l of this.failureListeners) l(err);
  }

  private setState(state: RouterState): void {
    this.stateValue = state;
    const status = state === 'serving' ? 'SERVING' : 'NOT_SERVING';
    for (const s of HEALTH_SERVICES) this.health.setStatus(s, status);
    this.opts.logger.info({ state }, 'router state');
  }
}

/** What reflection describes: the public API and the health service (so grpcurl can call both). */
function reflectedPackages(): protoLoader.PackageDefinition {
  const health = protoLoader.loadSync(healthProtoPath, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  return { ...prefillPackageDefinition(), ...health };
}

function bindServer(server: grpc.Server, host: string, port: number, credentials: grpc.ServerCredentials): Promise<string> {
  const hostPart = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return new Promise((resolve, reject) => {
    server.bindAsync(`${hostPart}:${port}`, credentials, (err, bound) => {
      if (err) reject(new RendezvousError(`cannot listen on ${hostPart}:${port}: ${err.message}`));
      else resolve(`${hostPart}:${bound}`);
    });
  });
}

function shutdownServer(server: grpc.Server): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 2000);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
