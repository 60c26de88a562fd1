// Structured logs of the cluster's processes: pino, one event per line, on stderr so that stdout stays
// free for the `ready:` line and for --json answers. JSON lines, except on a terminal, where pino-pretty
// prints them for a person (in this process, synchronously: no line is lost at exit). EPS_LOG_FORMAT=json
// or pretty overrides the choice.
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** Pretty on a terminal (stderr is a TTY), JSON otherwise; EPS_LOG_FORMAT=json|pretty decides when set. */
export function logFormat(env: NodeJS.ProcessEnv = process.env, tty = process.stderr.isTTY === true): 'json' | 'pretty' {
  if (env.EPS_LOG_FORMAT === 'json' || env.EPS_LOG_FORMAT === 'pretty') return env.EPS_LOG_FORMAT;
  return tty ? 'pretty' : 'json';
}

export function createLogger(bindings: Record<string, string | number>, level = process.env.EPS_LOG_LEVEL ?? 'info'): Logger {
  const options = { level, base: { pid: process.pid, ...bindings } };
  if (logFormat() === 'pretty') {
    return pino(options, pretty({ destination: 2, sync: true, colorize: process.stderr.isTTY === true, translateTime: 'SYS:HH:MM:ss.l' }));
  }
  return pino(options, pino.destination({ fd: 2, sync: true }));
}
