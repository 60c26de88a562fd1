// Structured logs of the cluster's processes: pino, one JSON line per event, on stderr so that
// stdout stays free for the `ready:` line and for --json answers.
import pino, { type Logger } from 'pino';

export type { Logger };

export function createLogger(bindings: Record<string, string | number>, level = process.env.EPS_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings } }, pino.destination({ fd: 2, sync: true }));
}
