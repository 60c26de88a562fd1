// Entry point of a rank process, spawned by the launcher: `node rankMain.js`, its RankConfig as JSON
// on stdin (rankConfig.ts, rpc/processConfig.ts). The environment is the launcher's own (NCCL_*,
// CUDA_VISIBLE_DEVICES... pass through untouched).
import { messageOf } from '../rpc/errors';
import { createLogger } from '../rpc/log';
import { receiveConfig } from '../rpc/processConfig';
import { parseRankConfig } from './rankConfig';
import { rankEngineFactory } from './rankEngineFactory';
import { RANK_EXIT, RankProcess } from './rankProcess';

async function main(): Promise<void> {
  let config;
  try {
    config = parseRankConfig(await receiveConfig());
  } catch (err) {
    createLogger({ role: 'rank' }).error({ err: messageOf(err) }, 'rank failed to start');
    process.exit(RANK_EXIT.failed);
  }
  const logger = createLogger({ role: 'rank', rank: config.rank });
  const rank = new RankProcess(config, { createEngine: rankEngineFactory(config.engine, logger), logger });
  // Ctrl-C, and SIGTERM sent to the whole process group (systemd, `timeout`, container runtimes), reach
  // every rank too: the launcher drains the cluster (in-flight requests are answered) and then stops the
  // ranks through Shutdown; a launcher that dies is noticed (its Join stream, the parent check).
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => logger.info({ signal }, 'signal left to the launcher'));
  try {
    await rank.start();
  } catch (err) {
    logger.error({ err: messageOf(err) }, 'rank failed to start');
    await rank.stop(RANK_EXIT.failed, messageOf(err));
  }
  process.exit(await rank.exited);
}

void main();
