// `eps-moe bench moe`: one MoE layer across W ranks under baseline, the sweep of fixed plans and auto.
// On CUDA with W > 1 it forks one process per GPU (NCCL); on the CPU the W ranks share this process
// (InProcessCommunicator), at small shapes.
import { fork } from 'child_process';
import * as path from 'path';
import { InProcessCommunicator } from '../../comm/inProcessCommunicator';
import { LocalCommunicator } from '../../comm/communicator';
import { ncclUniqueId } from '../../comm/ncclCommunicator';
import { hasBackend, defaultBackend } from '../../native/addon';
import type { BackendKind } from '../../native/addonTypes';
import type { DispatchMode } from '../../moe/schedule';
import { Device } from '../../native/device';
import { sendConfig } from '../../rpc/processConfig';
import { mergeRankTraces } from '../../trace/merge';
import { BenchError } from '../errors';
import { formatTable, sig3 } from '../table';
import type { MoeBenchRankConfig } from './rankMain';
import { runMoeBenchRank, type MoeBenchOptions, type MoeBenchRow } from './rankRunner';
import type { RoutingKind } from './routing';
import { findMoeShape, MOE_SHAPES, QUICK_MOE_SHAPES } from './shapes';

export interface MoeBenchCliOptions {
  ranks: number;
  backend?: BackendKind;
  shapes?: string[];
  tokens?: number[];
  routings?: RoutingKind[];
  reps?: number;
  json?: string;
  trace?: string;
  /** Expert groups per rank (the scheduler's expert axis); default 1. */
  expertGroups?: number;
  /** What auto may use; unless pairs, baseline and fixed:1/2/4 are also measured with the dedup dispatch ("+dedup"). */
  dispatch?: DispatchMode;
}

export const DEFAULT_SWEEP = ['fixed:1:dense', 'fixed:2:grouped', 'fixed:2:dense', 'fixed:4:grouped', 'fixed:4:dense', 'fixed:8:dense'];

export async function runMoeBench(o: MoeBenchCliOptions, progress: (line: string) => void): Promise<MoeBenchRow[]> {
  const backend = o.backend ?? defaultBackend();
  if (!hasBackend(backend)) throw new BenchError('BENCH_BACKEND_UNAVAILABLE', `backend '${backend}' is not available in this build`);
  const quick = backend === 'cpu';
  const shapes = (o.shapes ?? (quick ? QUICK_MOE_SHAPES : MOE_SHAPES).map((s) => s.name)).map((name) => {
    const shape = findMoeShape(name);
    if (!shape)
      throw new BenchError(
        'BENCH_OPTIONS',
        `unknown MoE shape '${name}' (have: ${[...MOE_SHAPES, ...QUICK_MOE_SHAPES].map((s) => s.name).join(', ')})`,
      );
    return shape;
  });
  const tokensPerRank = o.tokens ?? (quick ? [16, 64] : [1024, 4096, 16384, 32768]);
  const options: MoeBenchOptions = {
    shapes,
    tokensPerRank,
    routings: o.routings ?? ['balanced', 'skewed'],
    sweep: DEFAULT_SWEEP,
    expertGroups: o.expertGroups ?? 1,
    dispatch: o.dispatch ?? 'auto',
    warmup: quick ? 1 : 2,
    reps: o.reps ?? (quick ? 3 : 5),
    // The traced point: the first shape at 16K tokens per rank (64 on the CPU), else at the first count given.
    trace: o.trace
      ? { shape: shapes[0].name, tokens: traceTokens(tokensPerRank, quick ? 64 : 16384), routing: 'balanced', file: o.trace }
      : undefined,
  };
  const rows =
    backend === 'cuda' && o.ranks > 1 ? await forkRanks(o.ranks, options, progress) : await inProcess(backend, o.ranks, options, progress);
  if (o.trace) await mergeRankTraces(o.trace, o.ranks);
  return rows;
}

function traceTokens(tokensPerRank: number[], preferred: number): number {
  return tokensPerRank.includes(preferred) ? preferred : tokensPerRank[0];
}

