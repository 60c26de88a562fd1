// Runs the chosen suites on one device and returns the report; tables and progress go to the
// sinks the caller gives (the CLI: stdout and stderr).
import { addon, hasBackend, defaultBackend } from '../native/addon';
import type { BackendKind } from '../native/addonTypes';
import { Device } from '../native/device';
import { defaultDType } from '../engine/rankEngine';
import type { MoeSchedule } from '../moe/schedule';
import { attentionSuite } from './attentionSuite';
import { once, type BenchContext } from './context';
import { BenchError } from './errors';
import { expertsSuite } from './expertsSuite';
import { gemmSuite } from './gemmSuite';
import { measureCeiling } from './gemmTiming';
import { prefillSuite } from './prefillSuite';
import type { BenchReport, SuiteRows } from './report';
import { parseModelConfig } from '../model/config';
import { presetConfig } from '../model/makeModel';
import { benchSizes } from './sizes';
import { isSuiteName, SUITE_NAMES, type Suite, type SuiteName } from './suite';
import { formatTable } from './table';

export interface BenchOptions {
  /** Suite names; empty or undefined: every suite that fits. */
  suites?: readonly string[];
  backend?: BackendKind;
  /** Small shapes; always on for the CPU backend. */
  quick?: boolean;
  /** Timed repetitions per measurement (median); default per size class (sizes.ts). */
  reps?: number;
  /** How the MoE layers of the prefill suite run; default auto (the engine's default). */
  schedule?: MoeSchedule;
  /** The prefill suite's model: a preset (default per size class, sizes.ts) and changes to its config. */
  preset?: string;
  overrides?: readonly string[];
}

export interface BenchSinks {
  /** A suite's printed result (title, table, notes). */
  table(text: string): void;
  /** One progress line (no newline at the end). */
  progress(line: string): void;
}

const SUITES: { [K in SuiteName]: Suite<SuiteRows[K]> } = {
  gemm: gemmSuite,
  experts: expertsSuite,
  attention: attentionSuite,
  prefill: prefillSuite,
};

function chooseSuites(names: readonly string[] | undefined): { chosen: SuiteName[]; explicit: boolean } {
  if (!names || names.length === 0) return { chosen: [...SUITE_NAMES], explicit: false };
  const chosen: SuiteName[] = [];
  for (const n of names) {
    if (!isSuiteName(n)) throw new BenchError('BENCH_UNKNOWN_SUITE', `unknown suite '${n}' (suites: ${SUITE_NAMES.join(', ')})`);
    if (!chosen.includes(n)) chosen.push(n);
  }
  // Run in the canonical order whatever order they were named in: gemm first measures the ceiling.
  return { chosen: SUITE_NAMES.filter((n) => chosen.includes(n)), explicit: true };
}

function chooseBackend(asked: BackendKind | undefined): BackendKind {
  const backend = asked ?? defaultBackend();
  if (!hasBackend(backend)) {
    throw new BenchError(
      'BENCH_BACKEND_UNAVAILABLE',
      `backend '${backend}' is not available in this build (have: ${addon().backends().join(', ')})`,
    );
  }
  return backend;
}

export async function runBench(opts: BenchOptions, sinks: BenchSinks): Promise<BenchReport> {
  const { chosen, explicit } = chooseSuites(opts.suites);
  const backend = chooseBackend(opts.backend);
  if (opts.reps !== undefined && (!Number.isInteger(opts.reps) || opts.reps < 1)) {
    throw new BenchError('BENCH_OPTIONS', `reps must be a positive integer, got ${opts.reps}`);
  }
  const quick = backend === 'cpu' || opts.quick === true;
  const sizes = {
    ...benchSizes(quick),
    ...(opts.preset !== undefined && { prefillPreset: opts.preset }),
    prefillOverrides: opts.overrides ?? [],
  };
  if (opts.preset !== undefined || sizes.prefillOverrides.length > 0) {
    // A wrong preset or override is a usage error, said before any device work.
    try {
      parseModelConfig(presetConfig(sizes.prefillPreset, undefined, sizes.prefillOverrides), `preset ${sizes.prefillPreset}`);
    } catch (e) {
      throw new BenchError('BENCH_OPTIONS', (e as Error).message);
    }
  }
  const device = Device.open(backend, 0);
  const stream = device.stream();
  const dtype = defaultDType(backend);
  const reps = opts.reps ?? sizes.defaultReps;
  const report: BenchReport = {
    date: new Date().toISOString(),
    gpu: device.name,
    backend,
    versions: addon().versions(),
    node: process.version,
    quick,
    dtype,
    reps,
    ceiling: null,
    suites: {},
    notes: {},
    summary: {},
    skipped: {},
  };
  let seed = 1;
  const ctx: BenchContext = {
    device,
    stream,
    dtype,
    sizes,
    quick,
    timing: { warmup: sizes.warmup, reps },
    schedule: opts.schedule ?? { kind: 'auto' },
    nextSeed: () => seed++,
    progress: (message) => sinks.progress(message),
    ceiling: once(async () => {
      const c = await measureCeiling(ctx);
      report.ceiling = { side: c.side, tflops: c.tflops };
      return c;
    }),
  };
  sinks.table(`eps-moe bench on ${device.name} (${backend}, ${dtype}${quick ? ', quick sizes' : ''}), median of ${reps} reps\n`);
  try {
    for (const name of chosen) await runSuite(SUITES[name] as Suite<SuiteRows[SuiteName]>, ctx, report, sinks, explicit);
  } finally {
    stream.dispose();
    device.dispose();
  }
  return report;
}

async function runSuite(
  suite: Suite<SuiteRows[SuiteName]>,
  ctx: BenchContext,
  report: BenchReport,
  sinks: BenchSinks,
  explicit: boolean,
): Promise<void> {
  const reason = suite.doesNotFit?.(ctx);
  if (reason !== undefined) {
    if (explicit) throw new BenchError('BENCH_DOES_NOT_FIT', `suite ${suite.name}: ${reason}`);
    report.skipped[suite.name] = reason;
    sinks.table(`\n## ${suite.name}: skipped (${reason})\n`);
    return;
  }
  const out = await suite.run(ctx);
  (report.suites as Record<SuiteName, unknown[]>)[suite.name] = out.rows;
  report.notes[suite.name] = out.notes;
  if (out.summary) report.summary[suite.name] = out.summary;
  const notes = out.notes.map((n) => `  ${n}\n`).join('');
  sinks.table(`\n## ${suite.name}: ${suite.title}\n${formatTable(suite.columns, out.rows)}${notes}`);
}
