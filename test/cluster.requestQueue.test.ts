// The router's queue and step loop, driven by a scripted step executor (no engine: this tests only
// how requests are queued, batched, answered and failed). A rank's answer for a sequence is made up
// from the sequence itself (next token = sum of ids), so each answer can be checked against its request.
import { CancelledError, DeadlineExceededError, QueueFullError, UnavailableError } from '../src/rpc/errors';
import { createLogger } from '../src/rpc/log';
import type { StepResponseMsg, StepSequenceMsg } from '../src/rpc/protos';
import { RequestQueue, type StepExecutor } from '../src/cluster/requestQueue';

interface StepCall {
  stepId: number;
  perRank: StepSequenceMsg[][];
  answer(): void;
  fail(err: Error): void;
}

class ScriptedExecutor implements StepExecutor {
  readonly calls: StepCall[] = [];
  runStep(stepId: number, perRank: StepSequenceMsg[][]): Promise<StepResponseMsg[]> {
    return new Promise((resolve, reject) => {
      this.calls.push({
        stepId,
        perRank,
        answer: () =>
          resolve(
            perRank.map((seqs) => ({
              stepId,
              computeMs: 1,
              results: seqs.map((s) => ({ nextToken: sum(s.ids), topLogprobs: [], tokenCount: s.ids.length })),
            })),
          ),
        fail: reject,
      });
    });
  }
}

const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
const logger = createLogger({}, 'silent');
const flush = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function makeQueue(overrides: Partial<ConstructorParameters<typeof RequestQueue>[1]> = {}) {
  const executor = new ScriptedExecutor();
  let clock = 1000;
  const queue = new RequestQueue(executor, {
    ranks: 2,
    maxTokensPerRank: 10,
    maxWaitMs: 0,
    maxQueuedSequences: 8,
    // One step at a time unless a test says otherwise: the queue's behaviour is easier to follow.
    maxStepsInFlight: 1,
    logger,
    now: () => clock,
    ...overrides,
  });
  return { queue, executor, advance: (ms: number) => (clock += ms) };
}

const admitted = (sequences: number[][], requestId = 'r') => ({ requestId, sequences, topLogprobs: 0 });

