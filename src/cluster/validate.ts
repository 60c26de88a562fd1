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
/** UTF-8 bytes per token are rarely above ~10; this keeps a huge text from reaching the tokenizer (and bounds a request's size). */
export const MAX_TEXT_BYTES_PER_TOKEN = 16;
/** A token id on the wire: an int64 varint, 10 bytes at most (negative ids take 10), so that a request of valid
 *  length always arrives whatever its ids and gets its field-named answer. */
const MAX_ID_BYTES = 10;
/** Per sequence or text: its tag and length prefix. */
const PER_ENTRY_BYTES = 16;
/** request_id, top_logprobs and framing. */
const REQUEST_SLACK_BYTES = 64 << 10;

/**
 * The largest PrefillRequest the limits admit, in bytes on the wire: sequences per request x (tokens per
 * sequence x bytes per id), or the same many texts of their longest (with a tokenizer), plus slack. The
 * public server's receive limit: a larger message is refused (RESOURCE_EXHAUSTED) by its length prefix,
 * before it is buffered whole or decoded.
 */
export function maxRequestBytes(limits: RequestLimits, acceptsTexts: boolean): number {
  const ids = limits.maxSequencesPerRequest * (limits.maxSequenceTokens * MAX_ID_BYTES + PER_ENTRY_BYTES);
  const texts = acceptsTexts ? limits.maxSequencesPerRequest * (limits.maxSequenceTokens * MAX_TEXT_BYTES_PER_TOKEN + PER_ENTRY_BYTES) : 0;
  return Math.max(ids, texts) + REQUEST_SLACK_BYTES;
}

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
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > limits.maxSequenceTokens * MAX_TEXT_BYTES_PER_TOKEN) {
    throw new InvalidArgumentError(field, `${bytes} bytes; too long for ${limits.maxSequenceTokens} tokens`);
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
