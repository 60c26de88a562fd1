// The Chrome trace-event format (the JSON Object Format of "Trace Event Format", which chrome://tracing
// and ui.perfetto.dev open): complete events ("ph": "X") with a start and a duration in microseconds,
// on tracks named by pid (here: the rank) and tid (here: a stream), plus metadata events ("ph": "M")
// that name the tracks and order them.
import { promises as fs } from 'fs';
import * as path from 'path';

export type TraceArgValue = string | number | boolean | null | readonly (string | number)[];
export type TraceArgs = Readonly<Record<string, TraceArgValue>>;

export interface CompleteEvent {
  name: string;
  cat: string;
  ph: 'X';
  /** Microseconds. */
  ts: number;
  /** Microseconds. */
  dur: number;
  pid: number;
  tid: number;
  args?: TraceArgs;
}

export interface MetadataEvent {
  name: 'process_name' | 'process_sort_index' | 'thread_name' | 'thread_sort_index';
  ph: 'M';
  pid: number;
  tid?: number;
  args: { name: string } | { sort_index: number };
}

export type TraceEvent = CompleteEvent | MetadataEvent;

export interface TraceFile {
  traceEvents: TraceEvent[];
  displayTimeUnit: 'ms' | 'ns';
  /** Free-form facts about the trace (the format allows this key). */
  otherData?: Record<string, string | number>;
}

export class TraceError extends Error {
  constructor(
    readonly code: 'EPS_TRACE_BAD_EVENT' | 'EPS_TRACE_WRITE',
    message: string,
  ) {
    super(message);
    this.name = 'TraceError';
  }
}

/**
 * Writes the file: one event per line, so that a large trace is never one giant string and a
 * partial file is still readable by eye.
 */
export async function writeTraceFile(file: string, trace: TraceFile): Promise<void> {
  try {
    await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
    const handle = await fs.open(file, 'w');
    try {
      await handle.write('{"displayTimeUnit":' + JSON.stringify(trace.displayTimeUnit));
      if (trace.otherData) await handle.write(',"otherData":' + JSON.stringify(trace.otherData));
      await handle.write(',"traceEvents":[\n');
      const batch: string[] = [];
      for (let i = 0; i < trace.traceEvents.length; i++) {
        batch.push(JSON.stringify(trace.traceEvents[i]) + (i + 1 < trace.traceEvents.length ? ',\n' : '\n'));
        if (batch.length === 4096) await handle.write(batch.splice(0).join(''));
      }
      await handle.write(batch.join('') + ']}\n');
    } finally {
      await handle.close();
    }
  } catch (e) {
    throw new TraceError('EPS_TRACE_WRITE', `cannot write the trace to ${file}: ${(e as Error).message}`);
  }
}
