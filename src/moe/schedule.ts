// The --moe-schedule option: how the EPS scheduler may run each MoE layer.
//   auto               the cost model picks the pipeline degree D and the kernels
//   baseline           D = 1, dense kernels, no overlap: the plain path the others are measured against
//   fixed:D[:kernel]   D chunks; the kernel is the given one, or the cost model's pick when omitted
import type { ExpertKernel } from '../native/ops';

export type MoeSchedule = { kind: 'auto' } | { kind: 'baseline' } | { kind: 'fixed'; degree: number; kernel?: ExpertKernel };

/** The largest pipeline degree fixed:D accepts; far beyond what hides an all-to-all. */
export const MAX_PIPELINE_DEGREE = 64;

/** Micro-chunks the router counts per layer when the schedule does not ask for more. */
export const DEFAULT_MICRO_CHUNKS = 8;

export class ScheduleParseError extends Error {
  readonly code = 'EPS_BAD_MOE_SCHEDULE';
  constructor(
    readonly input: string,
    reason: string,
  ) {
    super(`--moe-schedule ${JSON.stringify(input)}: ${reason}; expected auto, baseline or fixed:D[:grouped|dense]`);
    this.name = 'ScheduleParseError';
  }
}

const KERNELS: readonly ExpertKernel[] = ['grouped', 'dense'];

export function parseMoeSchedule(text: string): MoeSchedule {
  const input = text.trim().toLowerCase();
  if (input === '') throw new ScheduleParseError(text, 'the schedule is empty');
  if (input === 'auto') return { kind: 'auto' };
  if (input === 'baseline') return { kind: 'baseline' };
  const parts = input.split(':');
  if (parts[0] !== 'fixed') throw new ScheduleParseError(text, `unknown schedule "${parts[0]}"`);
  if (parts.length < 2 || parts[1] === '') throw new ScheduleParseError(text, 'fixed needs a pipeline degree D, e.g. fixed:4');
  if (parts.length > 3) throw new ScheduleParseError(text, `too many parts (${parts.length}); fixed takes D and an optional kernel`);
  // Digits only: Number() would also take "0x10", "1e1" and " 4".
  const degree = /^[0-9]+$/.test(parts[1]) ? Number(parts[1]) : NaN;
  if (!Number.isInteger(degree) || degree < 1 || degree > MAX_PIPELINE_DEGREE) {
    throw new ScheduleParseError(text, `D must be an integer from 1 to ${MAX_PIPELINE_DEGREE}, got "${parts[1]}"`);
  }
  if (parts.length === 2) return { kind: 'fixed', degree };
  const kernel = parts[2];
  if (!isExpertKernel(kernel)) throw new ScheduleParseError(text, `kernel must be grouped or dense, got "${kernel}"`);
  return { kind: 'fixed', degree, kernel };
}

/** The option text of a schedule (parseMoeSchedule's inverse). */
export function formatMoeSchedule(s: MoeSchedule): string {
  if (s.kind !== 'fixed') return s.kind;
  return s.kernel ? `fixed:${s.degree}:${s.kernel}` : `fixed:${s.degree}`;
}

/**
 * How many micro-chunks (M) the executor should count per layer for this schedule: chunks are
 * unions of micro-chunks, so fixed:D needs M >= D.
 */
export function microChunkCount(s: MoeSchedule, defaultCount = DEFAULT_MICRO_CHUNKS): number {
  if (s.kind === 'baseline') return 1;
  if (s.kind === 'fixed') return Math.max(defaultCount, s.degree);
  return defaultCount;
}

function isExpertKernel(s: string): s is ExpertKernel {
  return (KERNELS as readonly string[]).includes(s);
}
