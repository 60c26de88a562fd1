// The router's request loop: a bounded queue of sequences, the batcher's plans turned into steps on
// every rank, and the answers put back together per request. Every rank takes part in every step
// and runs them in step order; the router forms the next step while one runs and sends it at once
// (up to maxStepsInFlight), so that ranks go from one step to the next without waiting for a round
// trip. Deadlines and cancellations are checked when a step is formed, before its sequences reach
// a rank; a failed step or a lost rank fails every request with UNAVAILABLE and stops the loop.
import { performance } from 'node:perf_hooks';
import { planStep, type BatchPolicy, type PendingSequence } from './batcher';
import {
  CancelledError,
  ClusterError,
  DeadlineExceededError,
  NonFiniteResultError,
  QueueFullError,
  UnavailableError,
  messageOf,
} from '../rpc/errors';
import type { Logger } from '../rpc/log';
import type { PrefillResponseMsg, SequenceResultMsg, StepResponseMsg, StepSequenceMsg } from '../rpc/protos';
import type { AdmittedRequest } from './validate';

/** Runs one step on every rank: perRank[r] goes to rank r; resolves with every rank's answer, in rank order. */
export interface StepExecutor {
  runStep(stepId: number, perRank: StepSequenceMsg[][]): Promise<StepResponseMsg[]>;
}

export interface RequestQueueOptions extends BatchPolicy {
  /** Sequences waiting (not yet running) beyond which a request is refused with RESOURCE_EXHAUSTED. */
  maxQueuedSequences: number;
  /** Steps sent to the ranks and not yet answered: 1 = one at a time; 2 = the next one formed while one runs. */
  maxStepsInFlight?: number;
  logger: Logger;
  /** Milliseconds, monotonic; tests may pass their own. */
  now?: () => number;
}

export interface RequestHandle {
  readonly done: Promise<PrefillResponseMsg>;
  /** The client went away: drop what has not run yet. */
  cancel(): void;
}

interface Job {
  readonly requestId: string;
  readonly sequences: number[][];
  readonly topLogprobs: number;
  readonly arrivalMs: number;
  readonly deadlineMs: number;
  readonly results: (SequenceResultMsg | null)[];
  remaining: number;
  startedMs: number | null;
  computeMs: number;
  settled: boolean;
  resolve(res: PrefillResponseMsg): void;
  reject(err: Error): void;
}

interface QueuedSequence extends PendingSequence {
  readonly job: Job;
  readonly index: number;
}

export class RequestQueue {
  private readonly opts: RequestQueueOptions;
  private readonly now: () => number;
  private queue: QueuedSequence[] = [];
  private nextKey = 1;
  private stepCount = 0;
  private running = 0;
  private readonly maxInFlight: number;
  private timer: NodeJS.Timeout | null = null;
  private failure: ClusterError | null = null;
  private refusal: string | null = null;
  private readonly inFlight = new Set<Job>();
  private idleWaiters: (() => void)[] = [];
  private readonly fatalListeners: ((err: ClusterError) => void)[] = [];

  constructor(
    private readonly executor: StepExecutor,
    opts: RequestQueueOptions,
  ) {
    this.opts = opts;
    this.now = opts.now ?? (() => performance.now());
    this.maxInFlight = Math.max(1, opts.maxStepsInFlight ?? 2);
  }

  get queuedSequences(): number {
    return this.queue.length;
  }
  get stepsRun(): number {
    return this.stepCount;
  }

  /** Called once when a step fails: the cluster can no longer serve. */
  onFatal(listener: (err: ClusterError) => void): void {
    this.fatalListeners.push(listener);
  }

  /**
   * Queues an admitted request. `timeoutMs` is what is left of the client's deadline (Infinity for
   * none). Throws QueueFullError (nothing queued) when the queue cannot take all its sequences.
   */
  submit(req: AdmittedRequest, timeoutMs: number): RequestHandle {
    if (this.failure) throw new UnavailableError(this.failure.message);
    if (this.refusal !== null) throw new UnavailableError(this.refusal);
    if (this.queue.length + req.sequences.length > this.opts.maxQueuedSequences) throw new QueueFullError(this.opts.maxQueuedSequences);
    const arrivalMs = this.now();
    let resolve!: (res: PrefillResponseMsg) => void;
    let reject!: (err: Error) => void;
    const done = new Promise<PrefillResponseMsg>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const job: Job = {
      requestId: req.requestId,
      sequences: req.sequences,
      topLogprobs: req.topLogprobs,
      arrivalMs,
      deadlineMs: arrivalMs + timeoutMs,
      results: new Array<SequenceResultMsg | null>(req.sequences.length).fill(null),
      remaining: req.sequences.length,
      startedMs: null,
      computeMs: 0,
      settled: false,
      resolve,
      reject,
    };
    this.inFlight.add(job);
    req.sequences.forEach((ids, index) => this.queue.push({ key: this.nextKey++, tokens: ids.length, arrivalMs, job, index }));
    this.pump();
    return {
      done,
      cancel: () => {
        if (this.settle(job, new CancelledError())) this.dropSettled();
      },
    };
  }

