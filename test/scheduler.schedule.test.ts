// --moe-schedule parsing: the accepted spellings, their meaning, and one clear error per mistake.
import { MAX_PIPELINE_DEGREE, ScheduleParseError, formatMoeSchedule, microChunkCount, parseMoeSchedule } from '../src/moe/schedule';

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
    ['fixed:4:cublas', /kernel must be grouped or dense, got "cublas"/],
    ['fixed:4:', /kernel must be grouped or dense, got ""/],
    ['fixed:4:dense:x', /too many parts/],
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
    expect((err as Error).message).toMatch(/expected auto, baseline or fixed:D\[:grouped\|dense\]/);
  });
});

test('formatMoeSchedule inverts parsing', () => {
  for (const text of ['auto', 'baseline', 'fixed:3', 'fixed:16:grouped', 'fixed:1:dense']) {
    expect(formatMoeSchedule(parseMoeSchedule(text))).toBe(text);
  }
});

test('microChunkCount gives fixed:D at least D micro-chunks', () => {
  expect(microChunkCount({ kind: 'auto' })).toBe(8);
  expect(microChunkCount({ kind: 'auto' }, 16)).toBe(16);
  expect(microChunkCount({ kind: 'baseline' })).toBe(1);
  expect(microChunkCount({ kind: 'fixed', degree: 4 })).toBe(8);
  expect(microChunkCount({ kind: 'fixed', degree: 12, kernel: 'dense' })).toBe(12);
});
