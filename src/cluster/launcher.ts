// The launcher of one node, as torchrun is: it spawns this node's ranks (one process each, with the
// launcher's own environment, its RankConfig sent on stdin) and, on node 0, runs the router in its
// own process. It supervises them: a rank that dies fails the cluster; a signal drains it and stops
// it; either way no process is left behind (ranks that do not stop in time are killed). It makes the
// cluster's secret (node 0 of a multi-node cluster and the others are given the same by file) and hands
// it to each rank inside its RankConfig; ranks ignore signals, the launcher drains them: a first
// SIGINT/SIGTERM drains (at most the drain timeout), a second stops at once.
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import type { ModelSpec } from '../model/config';
import type { BackendKind } from '../native/addonTypes';
import { ClusterError, LaunchError, messageOf } from '../rpc/errors';
import type { Logger } from '../rpc/log';
import { parseHostPort } from './peerAddress';
import { makeClusterSecret, readTlsFiles, type TlsPaths } from '../rpc/security';
import { sendConfig } from '../rpc/processConfig';
import { rankReceiveLimit, type EngineConfig, type RankConfig } from './rankConfig';
import { ClusterMetrics, serveMetrics } from './metrics';
import { Router, type ClusterLoadProgress } from './router';
import type { ClusterTuning } from './tuning';
import { loadTextTokenizer } from './textTokenizer';

export interface LaunchOptions {
  modelDir: string;
  backend: BackendKind;
  /** Ranks on this node (torchrun's nproc_per_node). */
  ranksPerNode: number;
  nnodes: number;
  nodeRank: number;
  /** host:port of the rendezvous on node 0; required when nnodes > 1. */
  coordinator: string | null;
  /** Public server of node 0. */
  host: string;
  port: number;
  tuning: ClusterTuning;
  /** The model's config (node 0's router serves it). */
  spec: ModelSpec;
  /** What every rank's engine runs with (made from the command line). */
  engine: EngineConfig;
  security: LaunchSecurity;
  logger: Logger;
  onProgress?: (p: ClusterLoadProgress) => void;
  /** Node 0: serve Prometheus metrics on this port (0: any free one) at /metrics, on `host`; null: no metrics server. */
  metricsPort?: number | null;
}

export interface LaunchSecurity {
  /** The secret of a multi-node cluster (--cluster-secret-file), the same on every node; null: made here (one node only). */
  clusterSecret: string | null;
  /** PEM files: the public server's TLS (cert, key) and, with a CA, mutual TLS on every internal connection. */
  tls: TlsPaths | null;
  /** Bearer tokens the public API requires; empty: none. */
  apiKeys: string[];
}

export interface RankChild {
  rank: number;
  pid: number;
}

export interface RunningCluster {
  /** host:port of the public server (node 0 only; empty elsewhere). */
  publicAddress: string;
  /** host:port of the Prometheus endpoint (GET /metrics), or empty: none. */
  metricsAddress: string;
  coordinatorAddress: string;
  world: number;
  ranks: RankChild[];
  /** Resolves with the launcher's exit code once every local process is gone. */
  readonly finished: Promise<number>;
  /** Drain (node 0) and stop. A second call stops at once. */
  shutdown(why: string): void;
}

/** Time a rank gets to exit after it was asked to, before SIGKILL. */
const RANK_EXIT_GRACE_MS = 5_000;

