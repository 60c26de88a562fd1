// `eps-moe make-model`: a random checkpoint in the Hugging Face layout, with a progress bar on
// stderr for the large presets.
import { findPreset, listPresets } from '../model/presets';
import { makeModel } from '../model/makeModel';
import { ModelError } from '../model/errors';
import type { FloatDType } from '../model/config';
import { CliError } from './errors';
import { ProgressView } from './progress';

export interface MakeModelCliOptions {
  preset: string;
  out: string;
  seed?: number;
  dtype?: FloatDType;
  override?: string[];
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
  // A bar on a terminal; in a log, lines every 10% for the large presets only.
  const view = new ProgressView(`writing ${opts.preset}`, 'MB');
  const options = { preset: opts.preset, out: opts.out, seed: opts.seed, dtype: opts.dtype, overrides: opts.override };
  const result = await makeModel(options, (written, total) => {
    if (process.stderr.isTTY || total > 1e9) view.update(written, total);
  }).catch((e: unknown) => {
    view.stop();
    // A wrong --override is a usage error, as commander's own are.
    throw e instanceof ModelError && e.code === 'CONFIG_INVALID_OVERRIDE' ? new CliError(e.message, 2) : e;
  });
  view.stop();
  process.stdout.write(
    `${result.dir}: ${result.spec.family} ${opts.preset}, ${result.files.length} file(s), ${(result.totalBytes / 1e6).toFixed(1)} MB\n`,
  );
}