describe('RequestQueue', () => {
  test('answers every sequence of a request, in request order, whichever rank ran it', async () => {
    const { queue, executor } = makeQueue();
    const handle = queue.submit(admitted([[1, 2, 3], [4], [5, 5]], 'a'), Infinity);
    expect(executor.calls).toHaveLength(1);
    // Balanced over 2 ranks: [1,2,3] (3 tokens) on one, [4] and [5,5] (3 tokens) on the other.
    const tokens = executor.calls[0].perRank.map((seqs) => sum(seqs.map((s) => s.ids.length)));
    expect(tokens).toEqual([3, 3]);
    executor.calls[0].answer();
    const res = await handle.done;
    expect(res.requestId).toBe('a');
    expect(res.sequences.map((s) => s.nextToken)).toEqual([6, 4, 10]);
    expect(res.sequences.map((s) => s.tokenCount)).toEqual([3, 1, 2]);
  });

  test('forms the next step while one runs, and no more than maxStepsInFlight at once', async () => {
    const { queue, executor } = makeQueue({ maxStepsInFlight: 2 });
    const first = queue.submit(admitted([[1]], 'first'), Infinity);
    const second = queue.submit(admitted([[2]], 'second'), Infinity);
    const third = queue.submit(admitted([[3, 3]], 'third'), Infinity);
    const fourth = queue.submit(admitted([[4]], 'fourth'), Infinity);
    // Steps 1 and 2 are out; the third and fourth requests wait for a slot.
    expect(executor.calls.map((c) => c.perRank.flat().map((s) => s.ids))).toEqual([[[1]], [[2]]]);
    expect(queue.queuedSequences).toBe(2);
    executor.calls[0].answer();
    expect((await first.done).sequences[0].nextToken).toBe(1);
    await flush();
    // One slot freed: both waiting requests go out together in step 3.
    expect(executor.calls).toHaveLength(3);
    expect(executor.calls[2].perRank.flat().map((s) => s.ids)).toEqual(expect.arrayContaining([[3, 3], [4]]));
    executor.calls[1].answer();
    executor.calls[2].answer();
    expect((await second.done).sequences[0].nextToken).toBe(2);
    expect((await third.done).sequences[0].nextToken).toBe(6);
    expect((await fourth.done).sequences[0].nextToken).toBe(4);
  });

  test('with maxStepsInFlight 1, what arrives during a step goes in the next one', async () => {
    const { queue, executor } = makeQueue({ maxStepsInFlight: 1 });
    const first = queue.submit(admitted([[1]], 'first'), Infinity);
    const second = queue.submit(admitted([[2]], 'second'), Infinity);
    const third = queue.submit(admitted([[3, 3]], 'third'), Infinity);
    expect(executor.calls).toHaveLength(1);
    expect(queue.queuedSequences).toBe(2);
    executor.calls[0].answer();
    await first.done;
    await flush();
    expect(executor.calls).toHaveLength(2);
    expect(executor.calls[1].perRank.flat().map((s) => s.ids)).toEqual(expect.arrayContaining([[2], [3, 3]]));
    executor.calls[1].answer();
    expect((await second.done).sequences[0].nextToken).toBe(2);
    expect((await third.done).sequences[0].nextToken).toBe(6);
  });

  test('a request that does not fit in the queue is refused whole, with RESOURCE_EXHAUSTED', async () => {
    const { queue, executor } = makeQueue({ maxQueuedSequences: 3 });
    queue.submit(admitted([[1]]), Infinity); // runs at once: not queued
    queue.submit(admitted([[1], [2]]), Infinity); // queued: 2
    expect(() => queue.submit(admitted([[1], [2]]), Infinity)).toThrow(QueueFullError);
    expect(queue.queuedSequences).toBe(2);
    const fits = queue.submit(admitted([[7]]), Infinity); // queued: 3
    expect(queue.queuedSequences).toBe(3);
    executor.calls[0].answer();
    await flush();
    executor.calls[1].answer();
    expect((await fits.done).sequences[0].nextToken).toBe(7);
    expect(new QueueFullError(3).grpcStatus).toBe(8); // RESOURCE_EXHAUSTED
  });

  test('a request whose deadline passed while queued fails with DEADLINE_EXCEEDED and never runs', async () => {
    const { queue, executor, advance } = makeQueue();
    queue.submit(admitted([[1]]), Infinity);
    const late = queue.submit(admitted([[9, 9]], 'late'), 50);
    const onTime = queue.submit(admitted([[4]], 'onTime'), 500);
    advance(100);
    executor.calls[0].answer();
    await expect(late.done).rejects.toBeInstanceOf(DeadlineExceededError);
    await flush();
    expect(executor.calls[1].perRank.flat().map((s) => s.ids)).toEqual([[4]]);
    executor.calls[1].answer();
    expect((await onTime.done).sequences[0].nextToken).toBe(4);
  });

  test('a cancelled request leaves the queue and never runs', async () => {
    const { queue, executor } = makeQueue();
    queue.submit(admitted([[1]]), Infinity);
    const gone = queue.submit(admitted([[5]], 'gone'), Infinity);
    gone.cancel();
    await expect(gone.done).rejects.toBeInstanceOf(CancelledError);
    expect(queue.queuedSequences).toBe(0);
    executor.calls[0].answer();
    await flush();
    expect(executor.calls).toHaveLength(1);
  });

  test('a failed step fails running and queued requests with UNAVAILABLE, and every later one', async () => {
    const { queue, executor } = makeQueue();
    const fatal = jest.fn();
    queue.onFatal(fatal);
    const running = queue.submit(admitted([[1]]), Infinity);
    const queued = queue.submit(admitted([[2]]), Infinity);
    executor.calls[0].fail(new Error('rank 1 lost'));
    await expect(running.done).rejects.toBeInstanceOf(UnavailableError);
    await expect(queued.done).rejects.toThrow(/step 1 failed: rank 1 lost/);
    expect(fatal).toHaveBeenCalledTimes(1);
    expect(() => queue.submit(admitted([[3]]), Infinity)).toThrow(UnavailableError);
  });

  test('a failure from outside (a lost rank) fails the running step at once, without waiting for it', async () => {
    const { queue, executor } = makeQueue();
    const running = queue.submit(admitted([[1]]), Infinity);
    queue.fail(new UnavailableError('rank 2 lost'));
    await expect(running.done).rejects.toThrow(/rank 2 lost/);
    executor.calls[0].answer(); // arrives late: ignored
    await flush();
    expect(executor.calls).toHaveLength(1);
  });

  test('draining refuses new requests and finishes the ones it has', async () => {
    const { queue, executor } = makeQueue();
    const a = queue.submit(admitted([[1]]), Infinity);
    const b = queue.submit(admitted([[2]]), Infinity);
    queue.stopAccepting('the server is draining');
    expect(() => queue.submit(admitted([[3]]), Infinity)).toThrow(/draining/);
    let idle = false;
    void queue.whenIdle().then(() => (idle = true));
    executor.calls[0].answer();
    await a.done;
    await flush();
    expect(idle).toBe(false);
    executor.calls[1].answer();
    await b.done;
    await flush();
    expect(idle).toBe(true);
  });

  test('a step that is not full waits maxWaitMs for more sequences', async () => {
    jest.useFakeTimers();
    try {
      const executor = new ScriptedExecutor();
      let clock = 0;
      const queue = new RequestQueue(executor, {
        ranks: 2,
        maxTokensPerRank: 10,
        maxWaitMs: 20,
        maxQueuedSequences: 8,
        logger,
        now: () => clock,
      });
      queue.submit(admitted([[1]]), Infinity);
      clock = 10;
      queue.submit(admitted([[2]]), Infinity);
      expect(executor.calls).toHaveLength(0);
      clock = 20;
      jest.advanceTimersByTime(20);
      expect(executor.calls).toHaveLength(1);
      expect(executor.calls[0].perRank.flat()).toHaveLength(2);
    } finally {
      jest.useRealTimers();
    }
  });
});
