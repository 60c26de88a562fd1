// The batcher is a pure function: each case states the queue and the plan a person works out by hand.
import { planStep, type BatchPolicy, type PendingSequence } from '../src/cluster/batcher';

const seq = (key: number, tokens: number, arrivalMs = 0): PendingSequence => ({ key, tokens, arrivalMs });
const policy = (ranks: number, maxTokensPerRank: number, maxWaitMs = 10): BatchPolicy => ({ ranks, maxTokensPerRank, maxWaitMs });

describe('planStep', () => {
  test('an empty queue is idle', () => {
    expect(planStep([], policy(2, 100), 0)).toEqual({ kind: 'idle' });
  });

  test('a step that is not full waits until the oldest sequence has waited maxWaitMs', () => {
    const queue = [seq(1, 5, 100), seq(2, 5, 104)];
    expect(planStep(queue, policy(2, 100, 10), 105)).toEqual({ kind: 'wait', untilMs: 110 });
    const plan = planStep(queue, policy(2, 100, 10), 110);
    expect(plan.kind).toBe('run');
  });

  test('a full step runs at once, without waiting', () => {
    // 60 + 60 fill two ranks of 60; the third sequence fits nowhere, so the step is full.
    const queue = [seq(1, 60, 0), seq(2, 60, 0), seq(3, 10, 0)];
    const plan = planStep(queue, policy(2, 60, 1000), 0);
    expect(plan).toEqual({ kind: 'run', taken: 2, perRank: [[1], [2]], tokensPerRank: [60, 60] });
  });

  test('a queue that fills every rank exactly runs at once (nothing more could join the step)', () => {
    // One request of 4 x 25 tokens on one rank of 100: the budget is met, no wait for company.
    const queue = [seq(1, 25, 0), seq(2, 25, 0), seq(3, 25, 0), seq(4, 25, 0)];
    expect(planStep(queue, policy(1, 100, 1000), 0)).toEqual({ kind: 'run', taken: 4, perRank: [[1, 2, 3, 4]], tokensPerRank: [100] });
    // One token short on one of two ranks: room left, so it waits.
    const short = [seq(1, 100, 0), seq(2, 99, 0)];
    expect(planStep(short, policy(2, 100, 1000), 0)).toEqual({ kind: 'wait', untilMs: 1000 });
  });

  test('sequences spread over ranks so that token counts balance (longest first)', () => {
    // 7, 5, 4, 3, 1 over 2 ranks, longest first onto the least loaded:
    // 7 -> r0, 5 -> r1, 4 -> r1 (9), 3 -> r0 (10), 1 -> r1 (10).
    const queue = [seq(1, 4), seq(2, 7), seq(3, 1), seq(4, 5), seq(5, 3)];
    const plan = planStep(queue, policy(2, 100, 0), 0);
    if (plan.kind !== 'run') throw new Error('expected run');
    expect(plan.tokensPerRank).toEqual([10, 10]);
    expect(plan.perRank[0].sort()).toEqual([2, 5]);
    expect(plan.perRank[1].sort()).toEqual([1, 3, 4]);
  });

  test('the step takes a FIFO prefix: a later short sequence never overtakes an earlier long one', () => {
    // Capacity 2 x 10. 8 -> r0, 8 -> r1, then 9 fits nowhere: the step is [8, 8] even though the
    // 2-token sequence behind the 9 would fit.
    const queue = [seq(1, 8), seq(2, 8), seq(3, 9), seq(4, 2)];
    const plan = planStep(queue, policy(2, 10, 0), 0);
    expect(plan).toEqual({ kind: 'run', taken: 2, perRank: [[1], [2]], tokensPerRank: [8, 8] });
  });

  test('ranks may be left without sequences (they still step)', () => {
    const plan = planStep([seq(1, 3)], policy(3, 10, 0), 0);
    expect(plan).toEqual({ kind: 'run', taken: 1, perRank: [[1], [], []], tokensPerRank: [3, 0, 0] });
  });

  test('no rank gets more than maxTokensPerRank tokens', () => {
    const queue = Array.from({ length: 40 }, (_, i) => seq(i, 1 + ((i * 7) % 13)));
    const plan = planStep(queue, policy(3, 25, 0), 0);
    if (plan.kind !== 'run') throw new Error('expected run');
    for (const t of plan.tokensPerRank) expect(t).toBeLessThanOrEqual(25);
    // Every key taken exactly once, and they are the first `taken` of the queue.
    const keys = plan.perRank.flat().sort((a, b) => a - b);
    expect(keys).toEqual(queue.slice(0, plan.taken).map((s) => s.key));
  });

  test('when longest-first does not fit, the arrival-order packing is used', () => {
    // Capacity 2 x 10, arrival order 4, 3, 3, 6, 4. Arrival order onto the least loaded fits all:
    // 4 -> r0, 3 -> r1, 3 -> r1 (6), 6 -> r0 (10), 4 -> r1 (10). Longest first (6, 4, 4, 3, 3) does not:
    // 6 -> r0, 4 -> r1, 4 -> r1 (8), 3 -> r0 (9), and the last 3 fits on neither.
    const queue = [seq(1, 4), seq(2, 3), seq(3, 3), seq(4, 6), seq(5, 4)];
    const plan = planStep(queue, policy(2, 10, 0), 0);
    expect(plan).toEqual({
      kind: 'run',
      taken: 5,
      perRank: [
        [1, 4],
        [2, 3, 5],
      ],
      tokensPerRank: [10, 10],
    });
  });

  test('a sequence longer than a rank takes is refused as a bug upstream', () => {
    expect(() => planStep([seq(1, 11)], policy(2, 10, 0), 0)).toThrow(/sequence 1 has 11 tokens/);
  });
});
