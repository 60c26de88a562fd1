// `eps-moe launch [--model DIR | --preset NAME] [--ranks N] [--backend cpu|cuda] [--host H] [--port P]
//                 [--nnodes N --node-rank R --coordinator HOST:PORT]`
// Starts this node's part of a cluster (node 0: the router too), shows progress while weights load,
// prints one `ready:` line on stdout once it serves, and on SIGINT/SIGTERM drains and stops (within
// --drain-timeout-ms; a second signal stops at once). The
// process exits 0 after a planned stop, non-zero when the cluster failed (a rank lost).
import * as path from 'node:path';
import { ClusterOptionError, startCluster, type Cluster, type ClusterOptions } from '../cluster/startCluster';
import { createLogger } from '../rpc/log';
import { CliError } from './errors';
import { ProgressView } from './progress';

/** startCluster's options as flags, plus the cluster's limits and timeouts (--max-tokens-per-rank ...) and the log level. */
export interface LaunchCommandOptions extends Pick<
  ClusterOptions,
  | 'model'
  | 'preset'
  | 'randomWeights'
  | 'ranks'
  | 'backend'
  | 'host'
  | 'port'
  | 'nnodes'
  | 'nodeRank'
  | 'coordinator'
  | 'moeSchedule'
  | 'expertGroups'
  | 'dispatch'
  | 'trace'
  | 'metricsPort'
  | 'checkWeights'
  | 'checkLayers'
> {
  maxTokensPerRank?: number;
  maxWaitMs?: number;
  queueLimit?: number;
  maxSequencesPerRequest?: number;
  stepTimeoutMs?: number;
  drainTimeoutMs?: number;
  failureLingerMs?: number;
  maxInflightRequestBytes?: number;
  /** Security (README "Security"): the secret of a multi-node cluster, TLS files, API keys of the public API. */
  clusterSecretFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  apiKeyFile?: string;
  logLevel?: string;
  /** --override KEY=VALUE, repeatable: changes to the preset's config. */
  override?: string[];
}

export async function launchCommand(opts: LaunchCommandOptions): Promise<void> {
  const nodeRank = opts.nodeRank ?? 0;
  // Ranks inherit the environment: they log at the same level.
  if (opts.logLevel !== undefined) process.env.EPS_LOG_LEVEL = opts.logLevel;
  const logger = createLogger({ role: 'launcher', node: nodeRank });
  const making = new ProgressView('making the built-in model', 'MB', (fields, msg) => logger.info(fields, msg));
  const loading = new ProgressView('loading weights', 'tensors', (fields, msg) => logger.info(fields, msg));
  let cluster: Cluster;
  try {
    cluster = await startCluster({
      ...opts,
      overrides: opts.override,
      tuning: {
        maxTokensPerRank: opts.maxTokensPerRank,
        maxWaitMs: opts.maxWaitMs,
        maxQueuedSequences: opts.queueLimit,
        maxSequencesPerRequest: opts.maxSequencesPerRequest,
        stepTimeoutMs: opts.stepTimeoutMs,
        drainTimeoutMs: opts.drainTimeoutMs,
        failureLingerMs: opts.failureLingerMs,
        maxInflightRequestBytes: opts.maxInflightRequestBytes,
      },
      logger,
      onMakeProgress: (written, total) => making.update(written, total, ''),
      onLoadProgress: (p) => loading.update(p.loaded, p.total, `${p.ranksDone}/${p.world} ranks`),
    });
  } catch (e) {
    throw e instanceof ClusterOptionError ? new CliError(e.message, 2) : new CliError((e as Error).message);
  } finally {
    making.stop();
    loading.stop();
  }

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    logger.info({ signal }, signals === 1 ? 'draining, then stopping (signal again to stop at once)' : 'stopping now');
    cluster.shutdown(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  if (nodeRank === 0) {
    const pids = cluster.ranks.map((r) => r.pid).join(',');
    process.stdout.write(
      `ready: ${cluster.publicAddress}${cluster.metricsAddress ? ` metrics=${cluster.metricsAddress}` : ''} model=${path.basename(cluster.modelDir)} ranks=${cluster.world} backend=${cluster.backend} launcher_pid=${process.pid} rank_pids=${pids}\n`,
    );
  } else {
    logger.info({ coordinator: cluster.coordinatorAddress, ranks: cluster.ranks }, 'node ranks started');
  }
  const code = await cluster.finished;
  const traceFile = cluster.engine.traceFile;
  if (traceFile) {
    const { mergeRankTraces } = await import('../trace/merge');
    const parts = await mergeRankTraces(traceFile, cluster.world);
    logger.info({ traceFile, parts }, 'trace written');
  }
  logger.info({ code }, 'launcher exiting');
  process.exit(code);
}
