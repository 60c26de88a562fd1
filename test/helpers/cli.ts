// Runs the real `eps-moe` command line in a child process, from the TypeScript sources.
import { spawn } from 'child_process';
import * as path from 'path';

export const ROOT = path.resolve(__dirname, '..', '..');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['-r', path.join(ROOT, 'test', 'clusterTsRegister.js'), path.join(ROOT, 'src', 'cli', 'run.ts'), ...args],
      {
        cwd: ROOT,
        env: process.env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`eps-moe ${args.join(' ')} did not finish in ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

export interface Golden {
  sequences: number[][];
  logits: number[][][];
  texts?: { text: string; ids: number[]; logits: number[][] }[];
}

export const GOLDEN_FIXTURES = [
  'mixtral',
  'mixtral-sharded',
  'qwen2-moe',
  'qwen3-moe',
  'qwen3-moe-fused',
  'qwen3-moe-yarn',
  'deepseek-v2-lite',
  'deepseek-v2',
  'deepseek-v3',
  'deepseek-v3-sharded',
  'dbrx',
];

export function loadGolden(fixture: string): Golden {
  return require(path.join(FIXTURES, fixture, 'golden.json')) as Golden;
}
