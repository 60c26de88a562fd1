// `eps-moe bench [suite ...] [--backend cpu|cuda] [--json FILE] [--quick] [--reps N] [--moe-schedule S]`:
// measures GEMM, expert GEMM, attention and whole-model prefill on one device. Tables go to stdout,
// progress lines to stderr, and with --json the whole report to FILE.
import { promises as fs } from 'fs';
import * as path from 'path';
import type { BackendKind } from '../native/addonTypes';
import { BenchError } from '../bench/errors';
import type { BenchReport } from '../bench/report';
import { runBench } from '../bench/runBench';
import { parseMoeSchedule, ScheduleParseError } from '../moe/schedule';
import { CliError } from './errors';

export interface BenchCliOptions {
  /** Positional suite names (gemm, experts, attention, prefill); none: all that fit. */
  suites?: string[];
  backend?: BackendKind;
  json?: string;
  quick?: boolean;
  reps?: number;
  moeSchedule?: string;
  /** The prefill suite's model (a preset) and changes to its config. */
  preset?: string;
  override?: string[];
}

export interface BenchCliStreams {
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

export async function benchCommand(
  opts: BenchCliOptions,
  streams: BenchCliStreams = { out: process.stdout, err: process.stderr },
): Promise<BenchReport> {
  let report: BenchReport;
  try {
    const schedule = opts.moeSchedule === undefined ? undefined : parseMoeSchedule(opts.moeSchedule);
    report = await runBench(
      {
        suites: opts.suites,
        backend: opts.backend,
        quick: opts.quick,
        reps: opts.reps,
        schedule,
        preset: opts.preset,
        overrides: opts.override,
      },
      {
        table: (text) => streams.out.write(text),
        progress: (line) => streams.err.write(`eps-moe bench: ${line}\n`),
      },
    );
  } catch (e) {
    // Bad usage is exit 2, as commander's own errors are.
    if (e instanceof BenchError && e.code !== 'BENCH_DOES_NOT_FIT') throw new CliError(e.message, 2);
    if (e instanceof ScheduleParseError) throw new CliError(e.message, 2);
    if (e instanceof BenchError) throw new CliError(e.message, 1);
    throw e;
  }
  if (opts.json) {
    const file = path.resolve(opts.json);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, JSON.stringify(report, null, 2) + '\n');
    streams.err.write(`eps-moe bench: wrote ${file}\n`);
  }
  return report;
}
