// Collects a run's timeline for one trace file: per rank (a process track, pid = rank) and per stream
// (a thread track), every op with its measured start and end, and beside them, on tracks named
// "predicted <stream>", what the scheduler predicted. The executor calls op() and predicted() with
// milliseconds on one clock (e.g. performance.timeOrigin + performance.now(), or an event's elapsed
// time from a reference event plus that reference's host time); the file holds microseconds from
// `originMs`.
import {
  type CompleteEvent,
  type MetadataEvent,
  type TraceArgs,
  type TraceEvent,
  type TraceFile,
  TraceError,
  writeTraceFile,
} from './traceEvents';

/** An op of a predicted timeline (the scheduler's PredictedOp has this shape). */
export interface TimelineOp {
  stream: string;
  name: string;
  startMs: number;
  endMs: number;
}

export interface TraceCollectorOptions {
  /** Milliseconds that become ts 0 (default 0: times are written as given). */
  originMs?: number;
  /** Events kept at most; later ones are counted as dropped (a forward of many layers makes many). */
  maxEvents?: number;
}

export const DEFAULT_MAX_TRACE_EVENTS = 1_000_000;

/** Measured tracks sort before the predicted ones of the same rank. */
const PREDICTED_SORT_OFFSET = 1000;

export class TraceCollector {
  private readonly originMs: number;
  private readonly maxEvents: number;
  private readonly complete: CompleteEvent[] = [];
  private readonly meta: MetadataEvent[] = [];
  /** Per rank: track name -> tid. */
  private readonly tracks = new Map<number, Map<string, number>>();
  private droppedEvents = 0;

  constructor(options: TraceCollectorOptions = {}) {
    this.originMs = options.originMs ?? 0;
    this.maxEvents = options.maxEvents ?? DEFAULT_MAX_TRACE_EVENTS;
  }

  /** A measured op of `rank` on `stream`, from startMs to endMs. */
  op(rank: number, stream: string, name: string, startMs: number, endMs: number, args?: TraceArgs): void {
    this.add(rank, stream, false, name, 'op', startMs, endMs, args);
  }

  /** A predicted op, on the rank's "predicted <stream>" track. */
  predicted(rank: number, stream: string, name: string, startMs: number, endMs: number, args?: TraceArgs): void {
    this.add(rank, stream, true, name, 'predicted', startMs, endMs, args);
  }

  /** A whole predicted timeline whose times count from `startMs` (e.g. a MoE plan's, from the layer's start). */
  predictedTimeline(rank: number, ops: readonly TimelineOp[], startMs: number, args?: TraceArgs): void {
    for (const op of ops) this.predicted(rank, op.stream, op.name, startMs + op.startMs, startMs + op.endMs, args);
  }

  /** Events of another collector (another rank's), e.g. gathered by the router into one file. */
  absorb(events: readonly TraceEvent[]): void {
    for (const e of events) {
      if (e.ph === 'M') this.meta.push(e);
      else if (this.complete.length < this.maxEvents) this.complete.push(e);
      else this.droppedEvents++;
    }
  }

  get size(): number {
    return this.complete.length;
  }

  get dropped(): number {
    return this.droppedEvents;
  }

  /** Metadata first (track names), then the ops. */
  events(): TraceEvent[] {
    return [...this.meta, ...this.complete];
  }

  toJSON(): TraceFile {
    const file: TraceFile = { traceEvents: this.events(), displayTimeUnit: 'ms' };
    if (this.droppedEvents > 0) file.otherData = { droppedEvents: this.droppedEvents, maxEvents: this.maxEvents };
    return file;
  }

  async write(file: string): Promise<void> {
    await writeTraceFile(file, this.toJSON());
  }

  private add(
    rank: number,
    stream: string,
    predicted: boolean,
    name: string,
    cat: string,
    startMs: number,
    endMs: number,
    args?: TraceArgs,
  ): void {
    if (!Number.isInteger(rank) || rank < 0)
      throw new TraceError('EPS_TRACE_BAD_EVENT', `trace: rank must be a non-negative integer, got ${rank}`);
    if (!Number.isFinite(startMs) || !Number.isFinite(endMs) || endMs < startMs) {
      throw new TraceError('EPS_TRACE_BAD_EVENT', `trace: ${name} on rank ${rank} ${stream} has start ${startMs} ms and end ${endMs} ms`);
    }
    const tid = this.tid(rank, predicted ? `predicted ${stream}` : stream, predicted);
    if (this.complete.length >= this.maxEvents) {
      this.droppedEvents++;
      return;
    }
    const event: CompleteEvent = {
      name,
      cat,
      ph: 'X',
      ts: (startMs - this.originMs) * 1000,
      dur: (endMs - startMs) * 1000,
      pid: rank,
      tid,
    };
    if (args) event.args = args;
    this.complete.push(event);
  }

  private tid(rank: number, track: string, predicted: boolean): number {
    let ranks = this.tracks.get(rank);
    if (!ranks) {
      ranks = new Map();
      this.tracks.set(rank, ranks);
      this.meta.push(
        { name: 'process_name', ph: 'M', pid: rank, args: { name: `rank ${rank}` } },
        { name: 'process_sort_index', ph: 'M', pid: rank, args: { sort_index: rank } },
      );
    }
    let tid = ranks.get(track);
    if (tid === undefined) {
      tid = ranks.size + 1;
      ranks.set(track, tid);
      this.meta.push(
        { name: 'thread_name', ph: 'M', pid: rank, tid, args: { name: track } },
        { name: 'thread_sort_index', ph: 'M', pid: rank, tid, args: { sort_index: tid + (predicted ? PREDICTED_SORT_OFFSET : 0) } },
      );
    }
    return tid;
  }
}
