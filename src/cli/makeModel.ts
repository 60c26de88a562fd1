// `eps-moe make-model`: a random checkpoint in the Hugging Face layout, with a progress bar on
// stderr for the large presets.
import { SingleBar, Presets } from 'cli-progress';
import { findPreset, listPresets } from '../model/presets';
import { makeModel } from '../model/makeModel';
import type { FloatDType } from '../model/config';
import { CliError } from './errors';

export interface MakeModelCliOptions {
  preset: string;
  out: string;
  seed?: number;
  dtype?: FloatDType;
}

export function presetHelp(): string {
  return listPresets()
    .map((p) => `  ${p.name.padEnd(16)} ${p.description}`)
    .join('\n');
}

export async function makeModelCommand(opts: MakeModelCliOptions): Promise<void> {
  if (!findPreset(opts.preset)) {
    throw new CliError(
      `unknown preset '${opts.preset}' (have: ${listPresets()
        .map((p) => p.name)
        .join(', ')})`,
    );
  }
  const showBar = process.stderr.isTTY === true;
  const bar = new SingleBar(
    { format: 'writing {bar} {percentage}% | {value}/{total} MB | eta {eta}s', stream: process.stderr },
    Presets.shades_classic,
  );
  let started = false;
  let lastLine = 0;
  const result = await makeModel({ preset: opts.preset, out: opts.out, seed: opts.seed, dtype: opts.dtype }, (written, total) => {
    const mb = (n: number) => Math.round(n / 1e6);
    if (showBar) {
      if (!started) bar.start(mb(total), 0);
      started = true;
      bar.update(mb(written));
    } else if (total > 1e9 && (written - lastLine >= total / 20 || written === total)) {
      // Not a terminal (a log): a line every 5%.
      lastLine = written;
      process.stderr.write(`eps-moe: make-model ${mb(written)}/${mb(total)} MB\n`);
    }
  });
  if (started) bar.stop();
  process.stdout.write(
    `${result.dir}: ${result.spec.family} ${opts.preset}, ${result.files.length} file(s), ${(result.totalBytes / 1e6).toFixed(1)} MB\n`,
  );
}
