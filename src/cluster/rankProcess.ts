// One rank of the cluster, as a process: serves eps.v1.RankService, joins the router, builds its
// Communicator from the assignment, builds its engine when told to load, and runs steps in order.
// It stops when told to (Shutdown), when the router goes away (its Join stream ends), or when its
// launcher dies; signals are left to the launcher, which drains the cluster first (rankMain.ts).
// Every call it serves must carry the cluster secret (checked before any work); every call it makes
// carries it; with TLS configured, all of it runs over mutual TLS.
import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import * as grpc from '@grpc/grpc-js';
import { buildCommunicator, communicatorBootstrap, type BuiltCommunicator } from '../comm/communicatorFactory';
import type { DataPlane } from '../comm/dataPlane';
import type { RankEngine, RankEngineOptions } from '../engine/types';
import { SERVER_OPTIONS } from '../rpc/channelOptions';
import {
  internalChannel,
  internalServerCredentials,
  internalServerOptions,
  readTlsFiles,
  type InternalChannel,
  type InternalSecurity,
} from '../rpc/security';
import { ClusterError, RendezvousError, messageOf } from '../rpc/errors';
import type { Logger } from '../rpc/log';
import { Answers } from './answers';
import { describeNonFinite } from '../engine/nonFinite';
import type { RankConfig } from './rankConfig';
import {
  coordinatorService,
  rankService,
  type ClusterAssignmentMsg,
  type DataFrameMsg,
  type ExchangeSummaryMsg,
  type JoinEventMsg,
  type JoinRequestMsg,
  type LoadProgressMsg,
  type LoadRequestMsg,
  type RankHealthMsg,
  type RankState,
  type ShutdownRequestMsg,
  type StepRequestMsg,
  type StepResponseMsg,
} from '../rpc/protos';

export interface RankDeps {
  createEngine(opts: RankEngineOptions): Promise<RankEngine>;
  logger: Logger;
}

/** Exit codes of a rank process. */
export const RANK_EXIT = { ok: 0, failed: 1, routerLost: 3, parentLost: 4, terminated: 143 } as const;

interface JoinClient extends grpc.Client {
  Join(req: JoinRequestMsg, options: grpc.CallOptions): grpc.ClientReadableStream<JoinEventMsg>;
}

const PROGRESS_INTERVAL_MS = 200;

export class RankProcess {
  private state: RankState = 'starting';
  private readonly server: grpc.Server;
  private security: InternalSecurity;
  private channel: InternalChannel | null = null;
  private joinClient: JoinClient | null = null;
  private joinCall: grpc.ClientReadableStream<JoinEventMsg> | null = null;
  private built: BuiltCommunicator | null = null;
  private engine: RankEngine | null = null;
  private stepsDone = 0;
  private stepChain: Promise<unknown> = Promise.resolve();
  /** Steps are numbered 1, 2, ... by the router. */
  private nextStepId = 1;
  private readonly waitingSteps = new Map<number, () => void>();
  private resolvePlane!: (plane: DataPlane | null) => void;
  private readonly planeReady = new Promise<DataPlane | null>((resolve) => (this.resolvePlane = resolve));
  private resolveExit!: (code: number) => void;
  /** Resolves with the process's exit code once the rank has stopped and cleaned up. */
  readonly exited = new Promise<number>((resolve) => (this.resolveExit = resolve));
  private stopping = false;
  private parentTimer: NodeJS.Timeout | null = null;
  private readonly logger: Logger;
  private readonly answers: Answers;

  constructor(
    private readonly opts: RankConfig,
    private readonly deps: RankDeps,
  ) {
    this.logger = deps.logger;
    this.answers = new Answers(deps.logger);
    this.security = { secret: opts.clusterSecret, tls: null };
    this.server = new grpc.Server(internalServerOptions(this.security, SERVER_OPTIONS, opts.maxReceiveBytes, this.logger));
  }

  /** Listens, joins, and builds the communicator; returns once the rank waits for Load. */
  async start(): Promise<void> {
    this.watchParent();
    if (this.opts.tls) this.security = { ...this.security, tls: readTlsFiles(this.opts.tls) };
    this.channel = internalChannel(this.security);
    const port = await this.listen();
    const bootstrap = this.opts.rank === 0 ? await communicatorBootstrap(this.opts.backend, this.opts.world) : new Uint8Array(0);
    const assignment = await this.join(port, bootstrap);
    this.built = await buildCommunicator({
      rank: assignment.rank,
      world: assignment.worldSize,
      backend: this.opts.backend,
      deviceIndex: this.opts.deviceIndex,
      peers: assignment.peers.map((p) => p.address),
      clusterId: assignment.clusterId,
      bootstrap: assignment.commBootstrap,
      collectiveTimeoutMs: this.opts.collectiveTimeoutMs,
      channel: this.channel,
      logger: this.logger,
    });
    this.resolvePlane(this.built.dataPlane);
    this.logger.info({ world: assignment.worldSize, peers: assignment.peers.map((p) => p.address) }, 'rank assigned');
  }

