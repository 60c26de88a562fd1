// A rank's answers (argmax and top log-probs per sequence) off the thread that drives the device. With log-probs
// asked (`eps-moe prefill` asks 5 by default), the log-softmax's pass over the vocabulary costs ~1.3-1.7 ms a
// sequence (13 ms for 8 x 102400 logits on a 2-core machine: BENCHMARKS.md, session 11); on the main thread it holds
// the next step's enqueueing back, the GPU idle meanwhile. A worker thread computes them while the next step runs.
// Without log-probs the argmax alone is cheap and stays inline. Until the worker has said it is ready, and for good
// if it cannot start, answers are computed inline (a warning, once); if it dies with answers pending, those steps fail.
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../rpc/log';
import type { SequenceResultMsg } from '../rpc/protos';
import { topLogprobs } from './logprobs';

/** One sequence to answer: its last position's logits, how many log-probs it asked for, its token count. */
export interface AnswerJob {
  logits: Float32Array;
  k: number;
  tokens: number;
}

export interface AnswerRequest {
  id: number;
  jobs: AnswerJob[];
}

export type AnswerReply = { ready: true } | { id: number; results: SequenceResultMsg[] } | { id: number; error: string };

export interface AnswersOptions {
  /** The worker's node flags (default: the process's own, e.g. a loader the tests register for .ts files). */
  execArgv?: string[];
}

export class Answers {
  private worker: Worker | null = null;
  private ready = false;
  private broken = false;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: SequenceResultMsg[]) => void; reject: (e: Error) => void }>();
  /** Settles once the worker has said it is ready (true) or has failed (false). */
  private settleStartup!: (ok: boolean) => void;
  private readonly startup = new Promise<boolean>((resolve) => (this.settleStartup = resolve));

  constructor(
    private readonly logger: Logger,
    private readonly options: AnswersOptions = {},
  ) {}

  /**
   * The answers of a step's sequences, in order. The logits' buffers may be handed to the worker (detached here):
   * the caller must not read them after this call.
   */
  answer(jobs: AnswerJob[]): Promise<SequenceResultMsg[]> {
    if (jobs.every((j) => j.k <= 0) || this.broken) return Promise.resolve(answerAll(jobs));
    const worker = this.ensureWorker();
    if (!worker || !this.ready) return Promise.resolve(answerAll(jobs));
    const id = this.nextId++;
    return new Promise<SequenceResultMsg[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      // Each sequence's logits are their own copy (forward.ts slices them): move them rather than copy again.
      // (Tagged, not instanceof: buffers made in another realm, as under jest, are ArrayBuffers too.)
      const transfer = jobs
        .map((j) => j.logits.buffer)
        .filter((b, i, all) => Object.prototype.toString.call(b) === '[object ArrayBuffer]' && all.indexOf(b) === i) as ArrayBuffer[];
      worker.postMessage({ id, jobs } satisfies AnswerRequest, transfer);
    });
  }

  /** Resolves once the worker is ready (true) or has failed (false): for tests and for warming up. */
  started(): Promise<boolean> {
    this.ensureWorker();
    return this.startup;
  }

  /** Stops the worker; answers still pending are rejected. */
  async dispose(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    this.broken = true;
    this.settleStartup(false);
    this.failPending(new Error('the rank is stopping'));
    if (w) await w.terminate();
  }

  private ensureWorker(): Worker | null {
    if (this.worker || this.broken) return this.worker;
    try {
      // Through eval, so that the same line loads answerWorker.js from dist and answerWorker.ts in the tests (whose
      // processes register .ts through execArgv, which workers inherit).
      const file = path.join(__dirname, 'answerWorker');
      const worker = new Worker(`require(${JSON.stringify(file)})`, { eval: true, execArgv: this.options.execArgv });
      worker.unref();
      worker.on('message', (reply: AnswerReply) => {
        if ('ready' in reply) {
          this.ready = true;
          this.settleStartup(true);
          this.logger.debug('answers: worker ready');
          return;
        }
        const p = this.pending.get(reply.id);
        if (!p) return;
        this.pending.delete(reply.id);
        if ('error' in reply) p.reject(new Error(reply.error));
        else p.resolve(reply.results);
      });
      worker.on('error', (err) => this.giveUp(err));
      worker.on('exit', (code) => {
        if (this.worker === worker) this.giveUp(new Error(`the answers' worker exited (code ${code})`));
      });
      this.worker = worker;
      return worker;
    } catch (err) {
      this.giveUp(err as Error);
      return null;
    }
  }

  /** The worker is gone: its pending answers fail (their steps fail) and later ones are computed inline. */
  private giveUp(err: Error): void {
    if (!this.broken) this.logger.warn({ err: err.message }, "answers' worker failed; computing answers on the main thread");
    this.broken = true;
    this.worker = null;
    this.settleStartup(false);
    this.failPending(err);
  }

  private failPending(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }
}

/** Every job's answer, here and now. */
export function answerAll(jobs: readonly AnswerJob[]): SequenceResultMsg[] {
  return jobs.map((j) => topLogprobs(j.logits, j.k, j.tokens));
}
