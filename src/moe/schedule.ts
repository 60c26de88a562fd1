// The --moe-schedule option: how the EPS scheduler may run each MoE layer.
//   auto                      the cost model picks the axis, the pipeline degree D and the kernels
//   baseline                  D = 1, dense kernels, no overlap: the plain path the others are measured against
//   fixed:D[:kernel][:axis]   D chunks; the kernel is the given one (grouped, dense, or grouped_sm90: the
//                             Hopper kernel, run as grouped where it cannot run), or the cost model's pick
//                             when omitted;
//                             the axis the chunks cut (default tokens):
//                               tokens   chunk i is a range of the rank's tokens (micro-chunks)
//                               experts  chunk i is a range of consecutive expert groups (all tokens);
//                                        needs D <= the layout's expert groups (--expert-groups G)
// e.g. fixed:4:dense:experts, fixed:2:tokens, fixed:1:grouped_sm90.
import { EXPERT_KERNELS, type ExpertKernel } from '../native/ops';

/** The axis a plan cuts the layer into chunks along. */
export type PlanAxis = 'tokens' | 'experts';

export type MoeSchedule =
  { kind: 'auto' } | { kind: 'baseline' } | { kind: 'fixed'; degree: number; kernel?: ExpertKernel; axis?: PlanAxis };

/**
 * The --dispatch option: how a MoE layer's dispatch sends rows (moe/exec/dedupDispatcher.ts).
 *   auto    the auto schedule's cost model weighs both below; baseline and fixed plans send pairs
 *   pairs   one row per (token, expert) pair: the usual expert-parallel dispatch
 *   dedup   one row per (token, destination rank) wherever it applies (the token axis, one expert
 *           group): auto weighs only dedup plans; the expert axis keeps the pairs
 */
export type DispatchMode = 'auto' | 'pairs' | 'dedup';

export const DISPATCH_MODES: readonly DispatchMode[] = ['auto', 'pairs', 'dedup'];

export class DispatchModeError extends Error {
  readonly code = 'EPS_BAD_DISPATCH';
}

/** A dispatch mode from text (case and spaces ignored); `where` names the text's source in the error. */
export function parseDispatchMode(text: string, where: string): DispatchMode {
  const mode = text.trim().toLowerCase();
  if (!(DISPATCH_MODES as readonly string[]).includes(mode)) {
    throw new DispatchModeError(`${where} must be one of ${DISPATCH_MODES.join(', ')}, got "${text}"`);
  }
  return mode as DispatchMode;
}

/** Whether the cost model chooses something in this schedule (auto, or fixed without a kernel). */
export function scheduleNeedsCostModel(s: MoeSchedule): boolean {
  return s.kind === 'auto' || (s.kind === 'fixed' && !s.kernel);
}

/** The largest pipeline degree fixed:D accepts; far beyond what hides an all-to-all. */
export const MAX_PIPELINE_DEGREE = 64;

/** Micro-chunks the router counts per layer when the schedule does not ask for more. */
export const DEFAULT_MICRO_CHUNKS = 8;

export const SCHEDULE_SYNTAX = `auto, baseline or fixed:D[:${EXPERT_KERNELS.join('|')}][:tokens|experts]`;

export class ScheduleParseError extends Error {
  readonly code = 'EPS_BAD_MOE_SCHEDULE';
  constructor(
    readonly input: string,
    reason: string,
  ) {
    super(`--moe-schedule ${JSON.stringify(input)}: ${reason}; expected ${SCHEDULE_SYNTAX}`);
    this.name = 'ScheduleParseError';
  }
}

const KERNELS: readonly ExpertKernel[] = EXPERT_KERNELS;
const AXES: readonly PlanAxis[] = ['tokens', 'experts'];

