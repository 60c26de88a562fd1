// Entry point of a rank process, spawned by the launcher: `node rankMain.js '<RankProcessOptions as JSON>'`.
// The environment is the launcher's own (NCCL_*, CUDA_VISIBLE_DEVICES... pass through untouched).
import { messageOf } from '../rpc/errors';
import { createLogger } from '../rpc/log';
import { rankEngineFactory } from './rankEngineFactory';
import { RANK_EXIT, RankProcess, type RankProcessOptions } from './rankProcess';

async function main(): Promise<void> {
  const opts = JSON.parse(process.argv[2] ?? '{}') as RankProcessOptions;
  const logger = createLogger({ role: 'rank', rank: opts.rank });
  const rank = new RankProcess(opts, { createEngine: rankEngineFactory(opts.moeSchedule, logger), logger });
  // Ctrl-C reaches the whole process group; the launcher drains the cluster and then stops the ranks.
  process.on('SIGINT', () => logger.debug('SIGINT left to the launcher'));
  process.on('SIGTERM', () => void rank.stop(RANK_EXIT.terminated, 'SIGTERM'));
  try {
    await rank.start();
  } catch (err) {
    logger.error({ err: messageOf(err) }, 'rank failed to start');
    await rank.stop(RANK_EXIT.failed, messageOf(err));
  }
  process.exit(await rank.exited);
}

void main();
