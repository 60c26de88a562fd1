// Traces written per rank (FILE.rank<r>.json) merged into one file, the parts removed.
import * as fs from 'fs';
import { TraceCollector } from './traceCollector';
import type { TraceEvent } from './traceEvents';

export function rankTraceFile(file: string, rank: number): string {
  return `${file}.rank${rank}.json`;
}

/** Merges every FILE.rank<r>.json for r < world that exists; returns how many were found. */
export async function mergeRankTraces(file: string, world: number): Promise<number> {
  const trace = new TraceCollector();
  let found = 0;
  for (let r = 0; r < world; r++) {
    const part = rankTraceFile(file, r);
    if (!fs.existsSync(part)) continue;
    trace.absorb((JSON.parse(fs.readFileSync(part, 'utf8')) as { traceEvents: TraceEvent[] }).traceEvents);
    fs.unlinkSync(part);
    found++;
  }
  if (found > 0) await trace.write(file);
  return found;
}
