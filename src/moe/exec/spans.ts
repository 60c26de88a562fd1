// Trace spans of the MoE layer's ops: events recorded on the op's stream before and after it.
import { performance } from 'node:perf_hooks';
import type { Event, Stream } from '../../native/device';

/** One op as it ran: events recorded on its stream before and after it (resolved after the step). */
export interface OpSpan {
  stream: 'compute' | 'comm';
  name: string;
  start: Event;
  end: Event;
  args: Record<string, string | number>;
  /** performance.now() when the host opened the span (before recording `start`). */
  hostOpenMs: number;
}

export interface OpenSpan {
  end(stream: 'compute' | 'comm', name: string, args: Record<string, string | number>): void;
}

/**
 * Starts a span on `s` when tracing (`onSpan` given); undefined otherwise, so untraced runs record no events. Its args
 * get `hostUs`, the host's time from opening to ending it: a span much longer on the device than its work needs, with a
 * long hostUs, idled waiting for the host to enqueue its work. The host's opening time (hostOpenMs) lets the forward
 * say how far ahead of the device the host was there (forward.ts aheadUs).
 */
export function openSpan(onSpan: ((span: OpSpan) => void) | undefined, s: Stream): OpenSpan | undefined {
  if (!onSpan) return undefined;
  const hostStart = performance.now();
  const start = s.record();
  return {
    end: (stream, name, args) =>
      onSpan({
        stream,
        name,
        start,
        end: s.record(),
        args: { ...args, hostUs: Math.round((performance.now() - hostStart) * 1000) },
        hostOpenMs: hostStart,
      }),
  };
}

/** Runs `enqueue` (ops on `s`) inside a compute-stream span named `name` when tracing; just runs it otherwise. */
export function traced(onSpan: ((span: OpSpan) => void) | undefined, s: Stream, name: string, args: Record<string, string | number>, enqueue: () => void): void {
  const span = openSpan(onSpan, s);
  enqueue();
  span?.end('compute', name, args);
}