  /** Stops: disposes the engine, closes the data plane and the server, then resolves `exited`. */
  async stop(code: number, why: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.state = 'stopping';
    this.logger.info({ code, why }, 'rank stopping');
    if (this.parentTimer) clearInterval(this.parentTimer);
    this.resolvePlane(null);
    this.joinCall?.cancel();
    this.joinClient?.close();
    await this.built?.comm.close().catch(() => undefined);
    // A step may still be inside the engine (a peer died mid-step): give it a moment to unwind.
    await Promise.race([this.stepChain.catch(() => undefined), delay(2000)]);
    await this.engine?.dispose().catch((err: unknown) => this.logger.warn({ err: messageOf(err) }, 'engine dispose failed'));
    await this.answers.dispose();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 1000);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    this.resolveExit(code);
  }

  private async listen(): Promise<number> {
    this.server.addService(rankService(), {
      Load: (call: grpc.ServerWritableStream<LoadRequestMsg, LoadProgressMsg>) => void this.load(call),
      Step: (call: grpc.ServerUnaryCall<StepRequestMsg, StepResponseMsg>, cb: grpc.sendUnaryData<StepResponseMsg>) =>
        this.step(call.request, cb),
      Health: (_call: grpc.ServerUnaryCall<object, RankHealthMsg>, cb: grpc.sendUnaryData<RankHealthMsg>) =>
        cb(null, {
          state: this.state,
          rank: this.opts.rank,
          stepsDone: this.stepsDone,
          planCounts: this.engine?.planCounts() ?? {},
          ...this.engine?.stats(),
        }),
      Shutdown: (call: grpc.ServerUnaryCall<ShutdownRequestMsg, object>, cb: grpc.sendUnaryData<object>) => {
        cb(null, {});
        const code = call.request.failed ? RANK_EXIT.failed : RANK_EXIT.ok;
        setImmediate(() => void this.stop(code, `shutdown: ${call.request.reason}`));
      },
      Exchange: (call: grpc.ServerReadableStream<DataFrameMsg, ExchangeSummaryMsg>, cb: grpc.sendUnaryData<ExchangeSummaryMsg>) => {
        // Peers may connect before this rank has its assignment; their frames wait in the stream.
        void this.planeReady.then((plane) => {
          if (plane) plane.acceptStream(call, cb);
          else cb({ code: grpc.status.FAILED_PRECONDITION, details: `rank ${this.opts.rank} has no data plane` });
        });
      },
    } as grpc.UntypedServiceImplementation);
    return new Promise((resolve, reject) => {
      this.server.bindAsync(`${this.opts.bindHost}:0`, internalServerCredentials(this.security), (err, port) =>
        err ? reject(new RendezvousError(`rank ${this.opts.rank} cannot listen on ${this.opts.bindHost}: ${err.message}`)) : resolve(port),
      );
    });
  }

  private join(port: number, bootstrap: Uint8Array): Promise<ClusterAssignmentMsg> {
    const Client = grpc.makeClientConstructor(coordinatorService(), 'CoordinatorService');
    const channel = this.channel ?? internalChannel(this.security);
    const client = new Client(this.opts.coordinator, channel.credentials, channel.options) as unknown as JoinClient;
    this.joinClient = client;
    const req: JoinRequestMsg = {
      rank: this.opts.rank,
      worldSize: this.opts.world,
      nodeRank: this.opts.nodeRank,
      localRank: this.opts.localRank,
      host: this.opts.advertiseHost,
      port,
      backend: this.opts.backend,
      pid: process.pid,
      hostname: os.hostname(),
      commBootstrap: Buffer.from(bootstrap),
    };
    return new Promise((resolve, reject) => {
      let assigned = false;
      // waitForReady: the router of a multi-node cluster may come up after this node's ranks.
      const call = client.Join(req, { deadline: Infinity, waitForReady: true } as grpc.CallOptions);
      this.joinCall = call;
      const timer = setTimeout(() => {
        if (!assigned)
          reject(
            new RendezvousError(
              `rank ${this.opts.rank}: no assignment from ${this.opts.coordinator} in ${this.opts.rendezvousTimeoutMs} ms`,
            ),
          );
      }, this.opts.rendezvousTimeoutMs);
      call.on('data', (ev: JoinEventMsg) => {
        if (ev.assignment && !assigned) {
          assigned = true;
          clearTimeout(timer);
          resolve(ev.assignment);
        }
      });
      call.on('error', (err: grpc.ServiceError) => {
        clearTimeout(timer);
        if (!assigned) reject(new RendezvousError(`rank ${this.opts.rank}: join failed: ${err.details || err.message}`));
        else void this.stop(RANK_EXIT.routerLost, `router lost: ${err.details || err.message}`);
      });
      call.on('end', () => {
        clearTimeout(timer);
        if (!assigned) reject(new RendezvousError(`rank ${this.opts.rank}: the router ended the join without an assignment`));
        else void this.stop(RANK_EXIT.ok, 'the router released the cluster');
      });
    });
  }

  private async load(call: grpc.ServerWritableStream<LoadRequestMsg, LoadProgressMsg>): Promise<void> {
    if (this.state !== 'starting' || !this.built) {
      call.emit('error', { code: grpc.status.FAILED_PRECONDITION, details: `rank ${this.opts.rank} cannot load while ${this.state}` });
      return;
    }
    this.state = 'loading';
    let last = 0;
    let loadedSoFar = 0;
    let totalToLoad = 0;
    const started = performance.now();
    try {
      this.engine = await this.deps.createEngine({
        modelDir: call.request.modelDir,
        backend: this.opts.backend,
        deviceIndex: this.opts.deviceIndex,
        comm: this.built.comm,
        onLoadProgress: (loaded, total) => {
          loadedSoFar = loaded;
          totalToLoad = total;
          const now = performance.now();
          if (now - last < PROGRESS_INTERVAL_MS) return;
          last = now;
          call.write({ loaded, total, done: false });
        },
      });
    } catch (err) {
      this.state = 'failed';
      this.logger.error({ err: messageOf(err) }, 'load failed');
      call.emit('error', { code: grpc.status.INTERNAL, details: `rank ${this.opts.rank}: load failed: ${messageOf(err)}` });
      return;
    }
    this.state = 'ready';
    this.logger.info({ ms: Math.round(performance.now() - started) }, 'rank loaded');
    call.write({ loaded: loadedSoFar, total: totalToLoad, done: true });
    call.end();
  }

  private step(req: StepRequestMsg, cb: grpc.sendUnaryData<StepResponseMsg>): void {
    if (this.state !== 'ready' || !this.engine) {
      cb({ code: grpc.status.FAILED_PRECONDITION, details: `rank ${this.opts.rank} cannot step while ${this.state}` });
      return;
    }
    const engine = this.engine;
    // The router may send the next step while this one runs; steps run one at a time, in step order,
    // on every rank (their collectives match by order).
    const run = (async () => {
      await this.turn(req.stepId);
      let turnPassed = false;
      try {
        if (this.state !== 'ready') throw new Error(`rank ${this.opts.rank} is ${this.state}`);
        const t0 = performance.now();
        // The next step may start once this one's device work is all enqueued: the device runs it right after, while
        // this one's results come back and its answers are computed (answers.ts).
        const passTurn = () => {
          if (turnPassed) return;
          turnPassed = true;
          this.advanceTurn();
        };
        const { logits, nonfinite } = await engine.step(
          req.sequences.map((s) => s.ids),
          { onEnqueued: passTurn },
        );
        const computeMs = performance.now() - t0;
        passTurn();
        this.stepsDone++;
        const bad = nonfinite.map((nf) => ({ index: nf.sequence, message: describeNonFinite(nf) }));
        if (bad.length > 0) this.logger.error({ stepId: req.stepId, nonfinite: bad }, 'non-finite logits');
        const results = await this.answers.answer(
          req.sequences.map((s, i) => ({ logits: logits[i], k: s.topLogprobs, tokens: s.ids.length })),
        );
        return { stepId: req.stepId, results, computeMs, nonfinite: bad };
      } finally {
        if (!turnPassed) this.advanceTurn();
      }
    })();
    this.stepChain = run.catch(() => undefined);
    run.then(
      (res) => cb(null, res),
      (err: unknown) => {
        // A failed step leaves the ranks' collectives out of step: this rank is done.
        this.state = 'failed';
        this.logger.error({ stepId: req.stepId, err: messageOf(err) }, 'step failed');
        const code = err instanceof ClusterError ? err.grpcStatus : grpc.status.INTERNAL;
        cb({ code, details: `rank ${this.opts.rank}: step ${req.stepId} failed: ${messageOf(err)}` });
      },
    );
  }

  /** Resolves when step `stepId` may run: every earlier step has run. */
  private turn(stepId: number): Promise<void> {
    if (stepId === this.nextStepId) return Promise.resolve();
    if (stepId < this.nextStepId) return Promise.reject(new Error(`step ${stepId} arrived after step ${this.nextStepId - 1} ran`));
    return new Promise((resolve) => this.waitingSteps.set(stepId, resolve));
  }

  private advanceTurn(): void {
    this.nextStepId++;
    const next = this.waitingSteps.get(this.nextStepId);
    if (next) {
      this.waitingSteps.delete(this.nextStepId);
      next();
    }
  }

  /** A launcher killed with SIGKILL cannot stop its ranks: they notice it is gone and stop. */
  private watchParent(): void {
    if (this.opts.parentCheckMs <= 0) return;
    const parent = process.ppid;
    this.parentTimer = setInterval(() => {
      if (process.ppid !== parent) void this.stop(RANK_EXIT.parentLost, `launcher (pid ${parent}) is gone`);
    }, this.opts.parentCheckMs);
    this.parentTimer.unref();
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