async function inProcess(
  backend: BackendKind,
  world: number,
  options: MoeBenchOptions,
  progress: (l: string) => void,
): Promise<MoeBenchRow[]> {
  const comms = world > 1 ? InProcessCommunicator.group(world) : [new LocalCommunicator()];
  const results = await Promise.all(
    comms.map((comm) =>
      runMoeBenchRank(
        {
          device: Device.open(backend, backend === 'cuda' ? comm.rank : 0),
          comm,
          dtype: backend === 'cpu' ? 'f32' : 'bf16',
          progress: (l) => comm.rank === 0 && progress(l),
        },
        options,
      ),
    ),
  );
  return results[0];
}

/** One process per GPU, the parent's environment inherited (NCCL settings), NCCL's id made here and sent with its configuration on stdin. */
async function forkRanks(world: number, options: MoeBenchOptions, progress: (l: string) => void): Promise<MoeBenchRow[]> {
  const uniqueIdHex = Buffer.from(ncclUniqueId()).toString('hex');
  const entry = path.join(__dirname, `rankMain${path.extname(__filename)}`);
  const children = Array.from({ length: world }, (_, rank) => {
    const child = fork(entry, [], { stdio: ['pipe', 'inherit', 'inherit', 'ipc'] });
    const config: MoeBenchRankConfig = { rank, world, uniqueIdHex, options };
    sendConfig(child, config);
    return child;
  });
  let rows: MoeBenchRow[] = [];
  try {
    await Promise.all(
      children.map(
        (child, rank) =>
          new Promise<void>((resolve, reject) => {
            let done = false;
            child.on('message', (m: { kind: string; line?: string; rows?: MoeBenchRow[]; message?: string }) => {
              if (m.kind === 'progress' && m.line) progress(m.line);
              else if (m.kind === 'done') {
                done = true;
                if (rank === 0 && m.rows) rows = m.rows;
              } else if (m.kind === 'error') reject(new BenchError('BENCH_OPTIONS', `rank ${rank}: ${m.message}`));
            });
            child.on('exit', (code) =>
              done && code === 0 ? resolve() : reject(new BenchError('BENCH_OPTIONS', `rank ${rank} exited with code ${code}`)),
            );
          }),
      ),
    );
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  }
  return rows;
}

export function formatMoeBench(rows: readonly MoeBenchRow[]): string {
  const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : '-');
  const table = formatTable<MoeBenchRow>(
    [
      { header: 'layer', cell: (r) => r.shape, align: 'left' },
      { header: 'W', cell: (r) => String(r.world) },
      { header: 'G', cell: (r) => String(r.expertGroups) },
      { header: 'tokens/rank', cell: (r) => String(r.tokensPerRank) },
      { header: 'routing', cell: (r) => r.routing, align: 'left' },
      { header: 'baseline ms', cell: (r) => sig3(r.baselineMs) },
      { header: 'grouped ms', cell: (r) => sig3(r.groupedMs) },
      { header: 'best fixed', cell: (r) => `${r.best.schedule} ${sig3(r.best.ms)}`, align: 'left' },
      { header: 'auto ms', cell: (r) => sig3(r.auto.ms) },
      { header: 'auto plan', cell: (r) => r.auto.plan, align: 'left' },
      { header: 'predicted', cell: (r) => sig3(r.auto.predictedMs) },
      { header: 'floor ms (gemm/a2a)', cell: (r) => `${sig3(r.floorMs)} (${sig3(r.gemmFloorMs)}/${sig3(r.commFloorMs)})`, align: 'left' },
      { header: 'base/auto', cell: (r) => ratio(r.baselineMs, r.auto.ms) },
      { header: 'auto/best', cell: (r) => ratio(r.auto.ms, r.best.ms) },
      { header: 'auto/floor', cell: (r) => ratio(r.auto.ms, r.floorMs) },
    ],
    rows,
  );
  const errors = rows
    .flatMap((r) => r.results.filter((x) => x.predictedMs !== null).map((x) => Math.abs(x.predictedMs! - x.ms) / x.ms))
    .sort((a, b) => a - b);
  const medianErr = errors.length ? errors[errors.length >> 1] : NaN;
  return `${table}\n  median |predicted - measured| / measured over every timed plan: ${(medianErr * 100).toFixed(1)}%\n  time = slowest rank, CUDA events (CPU: host clock), median of the reps; floor = max(GEMM FLOPs of the busiest rank / GEMM ceiling, 2 x all-to-all bytes of the busiest rank, rows as the dedup dispatch sends them, / measured all-to-all bandwidth)\n`;
}
