// A rank's answers off the main thread (src/cluster/answers.ts): the worker gives what topLogprobs gives inline, takes
// the logits' buffers rather than copying them, and a worker that cannot start leaves every answer inline.
import * as path from 'path';
import { Answers, answerAll, type AnswerJob } from '../src/cluster/answers';
import { createLogger } from '../src/rpc/log';

const REGISTER = path.join(__dirname, 'clusterTsRegister.js');

function jobs(seed: number, ks: number[], vocab = 5000): AnswerJob[] {
  let s = seed;
  const next = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 20 - 10;
  return ks.map((k, i) => ({ logits: Float32Array.from({ length: vocab }, next), k, tokens: 10 + i }));
}

function copies(js: AnswerJob[]): AnswerJob[] {
  return js.map((j) => ({ ...j, logits: j.logits.slice() }));
}

test('log-probs asked: the worker answers as topLogprobs does, and takes the logits instead of copying them', async () => {
  const answers = new Answers(createLogger({}, 'silent'), { execArgv: ['-r', REGISTER] });
  try {
    // Before the worker is up, answers are computed inline.
    const early = jobs(1, [3]);
    expect(await answers.answer(copies(early))).toEqual(answerAll(early));
    expect(await answers.started()).toBe(true);
    const step = jobs(2, [5, 0, 20]);
    const want = answerAll(copies(step));
    const got = await answers.answer(step);
    expect(got).toEqual(want);
    expect(got[2].topLogprobs).toHaveLength(20);
    expect(step[0].logits.byteLength).toBe(0); // moved to the worker
    // Steps in flight at once come back to their own callers.
    const many = [jobs(3, [1, 2]), jobs(4, [4]), jobs(5, [2, 2, 2])];
    const wants = many.map((m) => answerAll(copies(m)));
    expect(await Promise.all(many.map((m) => answers.answer(m)))).toEqual(wants);
  } finally {
    await answers.dispose();
  }
});

test('no log-probs asked: answered inline, the logits left as they are', async () => {
  const answers = new Answers(createLogger({}, 'silent'), { execArgv: ['-r', REGISTER] });
  try {
    const step = jobs(6, [0, 0]);
    expect(await answers.answer(step)).toEqual(answerAll(step));
    expect(step[0].logits.byteLength).toBe(5000 * 4);
  } finally {
    await answers.dispose();
  }
});

test('a worker that cannot start: every answer inline, one warning', async () => {
  const lines: string[] = [];
  const logger = createLogger({}, 'warn');
  const warn = jest.spyOn(logger, 'warn').mockImplementation(((obj: unknown, msg?: string) => {
    lines.push(`${msg ?? ''} ${JSON.stringify(obj)}`);
  }) as never);
  // No loader for .ts in the worker: it fails to load answerWorker.ts.
  const answers = new Answers(logger, { execArgv: [] });
  try {
    expect(await answers.started()).toBe(false);
    for (const seed of [7, 8]) {
      const step = jobs(seed, [5, 1]);
      expect(await answers.answer(copies(step))).toEqual(answerAll(step));
    }
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/answers' worker failed; computing answers on the main thread/);
  } finally {
    warn.mockRestore();
    await answers.dispose();
  }
});
