// A rank process of the multi-GPU MoE benchmark (forked by moeBench.ts with the parent's environment,
// so NCCL's settings reach it; its MoeBenchRankConfig on stdin, as a cluster rank gets its RankConfig):
// joins NCCL with the id the parent made, runs its share, and sends its rows (rank 0) and a done
// message to the parent over the IPC channel.
import { Device } from '../../native/device';
import { NcclCommunicator } from '../../comm/ncclCommunicator';
import { receiveConfig } from '../../rpc/processConfig';
import { runMoeBenchRank, type MoeBenchOptions } from './rankRunner';

export interface MoeBenchRankConfig {
  rank: number;
  world: number;
  uniqueIdHex: string;
  options: MoeBenchOptions;
}

async function main(): Promise<void> {
  // The parent made it (moeBench.ts, from options the command line checked) in this same build.
  const args = JSON.parse(await receiveConfig()) as MoeBenchRankConfig;
  const device = Device.open('cuda', args.rank);
  const comm = NcclCommunicator.join(device, Uint8Array.from(Buffer.from(args.uniqueIdHex, 'hex')), args.world, args.rank);
  const rows = await runMoeBenchRank(
    { device, comm, dtype: 'bf16', progress: (line) => args.rank === 0 && process.send?.({ kind: 'progress', line }) },
    args.options,
  );
  await comm.close();
  await new Promise<void>((resolve) =>
    process.send!({ kind: 'done', rank: args.rank, rows: args.rank === 0 ? rows : [] }, () => resolve()),
  );
  process.exit(0);
}

main().catch((e: Error) => {
  process.send?.({ kind: 'error', message: e.message });
  process.exit(1);
});
