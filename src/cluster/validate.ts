// Admission of a Prefill request: turns the wire message into token sequences or refuses it with
// an InvalidArgumentError that names the field. Pure apart from the tokenizer it is handed.
import { InvalidArgumentError } from '../rpc/errors';
import type { PrefillRequestMsg } from '../rpc/protos';
import type { TextTokenizer } from './textTokenizer';

export interface RequestLimits {
  vocabSize: number;
  /** Longest sequence: the smaller of the model's max positions and the tokens a rank takes per step. */
  maxSequenceTokens: number;
  /** Why maxSequenceTokens is what it is, for the error message. */
  maxSequenceTokensReason: string;
  maxSequencesPerRequest: number;
  maxTopLogprobs: number;
}

export interface AdmittedRequest {
  requestId: string;
  sequences: number[][];
  topLogprobs: number;
}

const MAX_REQUEST_ID_CHARS = 128;
/** Characters per token is rarely above ~10; this only keeps a huge text from reaching the tokenizer. */
const MAX_CHARS_PER_TOKEN = 64;

export function admitRequest(req: PrefillRequestMsg, limits: RequestLimits, tokenizer: TextTokenizer | null): AdmittedRequest {
  const requestId = req.requestId ?? '';
  if (typeof requestId !== 'string' || requestId.length > MAX_REQUEST_ID_CHARS) {
    throw new InvalidArgumentError('request_id', `at most ${MAX_REQUEST_ID_CHARS} characters`);
  }
  const topLogprobs = req.topLogprobs ?? 0;
  if (!Number.isInteger(topLogprobs) || topLogprobs < 0 || topLogprobs > limits.maxTopLogprobs) {
    throw new InvalidArgumentError('top_logprobs', `${topLogprobs}; must be an integer in [0, ${limits.maxTopLogprobs}]`);
  }
  const rawSequences = req.sequences ?? [];
  const texts = req.texts ?? [];
  if (rawSequences.length > 0 && texts.length > 0) {
    throw new InvalidArgumentError('texts', 'give either sequences or texts, not both');
  }
  const count = rawSequences.length + texts.length;
  if (count === 0) throw new InvalidArgumentError('sequences', 'no sequences (give token sequences, or texts)');
  if (count > limits.maxSequencesPerRequest) {
    const field = texts.length > 0 ? 'texts' : 'sequences';
    throw new InvalidArgumentError(field, `${count} entries; at most ${limits.maxSequencesPerRequest} per request`);
  }

  const sequences =
    texts.length > 0
      ? texts.map((text, i) => tokenizeText(text, `texts[${i}]`, limits, tokenizer))
      : rawSequences.map((seq, i) => checkIds(seq?.ids ?? [], `sequences[${i}].ids`, limits, 'is outside the vocabulary'));
  return { requestId, sequences, topLogprobs };
}

function checkLength(length: number, field: string, limits: RequestLimits): void {
  if (length === 0) throw new InvalidArgumentError(field, 'empty sequence');
  if (length > limits.maxSequenceTokens) {
    throw new InvalidArgumentError(field, `${length} tokens; at most ${limits.maxSequenceTokens} (${limits.maxSequenceTokensReason})`);
  }
}

function checkIds(ids: readonly unknown[], field: string, limits: RequestLimits, outsideWhat: string): number[] {
  checkLength(ids.length, field, limits);
  const out = new Array<number>(ids.length);
  for (let j = 0; j < ids.length; j++) {
    const id = ids[j];
    if (typeof id !== 'number' || !Number.isInteger(id)) {
      throw new InvalidArgumentError(`${field}[${j}]`, `${String(id)} is not an integer token id`);
    }
    if (id < 0 || id >= limits.vocabSize) {
      throw new InvalidArgumentError(`${field}[${j}]`, `id ${id} ${outsideWhat} [0, ${limits.vocabSize})`);
    }
    out[j] = id;
  }
  return out;
}

function tokenizeText(text: string, field: string, limits: RequestLimits, tokenizer: TextTokenizer | null): number[] {
  if (!tokenizer) throw new InvalidArgumentError('texts', 'the model folder has no tokenizer.json; send token ids in sequences');
  if (typeof text !== 'string' || text.length === 0) throw new InvalidArgumentError(field, 'empty text');
  if (text.length > limits.maxSequenceTokens * MAX_CHARS_PER_TOKEN) {
    throw new InvalidArgumentError(field, `${text.length} characters; too long for ${limits.maxSequenceTokens} tokens`);
  }
  // protobuf decodes invalid UTF-8 to U+FFFD; a NUL is never text. Both mean the client sent bytes, not text.
  const bad = text.search(/[\uFFFD\u0000]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/);
  if (bad >= 0) throw new InvalidArgumentError(field, `not valid UTF-8 text (bad character at ${bad})`);
  let ids: number[];
  try {
    ids = tokenizer.encode(text);
  } catch (err) {
    throw new InvalidArgumentError(field, `the tokenizer refused it (${err instanceof Error ? err.message : String(err)})`);
  }
  return checkIds(ids, field, limits, "from the tokenizer is outside the model's vocabulary");
}
