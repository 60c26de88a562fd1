// `eps-moe forward`: one process, one device, a batch of sequences to logits as JSON on stdout.
import * as fs from 'fs';
import * as path from 'path';
import { LocalCommunicator } from '../comm/communicator';
import { loadRankEngine } from '../engine/rankEngine';
import type { BackendKind } from '../native/addonTypes';
import { hasBackend } from '../native/addon';
import { loadModelSpec } from '../model/config';
import { ExpertLayoutError } from '../moe/placement';
import { parseMoeSchedule, type DispatchMode } from '../moe/schedule';
import { addForwardToTrace } from '../engine/forwardTrace';
import { TraceCollector } from '../trace/traceCollector';
import { CliError } from './errors';
import { ProgressView } from './progress';
import { readSequencesFile } from './input';
import { NonFiniteError } from '../engine/nonFinite';

export interface ForwardCliOptions {
  model: string;
  input: string;
  backend?: BackendKind;
  allLogits?: boolean;
  moeSchedule?: string;
  /** Groups of the experts, for the scheduler's expert axis (default 1). */
  expertGroups?: number;
  /** --dispatch: auto, pairs or dedup (checked by the option's parser). */
  dispatch?: DispatchMode;
  trace?: string;
  /** Fail the load, naming the tensor, when a weight holds NaN or Inf. */
  checkWeights?: boolean;
  /** Debug: name the first layer whose MLP output went non-finite. */
  checkLayers?: boolean;
}

export async function forwardCommand(opts: ForwardCliOptions, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  if (!fs.existsSync(path.join(opts.model, 'config.json'))) {
    throw new CliError(`no such model: ${opts.model} (no config.json there)`);
  }
  const spec = await loadModelSpec(opts.model);
  const sequences = readSequencesFile(opts.input, spec.vocabSize);
  const backend = opts.backend ?? (hasBackend('cuda') ? 'cuda' : 'cpu');
  if (!hasBackend(backend))
    throw new CliError(`backend '${backend}' is not available in this build (have: cpu${hasBackend('cuda') ? ', cuda' : ''})`);
  let schedule;
  try {
    schedule = parseMoeSchedule(opts.moeSchedule ?? 'auto');
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  // Loading a large checkpoint takes a while: a bar on a terminal (stderr stays clean otherwise).
  const view = new ProgressView('loading weights', 'tensors');
  let engine;
  try {
    engine = await loadRankEngine({
      onLoadProgress: process.stderr.isTTY ? (done, total) => view.update(done, total) : undefined,
      modelDir: opts.model,
      spec,
      backend,
      deviceIndex: 0,
      comm: new LocalCommunicator(),
      schedule,
      expertGroups: opts.expertGroups,
      dispatch: opts.dispatch,
      checkWeights: opts.checkWeights,
      checkLayers: opts.checkLayers,
    });
  } catch (e) {
    if (e instanceof ExpertLayoutError) throw new CliError(e.message);
    throw e;
  } finally {
    view.stop();
  }
  try {
    const result = await engine.runner.forward(sequences, { allLogits: opts.allLogits, trace: opts.trace !== undefined });
    if (opts.trace) {
      const trace = new TraceCollector();
      addForwardToTrace(trace, 0, result);
      await trace.write(opts.trace);
    }
    // Non-finite logits are an error, not a NaN in the JSON (which would not be JSON).
    if (result.nonfinite.length > 0) throw new CliError(new NonFiniteError(result.nonfinite).message);
    await writeLogitsJson(out, result.logits, spec.vocabSize);
  } finally {
    await engine.dispose();
  }
}

/** {"sequences": [{"logits": [[V floats], ...]}, ...]}, written row by row (all-logits output is large). */
async function writeLogitsJson(out: NodeJS.WritableStream, logits: Float32Array[], V: number): Promise<void> {
  const write = (s: string) =>
    new Promise<void>((resolve) => {
      if (out.write(s)) resolve();
      else out.once('drain', resolve);
    });
  await write('{"sequences": [');
  for (const [b, flat] of logits.entries()) {
    await write(`${b ? ', ' : ''}{"logits": [`);
    for (let r = 0; r * V < flat.length; r++) {
      await write(`${r ? ', ' : ''}[${Array.from(flat.subarray(r * V, (r + 1) * V)).join(', ')}]`);
    }
    await write(']}');
  }
  await write(']}\n');
}
