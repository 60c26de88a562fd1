// The answer for one sequence, from the logits of its last position: the argmax token and the k
// most likely tokens with their log-probs. Log-softmax in float64 so the log-probs do not inherit
// fp32 rounding of the normalizer. Runs once per sequence on the rank that computed the logits, so
// only k numbers (not a vocab-sized vector) cross the network.
import type { SequenceResultMsg, TokenLogprobMsg } from '../rpc/protos';

/** Top-k of a logit vector: most likely first, ties broken by the lower token id. */
export function topLogprobs(logits: Float32Array, k: number, tokenCount: number): SequenceResultMsg {
  const n = logits.length;
  if (n === 0) throw new Error('topLogprobs: empty logits');
  let max = -Infinity;
  let argmax = 0;
  for (let i = 0; i < n; i++) {
    if (logits[i] > max) {
      max = logits[i];
      argmax = i;
    }
  }
  // No log-probs asked: the normalizer's pass (a vocabulary of exps, ~1 ms a sequence at 100K) is skipped; it sits
  // between two steps of the rank.
  if (k <= 0) return { nextToken: argmax, topLogprobs: [], tokenCount };
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[i] - max);
  const logNormalizer = max + Math.log(sum);

  const kk = Math.min(k, n);
  // Partial selection: keep the best kk in a small sorted array (k is small, vocab is large).
  const best: number[] = [];
  for (let i = 0; i < n && kk > 0; i++) {
    const v = logits[i];
    if (best.length === kk && !(v > logits[best[kk - 1]])) continue;
    let at = best.length;
    // Strictly greater moves ahead: equal values keep index order (the lower id first).
    while (at > 0 && v > logits[best[at - 1]]) at--;
    best.splice(at, 0, i);
    if (best.length > kk) best.pop();
  }
  const top: TokenLogprobMsg[] = best.map((token) => ({ token, logprob: logits[token] - logNormalizer }));
  return { nextToken: argmax, topLogprobs: top, tokenCount };
}
