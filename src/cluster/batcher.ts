// The batcher: decides, from the queue alone, whether to start a step now and which sequences each
// rank runs in it. A pure function of (queue, policy, now), so every decision is unit-tested.
//
// Rules:
// - FIFO: a step takes a prefix of the queue (no sequence overtakes an older one, so none starves).
// - Bounded tokens: each rank runs at most maxTokensPerRank tokens per step; the prefix ends at the
//   first sequence that fits on no rank.
// - Balanced: the prefix is spread over ranks so that their token counts are as even as the
//   sequences allow (data-parallel attention: a step lasts as long as its busiest rank), by
//   longest-first onto the least-loaded rank.
// - Bounded wait: a step that is not full starts once its oldest sequence has waited maxWaitMs. Full: a
//   sequence is left behind, or every rank is at its token budget (no sequence could join).

export interface PendingSequence {
  /** Caller's handle for the sequence (returned in the plan). */
  readonly key: number;
  readonly tokens: number;
  /** When the sequence entered the queue (ms, same clock as `nowMs`). */
  readonly arrivalMs: number;
}

export interface BatchPolicy {
  readonly ranks: number;
  readonly maxTokensPerRank: number;
  readonly maxWaitMs: number;
}

export type StepPlan =
  | { readonly kind: 'idle' }
  | { readonly kind: 'wait'; readonly untilMs: number }
  | {
      readonly kind: 'run';
      /** How many queue entries (a prefix) the step takes. */
      readonly taken: number;
      /** Per rank, the keys of its sequences (possibly none). */
      readonly perRank: number[][];
      /** Per rank, its token count. */
      readonly tokensPerRank: number[];
    };

export function planStep(queue: readonly PendingSequence[], policy: BatchPolicy, nowMs: number): StepPlan {
  if (policy.ranks < 1 || policy.maxTokensPerRank < 1) throw new Error('planStep: need ranks >= 1 and maxTokensPerRank >= 1');
  if (queue.length === 0) return { kind: 'idle' };
  for (const s of queue) {
    // Admission refuses these; reaching here is a bug upstream, not a reason to stall the queue.
    if (s.tokens < 1 || s.tokens > policy.maxTokensPerRank) {
      throw new Error(`planStep: sequence ${s.key} has ${s.tokens} tokens; each must be in [1, ${policy.maxTokensPerRank}]`);
    }
  }

  const prefix = fittingPrefix(queue, policy);
  const full = prefix.count < queue.length || prefix.load.every((tokens) => tokens === policy.maxTokensPerRank);
  const oldest = queue[0].arrivalMs;
  if (!full && nowMs < oldest + policy.maxWaitMs) return { kind: 'wait', untilMs: oldest + policy.maxWaitMs };

  const chosen = queue.slice(0, prefix.count);
  const balanced = longestFirst(chosen, policy);
  const assignment = balanced ?? prefix.assignment;
  const perRank: number[][] = Array.from({ length: policy.ranks }, () => []);
  const tokensPerRank = new Array<number>(policy.ranks).fill(0);
  chosen.forEach((s, i) => {
    perRank[assignment[i]].push(s.key);
    tokensPerRank[assignment[i]] += s.tokens;
  });
  return { kind: 'run', taken: prefix.count, perRank, tokensPerRank };
}

/** The longest queue prefix that fits, placing each in arrival order on the least-loaded rank it fits. */
function fittingPrefix(queue: readonly PendingSequence[], policy: BatchPolicy): { count: number; assignment: number[]; load: number[] } {
  const load = new Array<number>(policy.ranks).fill(0);
  const assignment: number[] = [];
  for (const s of queue) {
    const rank = leastLoadedFitting(load, s.tokens, policy.maxTokensPerRank);
    if (rank < 0) break;
    load[rank] += s.tokens;
    assignment.push(rank);
  }
  return { count: assignment.length, assignment, load };
}

/** Longest-first onto the least-loaded rank (better balance); null when that packing does not fit. */
function longestFirst(chosen: readonly PendingSequence[], policy: BatchPolicy): number[] | null {
  const order = chosen.map((_, i) => i).sort((a, b) => chosen[b].tokens - chosen[a].tokens || a - b);
  const load = new Array<number>(policy.ranks).fill(0);
  const assignment = new Array<number>(chosen.length);
  for (const i of order) {
    const rank = leastLoadedFitting(load, chosen[i].tokens, policy.maxTokensPerRank);
    if (rank < 0) return null;
    load[rank] += chosen[i].tokens;
    assignment[i] = rank;
  }
  return assignment;
}

/** The rank with the fewest tokens that still has room for `tokens` (ties: the lower rank); -1 if none. */
function leastLoadedFitting(load: readonly number[], tokens: number, cap: number): number {
  let best = -1;
  for (let r = 0; r < load.length; r++) {
    if (load[r] + tokens > cap) continue;
    if (best < 0 || load[r] < load[best]) best = r;
  }
  return best;
}