export async function launchCluster(opts: LaunchOptions): Promise<RunningCluster> {
  const { logger, tuning } = opts;
  const world = opts.ranksPerNode * opts.nnodes;
  if (!(opts.nodeRank >= 0 && opts.nodeRank < opts.nnodes))
    throw new LaunchError(`--node-rank ${opts.nodeRank} is outside [0, ${opts.nnodes})`);
  if (opts.nnodes > 1 && !opts.coordinator) throw new LaunchError('--coordinator HOST:PORT is required when --nnodes > 1');
  const multiNode = opts.nnodes > 1;
  const rendezvous = opts.coordinator ? parseHostPort(opts.coordinator, '--coordinator') : { host: '127.0.0.1', port: 0 };
  if (multiNode && opts.security.clusterSecret === null)
    throw new LaunchError('--cluster-secret-file is required when --nnodes > 1 (the same file on every node)');
  const clusterSecret = opts.security.clusterSecret ?? makeClusterSecret();
  const tlsFiles = opts.security.tls;
  const tls = tlsFiles ? readTlsFiles(tlsFiles) : null;
  // Internal traffic is mutual TLS only with a CA that signs every node's certificate.
  const internal = { secret: clusterSecret, tls: tls?.ca ? tls : null };

  let router: Router | null = null;
  let metricsServer: { address: string; close(): Promise<void> } | null = null;
  let coordinatorAddress = opts.coordinator ?? '';
  if (opts.nodeRank === 0) {
    const metrics = new ClusterMetrics();
    router = await Router.start({
      metrics,
      modelDir: opts.modelDir,
      spec: opts.spec,
      tokenizer: loadTextTokenizer(opts.modelDir),
      backend: opts.backend,
      world,
      host: opts.host,
      port: opts.port,
      // Multi-node: listen on every interface; ranks of every node (this one too) join at the
      // coordinator address, so the router sees addresses other hosts can reach.
      coordinatorHost: multiNode ? '0.0.0.0' : rendezvous.host,
      coordinatorPort: rendezvous.port,
      maxTokensPerRank: tuning.maxTokensPerRank,
      maxWaitMs: tuning.maxWaitMs,
      maxQueuedSequences: tuning.maxQueuedSequences,
      maxSequencesPerRequest: tuning.maxSequencesPerRequest,
      maxTopLogprobs: tuning.maxTopLogprobs,
      maxInflightRequestBytes: tuning.maxInflightRequestBytes,
      stepTimeoutMs: tuning.stepTimeoutMs,
      security: { internal, publicTls: tls, apiKeys: opts.security.apiKeys },
      logger: logger.child({ component: 'router' }),
    });
    if (!multiNode) coordinatorAddress = router.coordinatorAddress;
    if (opts.metricsPort !== undefined && opts.metricsPort !== null) {
      try {
        metricsServer = await serveMetrics(metrics, opts.host, opts.metricsPort, logger);
      } catch (e) {
        await router.stop('the metrics port could not be opened');
        throw new LaunchError(`--metrics-port ${opts.metricsPort}: cannot listen on ${opts.host}: ${messageOf(e)}`);
      }
      logger.info({ metrics: `http://${metricsServer.address}/metrics` }, 'metrics listening');
    }
    logger.info(
      {
        public: router.publicAddress,
        coordinator: router.coordinatorAddress,
        maxRequestBytes: router.maxRequestBytes,
        publicTls: tls !== null,
        internalTls: internal.tls !== null,
        apiKeys: opts.security.apiKeys.length,
      },
      'router listening',
    );
  }

  const supervisor = new Supervisor(logger);
  for (let local = 0; local < opts.ranksPerNode; local++) {
    const rank = opts.nodeRank * opts.ranksPerNode + local;
    const config: RankConfig = {
      coordinator: coordinatorAddress,
      rank,
      world,
      nodeRank: opts.nodeRank,
      localRank: local,
      backend: opts.backend,
      deviceIndex: opts.backend === 'cuda' ? local : 0,
      bindHost: multiNode ? '0.0.0.0' : '127.0.0.1',
      advertiseHost: '',
      collectiveTimeoutMs: tuning.collectiveTimeoutMs,
      rendezvousTimeoutMs: tuning.rendezvousTimeoutMs,
      parentCheckMs: 1000,
      clusterSecret,
      tls: internal.tls && tlsFiles ? tlsFiles : null,
      maxReceiveBytes: rankReceiveLimit(tuning.maxTokensPerRank),
      engine: opts.engine,
    };
    supervisor.spawnRank(config);
  }

  let resolveFinished!: (code: number) => void;
  const finished = new Promise<number>((resolve) => (resolveFinished = resolve));
  let ending: Promise<void> | null = null;
  let hardStop = false;

  /** Tears everything down once; `drain` for a planned stop, not after a failure. */
  const end = (code: number, why: string, drain: boolean): Promise<void> => {
    ending ??= (async () => {
      logger.info({ why, code }, 'cluster stopping');
      if (router && drain) await router.drain(tuning.drainTimeoutMs);
      else if (router && !drain) await delay(tuning.failureLingerMs, () => supervisor.terminateAll('SIGTERM'));
      if (router) await router.stop(why);
      // Without a router here (nodes other than 0), the ranks are told directly.
      else supervisor.terminateAll('SIGTERM');
      await metricsServer?.close();
      await supervisor.stopAll(RANK_EXIT_GRACE_MS);
      resolveFinished(code);
    })();
    return ending;
  };

  router?.onFailure((err: ClusterError) => void end(1, err.message, false));
  supervisor.onUnexpectedExit((why) => void end(1, why, false));
  supervisor.onAllExited(() => void end(supervisor.anyFailed ? 1 : 0, 'every rank exited', false));

  const cluster: RunningCluster = {
    publicAddress: router?.publicAddress ?? '',
    metricsAddress: metricsServer?.address ?? '',
    coordinatorAddress,
    world,
    ranks: supervisor.children,
    finished,
    shutdown(why: string) {
      if (ending) {
        if (!hardStop) {
          hardStop = true;
          logger.warn({ why }, 'second stop request: stopping now');
          router?.abortDrain();
          supervisor.terminateAll('SIGKILL');
        }
        return;
      }
      supervisor.expectExits();
      void end(0, why, true);
    },
  };

  if (router) {
    try {
      await router.bringUp(tuning.rendezvousTimeoutMs, opts.onProgress);
    } catch (err) {
      logger.error({ err: messageOf(err) }, 'cluster failed to come up');
      await end(1, `bring-up failed: ${messageOf(err)}`, false);
      throw err instanceof ClusterError ? err : new LaunchError(messageOf(err));
    }
  }
  return cluster;
}

