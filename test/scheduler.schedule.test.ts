// --moe-schedule parsing: the accepted spellings, their meaning, and one clear error per mistake.
import {
  MAX_PIPELINE_DEGREE,
  ScheduleParseError,
  formatMoeSchedule,
  microChunkCount,
  parseMoeSchedule,
  scheduleLayoutProblem,
} from '../src/moe/schedule';
import { defaultExpertKernel, effectiveSchedule } from '../src/engine/rankEngine';
import type { CostModel } from '../src/moe/cost/costModel';
import type { Device } from '../src/native/device';
import type { ModelSpec } from '../src/model/config';

describe('parseMoeSchedule', () => {
  test.each([
    ['auto', { kind: 'auto' }],
    ['baseline', { kind: 'baseline' }],
    [' AUTO ', { kind: 'auto' }],
    ['fixed:1', { kind: 'fixed', degree: 1 }],
    ['fixed:4', { kind: 'fixed', degree: 4 }],
    ['fixed:8:grouped', { kind: 'fixed', degree: 8, kernel: 'grouped' }],
    ['fixed:2:dense', { kind: 'fixed', degree: 2, kernel: 'dense' }],
    [`fixed:${MAX_PIPELINE_DEGREE}`, { kind: 'fixed', degree: MAX_PIPELINE_DEGREE }],
    ['fixed:4:dense:experts', { kind: 'fixed', degree: 4, kernel: 'dense', axis: 'experts' }],
    ['fixed:2:experts', { kind: 'fixed', degree: 2, axis: 'experts' }],
    ['fixed:2:grouped:tokens', { kind: 'fixed', degree: 2, kernel: 'grouped', axis: 'tokens' }],
    ['fixed:1:grouped_sm90', { kind: 'fixed', degree: 1, kernel: 'grouped_sm90' }],
    ['fixed:4:GROUPED_SM90:experts', { kind: 'fixed', degree: 4, kernel: 'grouped_sm90', axis: 'experts' }],
    ['Fixed:8:Tokens', { kind: 'fixed', degree: 8, axis: 'tokens' }],
  ])('%s', (text, expected) => {
    expect(parseMoeSchedule(text)).toEqual(expected);
  });

  test.each([
    ['', /empty/],
    ['fast', /unknown schedule "fast"/],
    ['fixed', /needs a pipeline degree/],
    ['fixed:', /needs a pipeline degree/],
    ['fixed:0', /D must be an integer from 1 to 64, got "0"/],
    ['fixed:-2', /D must be an integer/],
    ['fixed:2.5', /D must be an integer/],
    ['fixed:0x4', /D must be an integer/],
    ['fixed:1e1', /D must be an integer/],
    [`fixed:${MAX_PIPELINE_DEGREE + 1}`, /D must be an integer from 1 to 64, got "65"/],
    ['fixed:4:cublas', /kernel must be grouped, dense or grouped_sm90, got "cublas"/],
    ['fixed:4:', /kernel must be grouped, dense or grouped_sm90, got ""/],
    ['fixed:4:dense:x', /axis must be tokens or experts, got "x"/],
    ['fixed:4:experts:dense', /axis must be tokens or experts, got "dense"/],
    ['fixed:4:x:experts', /kernel must be grouped, dense or grouped_sm90, got "x";/],
    ['fixed:4:dense:experts:x', /too many parts/],
    ['auto:2', /unknown schedule "auto"/],
  ])('rejects %j', (text, message) => {
    let err: unknown;
    try {
      parseMoeSchedule(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ScheduleParseError);
    expect((err as ScheduleParseError).code).toBe('EPS_BAD_MOE_SCHEDULE');
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message).toMatch(/expected auto, baseline or fixed:D\[:grouped\|dense\|grouped_sm90\]\[:tokens\|experts\]/);
  });
});

test('formatMoeSchedule inverts parsing', () => {
  for (const text of [
    'auto',
    'baseline',
    'fixed:3',
    'fixed:16:grouped',
    'fixed:1:dense',
    'fixed:4:dense:experts',
    'fixed:2:experts',
    'fixed:2:tokens',
  ]) {
    expect(formatMoeSchedule(parseMoeSchedule(text))).toBe(text);
  }
});

test('microChunkCount gives fixed:D at least D micro-chunks on the token axis', () => {
  expect(microChunkCount({ kind: 'auto' })).toBe(8);
  expect(microChunkCount({ kind: 'auto' }, 16)).toBe(16);
  expect(microChunkCount({ kind: 'baseline' })).toBe(1);
  expect(microChunkCount({ kind: 'fixed', degree: 4 })).toBe(8);
  expect(microChunkCount({ kind: 'fixed', degree: 12, kernel: 'dense' })).toBe(12);
  // The expert axis cuts groups of every token: one micro-chunk suffices.
  expect(microChunkCount({ kind: 'fixed', degree: 12, axis: 'experts' })).toBe(1);
});