  /** New requests get UNAVAILABLE with `reason`; queued and running ones still finish (drain). */
  stopAccepting(reason: string): void {
    this.refusal = reason;
  }

  /** Resolves once nothing is queued or running. */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The cluster broke: fails every queued and running request with `err`, stops, tells onFatal listeners. */
  fail(err: ClusterError): void {
    if (this.failure) return;
    this.close(err);
    for (const l of this.fatalListeners) l(err);
  }

  /** Stops for good (a planned stop): what is still queued or running fails with `err`. */
  close(err: ClusterError): void {
    if (this.failure) return;
    this.failure = err;
    this.clearTimer();
    for (const job of [...this.inFlight]) this.settle(job, err);
    this.queue = [];
    this.notifyIdle();
  }

  private pump(): void {
    if (this.failure || this.running >= this.maxInFlight) return;
    this.clearTimer();
    const now = this.now();
    this.expire(now);
    const plan = planStep(this.queue, this.opts, now);
    if (plan.kind === 'idle') {
      this.notifyIdle();
      return;
    }
    if (plan.kind === 'wait') {
      this.timer = setTimeout(() => this.pump(), Math.max(0, plan.untilMs - now));
      return;
    }
    const byKey = new Map(this.queue.slice(0, plan.taken).map((s) => [s.key, s]));
    this.queue = this.queue.slice(plan.taken);
    const perRank = plan.perRank.map((keys) => keys.map((k) => byKey.get(k) as QueuedSequence));
    this.launch(perRank, now);
  }

  private launch(perRank: QueuedSequence[][], startMs: number): void {
    const stepId = ++this.stepCount;
    this.running++;
    const jobs = new Set<Job>();
    for (const seqs of perRank) {
      for (const s of seqs) {
        jobs.add(s.job);
        s.job.startedMs ??= startMs;
      }
    }
    const request = perRank.map((seqs) => seqs.map((s) => ({ ids: s.job.sequences[s.index], topLogprobs: s.job.topLogprobs })));
    this.opts.logger.debug({ stepId, tokensPerRank: request.map((r) => r.reduce((a, s) => a + s.ids.length, 0)) }, 'step start');
    this.executor
      .runStep(stepId, request)
      .then(
        (responses) => this.finishStep(stepId, perRank, jobs, responses, this.now() - startMs),
        (err: unknown) => this.fail(err instanceof ClusterError ? err : new UnavailableError(`step ${stepId} failed: ${messageOf(err)}`)),
      )
      .finally(() => {
        this.running--;
        this.pump();
      });
  }

  private finishStep(stepId: number, perRank: QueuedSequence[][], jobs: Set<Job>, responses: StepResponseMsg[], ms: number): void {
    if (this.failure) return;
    for (let r = 0; r < perRank.length; r++) {
      const results = responses[r]?.results ?? [];
      if (results.length !== perRank[r].length) {
        this.fail(new UnavailableError(`step ${stepId}: rank ${r} answered ${results.length} sequences of ${perRank[r].length}`));
        return;
      }
      perRank[r].forEach((s, i) => {
        if (s.job.results[s.index] === null) s.job.remaining--;
        s.job.results[s.index] = results[i];
      });
      // A sequence whose logits were not finite fails its request (INTERNAL, naming it); the cluster goes on.
      for (const nf of responses[r]?.nonfinite ?? []) {
        const s = perRank[r][nf.index];
        if (!s) continue;
        const err = new NonFiniteResultError(`sequences[${s.index}]: ${nf.message}`);
        this.opts.logger.error({ requestId: s.job.requestId, stepId, rank: r, err: err.message }, 'non-finite result');
        this.settle(s.job, err);
      }
    }
    for (const job of jobs) {
      job.computeMs += ms;
      if (job.remaining === 0 && !job.settled) {
        job.settled = true;
        this.inFlight.delete(job);
        job.resolve({
          requestId: job.requestId,
          sequences: job.results as SequenceResultMsg[],
          queueMs: (job.startedMs ?? job.arrivalMs) - job.arrivalMs,
          computeMs: job.computeMs,
        });
      }
    }
    this.opts.logger.debug({ stepId, ms }, 'step done');
  }

  /** Fails the queued requests whose deadline has passed (before any more of them runs). */
  private expire(now: number): void {
    let any = false;
    for (const s of this.queue) {
      if (!s.job.settled && now >= s.job.deadlineMs)
        any = this.settle(s.job, new DeadlineExceededError('while queued, before compute')) || any;
    }
    if (any || this.queue.some((s) => s.job.settled)) this.dropSettled();
  }

  private settle(job: Job, err: Error): boolean {
    if (job.settled) return false;
    job.settled = true;
    this.inFlight.delete(job);
    job.reject(err);
    return true;
  }

  private dropSettled(): void {
    this.queue = this.queue.filter((s) => !s.job.settled);
    if (this.isIdle()) this.notifyIdle();
  }

  private isIdle(): boolean {
    return this.failure !== null || (this.running === 0 && this.queue.length === 0);
  }

  private notifyIdle(): void {
    if (!this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