export function parseMoeSchedule(text: string): MoeSchedule {
  const input = text.trim().toLowerCase();
  if (input === '') throw new ScheduleParseError(text, 'the schedule is empty');
  if (input === 'auto') return { kind: 'auto' };
  if (input === 'baseline') return { kind: 'baseline' };
  const parts = input.split(':');
  if (parts[0] !== 'fixed') throw new ScheduleParseError(text, `unknown schedule "${parts[0]}"`);
  if (parts.length < 2 || parts[1] === '') throw new ScheduleParseError(text, 'fixed needs a pipeline degree D, e.g. fixed:4');
  if (parts.length > 4) {
    throw new ScheduleParseError(text, `too many parts (${parts.length}); fixed takes D, an optional kernel and an optional axis`);
  }
  // Digits only: Number() would also take "0x10", "1e1" and " 4".
  const degree = /^[0-9]+$/.test(parts[1]) ? Number(parts[1]) : NaN;
  if (!Number.isInteger(degree) || degree < 1 || degree > MAX_PIPELINE_DEGREE) {
    throw new ScheduleParseError(text, `D must be an integer from 1 to ${MAX_PIPELINE_DEGREE}, got "${parts[1]}"`);
  }
  const schedule: MoeSchedule = { kind: 'fixed', degree };
  const rest = parts.slice(2);
  // The axis may stand alone (fixed:4:experts) or follow the kernel (fixed:4:dense:experts).
  if (rest.length > 0 && isPlanAxis(rest[rest.length - 1])) schedule.axis = rest.pop() as PlanAxis;
  if (rest.length > 1) throw new ScheduleParseError(text, `axis must be tokens or experts, got "${rest[1]}"`);
  if (rest.length === 1) {
    if (!isExpertKernel(rest[0])) {
      const orAxis = parts.length === 3 ? ' (or the axis: tokens or experts)' : '';
      throw new ScheduleParseError(
        text,
        `kernel must be ${KERNELS.slice(0, -1).join(', ')} or ${KERNELS[KERNELS.length - 1]}, got "${rest[0]}"${orAxis}`,
      );
    }
    schedule.kernel = rest[0];
  }
  return schedule;
}

/** The option text of a schedule (parseMoeSchedule's inverse). */
export function formatMoeSchedule(s: MoeSchedule): string {
  if (s.kind !== 'fixed') return s.kind;
  return ['fixed', String(s.degree), ...(s.kernel ? [s.kernel] : []), ...(s.axis ? [s.axis] : [])].join(':');
}

/** The axis a schedule fixes, if it fixes one (baseline: tokens; auto chooses). */
export function scheduleAxis(s: MoeSchedule): PlanAxis | undefined {
  if (s.kind === 'baseline') return 'tokens';
  if (s.kind === 'fixed') return s.axis ?? 'tokens';
  return undefined;
}

/**
 * How many micro-chunks (M) the executor should count per layer for this schedule: chunks of the
 * token axis are unions of micro-chunks, so fixed:D needs M >= D there; the expert axis cuts groups
 * of every token, so a fixed plan of it needs one.
 */
export function microChunkCount(s: MoeSchedule, defaultCount = DEFAULT_MICRO_CHUNKS): number {
  if (s.kind === 'baseline') return 1;
  if (s.kind === 'fixed') return scheduleAxis(s) === 'experts' ? 1 : Math.max(defaultCount, s.degree);
  return defaultCount;
}

/**
 * Why a schedule cannot run on a layout of `groups` expert groups, or undefined when it can: a fixed
 * plan of the expert axis needs a group per chunk at least.
 */
export function scheduleLayoutProblem(s: MoeSchedule, groups: number): string | undefined {
  if (s.kind === 'fixed' && s.axis === 'experts' && s.degree > groups) {
    return `--moe-schedule ${formatMoeSchedule(s)} cuts ${s.degree} chunks along expert groups, but the layout has ${groups} (--expert-groups)`;
  }
  return undefined;
}

function isExpertKernel(s: string): s is ExpertKernel {
  return (KERNELS as readonly string[]).includes(s);
}

function isPlanAxis(s: string): s is PlanAxis {
  return (AXES as readonly string[]).includes(s);
}
