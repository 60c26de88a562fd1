// How a parent process hands a child its configuration: one JSON document on the child's stdin, then
// end of file. One channel for every child we spawn (cluster ranks, the MoE benchmark's ranks): not
// argv (visible to every user in `ps`, and limited in size), not environment variables.
import type { ChildProcess } from 'node:child_process';

/** Sends a child process its configuration: one JSON document on its stdin, then end of file. */
export function sendConfig(child: ChildProcess, config: object): void {
  if (!child.stdin) throw new Error('sendConfig: the child was spawned without a stdin pipe');
  // A child that dies at once closes the pipe (EPIPE): its exit is what reports that.
  child.stdin.on('error', () => undefined);
  child.stdin.end(JSON.stringify(config));
}

/** The JSON document sendConfig wrote to this process's stdin, as text. */
export async function receiveConfig(stdin: NodeJS.ReadableStream = process.stdin): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  return Buffer.concat(chunks).toString('utf8');
}
