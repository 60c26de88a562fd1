// Reads and checks the JSON input of `forward` and `prefill`: {"sequences": [[token ids], ...]}.
import * as fs from 'fs';
import { CliError } from './errors';

export function parseSequencesJson(text: string, source: string, vocabSize?: number): number[][] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new CliError(`${source} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { sequences?: unknown }).sequences)) {
    throw new CliError(`${source}: expected {"sequences": [[token ids], ...]}`);
  }
  const seqs = (doc as { sequences: unknown[] }).sequences;
  if (seqs.length === 0) throw new CliError(`${source}: "sequences" is empty`);
  return seqs.map((seq, i) => {
    if (!Array.isArray(seq)) throw new CliError(`${source}: sequences[${i}] is not an array of token ids`);
    if (seq.length === 0) throw new CliError(`${source}: sequences[${i}] is empty`);
    return seq.map((id: unknown, j) => {
      if (typeof id !== 'number' || !Number.isInteger(id)) {
        throw new CliError(`${source}: sequences[${i}][${j}] = ${JSON.stringify(id)} is not an integer token id`);
      }
      if (id < 0 || (vocabSize !== undefined && id >= vocabSize)) {
        throw new CliError(`${source}: sequences[${i}][${j}] = ${id} is outside the vocabulary [0, ${vocabSize ?? '...'})`);
      }
      return id;
    });
  });
}

export function readSequencesFile(file: string, vocabSize?: number): number[][] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read input ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseSequencesJson(text, file, vocabSize);
}
