// topLogprobs against a reference written the plain way: full sort, log-sum-exp over all values in
// float64 with Math.log1p-free summation from the largest term down.
import { topLogprobs } from '../src/cluster/logprobs';

function reference(logits: Float32Array, k: number): { next: number; top: { token: number; logprob: number }[] } {
  const values = Array.from(logits);
  const order = values.map((_, i) => i).sort((a, b) => values[b] - values[a] || a - b);
  const max = values[order[0]];
  let sum = 0;
  for (const i of [...order].reverse()) sum += Math.exp(values[i] - max);
  const lse = max + Math.log(sum);
  return { next: order[0], top: order.slice(0, k).map((token) => ({ token, logprob: values[token] - lse })) };
}

function randomLogits(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 30;
  }
  return out;
}

describe('topLogprobs', () => {
  test.each([
    [160, 5],
    [32000, 20],
    [7, 7],
    [7, 12],
  ])('vocab %i, k %i: same tokens and log-probs as the reference', (n, k) => {
    const logits = randomLogits(n, n * 31 + k);
    const got = topLogprobs(logits, k, 9);
    const want = reference(logits, k);
    expect(got.nextToken).toBe(want.next);
    expect(got.tokenCount).toBe(9);
    expect(got.topLogprobs.map((t) => t.token)).toEqual(want.top.map((t) => t.token));
    got.topLogprobs.forEach((t, i) => expect(t.logprob).toBeCloseTo(want.top[i].logprob, 10));
  });

  test('ties go to the lower token id, for the argmax and within the top-k', () => {
    const logits = new Float32Array([1, 3, 2, 3, 2, 3]);
    const got = topLogprobs(logits, 4, 6);
    expect(got.nextToken).toBe(1);
    expect(got.topLogprobs.map((t) => t.token)).toEqual([1, 3, 5, 2]);
  });

  test('log-probs are exact for a uniform distribution and k = 0 returns none', () => {
    const logits = new Float32Array(4).fill(0.5);
    const got = topLogprobs(logits, 2, 1);
    for (const t of got.topLogprobs) expect(t.logprob).toBeCloseTo(-Math.log(4), 14);
    expect(topLogprobs(logits, 0, 1).topLogprobs).toEqual([]);
  });

  test('k = 0 (the normalizer skipped) still gives the argmax, lower id on ties, and the token count', () => {
    expect(topLogprobs(new Float32Array([1, 3, 2, 3]), 0, 4)).toEqual({ nextToken: 1, topLogprobs: [], tokenCount: 4 });
    const logits = randomLogits(32000, 5);
    expect(topLogprobs(logits, 0, 2).nextToken).toBe(reference(logits, 1).next);
  });

  test('large logits do not overflow (log-softmax is shifted by the max)', () => {
    const logits = new Float32Array([1000, 999, -1000]);
    const got = topLogprobs(logits, 2, 1);
    const lse = 1000 + Math.log(1 + Math.exp(-1) + Math.exp(-2000));
    expect(got.topLogprobs[0].logprob).toBeCloseTo(1000 - lse, 12);
    expect(got.topLogprobs[1].logprob).toBeCloseTo(999 - lse, 12);
  });
});
