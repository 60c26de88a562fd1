// The scheduler's model of a MoE layer's timeline across the cluster: every rank's compute stream
// runs its steps in order (plan.ts computeOrder); the comm stream runs the all-to-alls in order
// (commOrder), and an all-to-all is a collective: it starts once every rank has reached it and ends at
// the same time everywhere. Dependencies: dispatch i waits permute i on every rank, ffn i waits
// dispatch i, combine i waits ffn i on every rank, unpermute i waits combine i. Without overlap, the
// all-to-alls run on the compute stream itself.
//
// Every rank runs this on the same inputs (derived from the gathered counts only), so every rank
// predicts the same cluster timeline and makes the same choice of D.
import type { CommStep, ComputeStep, PredictedOp } from '../plan/plan';

export interface RankCosts {
  routerMs: number;
  sharedMs: number;
  /** Per chunk. */
  permuteMs: ArrayLike<number>;
  ffnMs: ArrayLike<number>;
  unpermuteMs: ArrayLike<number>;
}

export interface PipelineInput {
  overlap: boolean;
  commOrder: readonly CommStep[];
  computeOrder: readonly ComputeStep[];
  /** The dispatch of chunk i (and its combine, unless combineMs is given: they move the same rows). */
  commMs: ArrayLike<number>;
  /** The combine of chunk i when it differs from the dispatch (the dedup dispatch also sends slot metadata). */
  combineMs?: ArrayLike<number>;
  /**
   * The layer's host sync: the counts' read is enqueued after the router and the first `afterSteps`
   * compute steps; once every rank's read is done, the host needs `ms` (gather, plan) before it enqueues
   * anything else. The first `preSyncSteps` compute steps (>= afterSteps) were enqueued before it and
   * run regardless; later steps and every all-to-all start after it.
   */
  sync?: { ms: number; afterSteps: number; preSyncSteps: number };
  ranks: readonly RankCosts[];
}

export interface PipelineResult {
  /** The slowest rank's end (ms from the layer's start). */
  layerMs: number;
  rankEndMs: number[];
}

export class PipelineModelError extends Error {
  readonly code = 'EPS_PIPELINE_MODEL';
}

/** Predicts the layer's timeline; `timelineRank`, when given, also lists that rank's ops into `timeline`. */
export function simulatePipeline(input: PipelineInput, timelineRank?: number, timeline?: PredictedOp[]): PipelineResult {
  const { ranks, commOrder, computeOrder, overlap } = input;
  const world = ranks.length;
  const degree = input.commMs.length;
  const record = (rank: number, stream: PredictedOp['stream'], name: string, startMs: number, endMs: number) => {
    if (timeline && rank === timelineRank) timeline.push({ stream, name, startMs, endMs });
  };

  // End times of finished steps; NaN = not yet run.
  const permuteEnd = ranks.map(() => new Float64Array(degree).fill(NaN));
  const ffnEnd = ranks.map(() => new Float64Array(degree).fill(NaN));
  const dispatchEnd = new Float64Array(degree).fill(NaN);
  const combineEnd = new Float64Array(degree).fill(NaN);

  const computeFree = ranks.map((r, rank) => {
    record(rank, 'compute', 'router', 0, r.routerMs);
    return r.routerMs;
  });
  const next = new Array<number>(world).fill(0);
  let commFree = 0;
  let commNext = 0;
  const sync = input.sync;
  // When each rank's read of the counts is done, and when the host can enqueue again (NaN: not yet known).
  const readDone = new Float64Array(world).fill(NaN);
  let syncEnd = sync ? NaN : 0;
  /** Notes the rank's read once its steps before it have run; true when that makes the sync's end known. */
  const noteRead = (rank: number): boolean => {
    if (!sync || !Number.isNaN(readDone[rank]) || next[rank] < sync.afterSteps) return false;
    readDone[rank] = computeFree[rank];
    if (!readDone.every((t) => !Number.isNaN(t))) return false;
    syncEnd = Math.max(...readDone) + sync.ms;
    return true;
  };

  /** Runs the rank's compute steps until one waits on a collective that has not run. */
  const advance = (rank: number): boolean => {
    const r = ranks[rank];
    let moved = noteRead(rank);
    while (next[rank] < computeOrder.length) {
      const step = computeOrder[next[rank]];
      let ready = computeFree[rank];
      if (sync && next[rank] >= sync.preSyncSteps) {
        if (Number.isNaN(syncEnd)) break;
        ready = Math.max(ready, syncEnd);
      }
      let ms: number;
      let name: string;
      if (step.op === 'shared') {
        ms = r.sharedMs;
        name = 'shared';
      } else {
        const i = step.chunk;
        name = `${step.op} ${i}`;
        if (step.op === 'permute') ms = r.permuteMs[i];
        else if (step.op === 'ffn') {
          if (Number.isNaN(dispatchEnd[i])) break;
          ready = Math.max(ready, dispatchEnd[i]);
          ms = r.ffnMs[i];
        } else {
          if (Number.isNaN(combineEnd[i])) break;
          ready = Math.max(ready, combineEnd[i]);
          ms = r.unpermuteMs[i];
        }
      }
      const end = ready + ms;
      record(rank, 'compute', name, ready, end);
      computeFree[rank] = end;
      if (step.op === 'permute') permuteEnd[rank][step.chunk] = end;
      else if (step.op === 'ffn') ffnEnd[rank][step.chunk] = end;
      next[rank]++;
      noteRead(rank);
      moved = true;
    }
    return moved;
  };

  /** Runs the next all-to-all if every rank has produced its input. */
  const collective = (): boolean => {
    if (commNext >= commOrder.length) return false;
    const { op, chunk: i } = commOrder[commNext];
    const inputs = op === 'dispatch' ? permuteEnd : ffnEnd;
    if (Number.isNaN(syncEnd)) return false;
    let ready = Math.max(commFree, syncEnd);
    for (let rank = 0; rank < world; rank++) {
      const t = inputs[rank][i];
      if (Number.isNaN(t)) return false;
      ready = Math.max(ready, t);
      // One stream: the collective also waits for whatever the rank enqueued before it.
      if (!overlap) ready = Math.max(ready, computeFree[rank]);
    }
    const end = ready + (op === 'combine' && input.combineMs ? input.combineMs[i] : input.commMs[i]);
    for (let rank = 0; rank < world; rank++) {
      record(rank, overlap ? 'comm' : 'compute', `${op} ${i}`, ready, end);
      if (!overlap) computeFree[rank] = end;
    }
    commFree = end;
    (op === 'dispatch' ? dispatchEnd : combineEnd)[i] = end;
    commNext++;
    return true;
  };

  for (;;) {
    let moved = false;
    for (let rank = 0; rank < world; rank++) moved = advance(rank) || moved;
    moved = collective() || moved;
    if (!moved) break;
  }
  if (commNext < commOrder.length || next.some((n) => n < computeOrder.length)) {
    throw new PipelineModelError(`the step orders deadlock (comm step ${commNext} of ${commOrder.length})`);
  }
  return { layerMs: Math.max(0, ...computeFree), rankEndMs: computeFree };
}
