// How a command fails: one line on stderr that says what is wrong, a non-zero exit, no stack trace
// (EPS_DEBUG=1 shows it).

/** An error whose message is meant for the user as it is. */
export class CliError extends Error {
  readonly code = 'EPS_CLI';
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export function reportAndExit(err: unknown): never {
  const e = err instanceof Error ? err : new Error(String(err));
  const line = e.message.split('\n')[0];
  process.stderr.write(`eps-moe: ${line}\n`);
  if (process.env.EPS_DEBUG === '1' && e.stack) process.stderr.write(`${e.stack}\n`);
  process.exit(e instanceof CliError ? e.exitCode : 1);
}