test('an expert-axis D needs as many expert groups', () => {
  expect(scheduleLayoutProblem(parseMoeSchedule('fixed:4:dense:experts'), 4)).toBeUndefined();
  expect(scheduleLayoutProblem(parseMoeSchedule('fixed:4:dense:experts'), 2)).toMatch(
    /cuts 4 chunks along expert groups, but the layout has 2/,
  );
  expect(scheduleLayoutProblem(parseMoeSchedule('fixed:8:dense'), 1)).toBeUndefined();
  expect(scheduleLayoutProblem(parseMoeSchedule('auto'), 1)).toBeUndefined();
});

describe('effectiveSchedule: what runs without a cost model', () => {
  const model = {} as CostModel; // only its presence matters
  test('one rank, no model: auto is one chunk and fixed picks the dense kernel; given kernels stay', () => {
    expect(effectiveSchedule(parseMoeSchedule('auto'), undefined, 1)).toEqual({ kind: 'fixed', degree: 1, kernel: 'dense' });
    expect(effectiveSchedule(parseMoeSchedule('fixed:2'), undefined, 1)).toEqual({ kind: 'fixed', degree: 2, kernel: 'dense' });
    expect(effectiveSchedule(parseMoeSchedule('fixed:2:grouped'), undefined, 1)).toEqual(parseMoeSchedule('fixed:2:grouped'));
  });
  test('one rank, no model, a kernel given: auto and fixed without a kernel take it', () => {
    expect(effectiveSchedule(parseMoeSchedule('auto'), undefined, 1, 'grouped_sm90')).toEqual({ kind: 'fixed', degree: 1, kernel: 'grouped_sm90' });
    expect(effectiveSchedule(parseMoeSchedule('fixed:2'), undefined, 1, 'grouped_sm90')).toEqual({ kind: 'fixed', degree: 2, kernel: 'grouped_sm90' });
    expect(effectiveSchedule(parseMoeSchedule('fixed:1:dense'), undefined, 1, 'grouped_sm90')).toEqual(parseMoeSchedule('fixed:1:dense'));
  });
  test('with a model, or several ranks (the cluster measures one): unchanged', () => {
    expect(effectiveSchedule(parseMoeSchedule('fixed:2'), model, 1)).toEqual(parseMoeSchedule('fixed:2'));
    expect(effectiveSchedule(parseMoeSchedule('auto'), undefined, 2)).toEqual({ kind: 'auto' });
  });
});

describe('defaultExpertKernel: the kernel without a cost model', () => {
  // Only expertKernelsOf's input matters: what the addon says it runs as itself.
  const deviceRunning = (kernels: string[]) => ({ native: { expertKernels: kernels } }) as unknown as Device;
  const spec = (hidden: number, inter: number, numExperts = 128, topK = 8) =>
    ({ hiddenSize: hidden, moe: { expertIntermediate: inter, numExperts, topK } }) as unknown as ModelSpec;
  test('grouped_sm90 where the device runs it and both expert GEMMs suit it', () => {
    expect(defaultExpertKernel(deviceRunning(['grouped', 'dense', 'grouped_sm90']), 'bf16', spec(2048, 768))).toBe('grouped_sm90');
  });
  test('dense off Hopper, for f32 activations, and for widths that are not multiples of 8', () => {
    expect(defaultExpertKernel(deviceRunning(['grouped', 'dense']), 'bf16', spec(2048, 768))).toBe('dense');
    expect(defaultExpertKernel(deviceRunning(['grouped', 'dense', 'grouped_sm90']), 'f32', spec(2048, 768))).toBe('dense');
    expect(defaultExpertKernel(deviceRunning(['grouped', 'dense', 'grouped_sm90']), 'bf16', spec(2048, 100))).toBe('dense');
  });
  test('dense for few large experts per chosen one (Mixtral 8 / top-2, DBRX 16 / top-4), grouped_sm90 from E = 8k', () => {
    const hopper = deviceRunning(['grouped', 'dense', 'grouped_sm90']);
    expect(defaultExpertKernel(hopper, 'bf16', spec(4096, 14336, 8, 2))).toBe('dense');
    expect(defaultExpertKernel(hopper, 'bf16', spec(6144, 10752, 16, 4))).toBe('dense');
    expect(defaultExpertKernel(hopper, 'bf16', spec(2048, 1408, 64, 8))).toBe('grouped_sm90');
    expect(defaultExpertKernel(hopper, 'bf16', spec(2048, 1408, 63, 8))).toBe('dense');
  });
});