/** Spawns and watches this node's rank processes. */
class Supervisor {
  readonly children: RankChild[] = [];
  private readonly processes = new Map<number, ChildProcess>();
  private readonly alive = new Set<number>();
  private expecting = false;
  anyFailed = false;
  private unexpectedListeners: ((why: string) => void)[] = [];
  private allExitedListeners: (() => void)[] = [];

  constructor(private readonly logger: Logger) {}

  spawnRank(config: RankConfig): void {
    const entry = path.join(__dirname, `rankMain${path.extname(__filename)}`);
    const child = spawn(process.execPath, [...childExecArgv(), entry], {
      // The launcher's environment, whole: NCCL_*, CUDA_VISIBLE_DEVICES, proxies... reach the rank.
      env: {
        ...process.env,
        RANK: String(config.rank),
        WORLD_SIZE: String(config.world),
        LOCAL_RANK: String(config.localRank),
        NODE_RANK: String(config.nodeRank),
      },
      // stdin carries the RankConfig; stdout of ranks goes to the launcher's stderr: stdout carries the `ready:` line alone.
      stdio: ['pipe', 2, 2],
    });
    const { rank } = config;
    if (child.pid === undefined) throw new LaunchError(`could not start rank ${rank}`);
    sendConfig(child, config);
    this.children.push({ rank, pid: child.pid });
    this.processes.set(rank, child);
    this.alive.add(rank);
    this.logger.info({ rank, childPid: child.pid }, 'rank spawned');
    child.on('exit', (code, signal) => {
      this.alive.delete(rank);
      const clean = code === 0;
      if (!clean) this.anyFailed = true;
      this.logger.info({ rank, code, signal }, 'rank exited');
      if (!clean && !this.expecting) {
        const why = `rank ${rank} exited ${signal ? `on ${signal}` : `with code ${code}`}`;
        for (const l of this.unexpectedListeners) l(why);
      }
      if (this.alive.size === 0) for (const l of this.allExitedListeners) l();
    });
  }

  onUnexpectedExit(listener: (why: string) => void): void {
    this.unexpectedListeners.push(listener);
  }
  onAllExited(listener: () => void): void {
    this.allExitedListeners.push(listener);
  }

  /** From now on, ranks exiting is part of a planned stop. */
  expectExits(): void {
    this.expecting = true;
  }

  terminateAll(signal: NodeJS.Signals): void {
    this.expecting = true;
    for (const rank of this.alive) this.processes.get(rank)?.kill(signal);
  }

  /** Waits for every rank to exit; after `graceMs`, SIGKILL those still there. */
  async stopAll(graceMs: number): Promise<void> {
    this.expecting = true;
    if (this.alive.size === 0) return;
    const allGone = new Promise<void>((resolve) => this.onAllExited(resolve));
    const timer = setTimeout(() => {
      this.logger.warn({ ranks: [...this.alive] }, 'ranks did not stop in time: SIGKILL');
      this.terminateAll('SIGKILL');
    }, graceMs);
    await allGone;
    clearTimeout(timer);
  }
}

/** Node flags for a child (memory limits, a TypeScript loader), without -e/-p scripts or debugger ports. */
function childExecArgv(): string[] {
  const out: string[] = [];
  const args = process.execArgv;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '-e' || a === '--eval' || a === '-p' || a === '--print') {
      i++;
      continue;
    }
    if (/^--(eval|print)=/.test(a) || a.startsWith('--inspect')) continue;
    out.push(a);
  }
  return out;
}

function delay(ms: number, whileWaiting?: () => void): Promise<void> {
  whileWaiting?.();
  return new Promise((resolve) => setTimeout(resolve, ms));
}
