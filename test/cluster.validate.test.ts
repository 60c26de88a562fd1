// Admission: every refusal names the field; every acceptance returns the ids as sent.
import { InvalidArgumentError } from '../src/rpc/errors';
import type { PrefillRequestMsg } from '../src/rpc/protos';
import type { TextTokenizer } from '../src/cluster/textTokenizer';
import { admitRequest, type RequestLimits } from '../src/cluster/validate';

const limits: RequestLimits = {
  vocabSize: 100,
  maxSequenceTokens: 8,
  maxSequenceTokensReason: "the model's max positions",
  maxSequencesPerRequest: 3,
  maxTopLogprobs: 20,
};

// A toy tokenizer: one id per character code point modulo 200 (so some ids fall outside vocab 100).
const toyTokenizer: TextTokenizer = { encode: (text) => Array.from(text, (c) => (c.codePointAt(0) ?? 0) % 200) };

function request(fields: Partial<PrefillRequestMsg>): PrefillRequestMsg {
  return { sequences: [], texts: [], topLogprobs: 0, requestId: '', ...fields };
}

function refusal(req: PrefillRequestMsg, tokenizer: TextTokenizer | null = null): InvalidArgumentError {
  try {
    admitRequest(req, limits, tokenizer);
  } catch (e) {
    if (e instanceof InvalidArgumentError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('admitRequest', () => {
  test('accepts token sequences and returns them as sent', () => {
    const got = admitRequest(request({ sequences: [{ ids: [1, 2, 3] }, { ids: [99] }], topLogprobs: 5, requestId: 'r1' }), limits, null);
    expect(got).toEqual({ requestId: 'r1', sequences: [[1, 2, 3], [99]], topLogprobs: 5 });
  });

  test.each<[string, Partial<PrefillRequestMsg>, string, RegExp]>([
    ['no input', {}, 'sequences', /no sequences/],
    ['an empty sequence', { sequences: [{ ids: [1] }, { ids: [] }] }, 'sequences[1].ids', /empty sequence/],
    [
      'a too long sequence',
      { sequences: [{ ids: [1, 2, 3, 4, 5, 6, 7, 8, 9] }] },
      'sequences[0].ids',
      /9 tokens; at most 8 \(the model's max positions\)/,
    ],
    ['an id past the vocabulary', { sequences: [{ ids: [1, 100] }] }, 'sequences[0].ids[1]', /id 100 is outside the vocabulary \[0, 100\)/],
    ['a negative id', { sequences: [{ ids: [-1] }] }, 'sequences[0].ids[0]', /id -1/],
    ['a non-integer id', { sequences: [{ ids: [2.5] }] }, 'sequences[0].ids[0]', /2.5 is not an integer/],
    ['too many sequences', { sequences: [{ ids: [1] }, { ids: [1] }, { ids: [1] }, { ids: [1] }] }, 'sequences', /4 entries; at most 3/],
    ['too many top log-probs', { sequences: [{ ids: [1] }], topLogprobs: 21 }, 'top_logprobs', /\[0, 20\]/],
    ['both sequences and texts', { sequences: [{ ids: [1] }], texts: ['a'] }, 'texts', /not both/],
    ['a long request id', { sequences: [{ ids: [1] }], requestId: 'x'.repeat(129) }, 'request_id', /128/],
  ])('refuses %s, naming %s', (_what, fields, field, reason) => {
    const err = refusal(request(fields), toyTokenizer);
    expect(err.field).toBe(field);
    expect(err.message).toMatch(reason);
    expect(err.message.startsWith(`${field}: `)).toBe(true);
  });

  test('texts need a tokenizer.json', () => {
    const err = refusal(request({ texts: ['hello'] }), null);
    expect(err.field).toBe('texts');
    expect(err.message).toMatch(/no tokenizer.json/);
  });

  test('texts are tokenized and checked like sequences', () => {
    expect(admitRequest(request({ texts: ['ab', 'A'] }), limits, toyTokenizer).sequences).toEqual([[97, 98], [65]]);
    expect(refusal(request({ texts: [''] }), toyTokenizer).field).toBe('texts[0]');
    expect(refusal(request({ texts: ['AB', 'ABCDEFGHI'] }), toyTokenizer).message).toMatch(/^texts\[1\]: 9 tokens/);
    // 'z' is 122: outside vocabulary 100.
    expect(refusal(request({ texts: ['az'] }), toyTokenizer).message).toMatch(/^texts\[0\]\[1\]: id 122 from the tokenizer/);
  });

  test('garbage text (invalid UTF-8 decoded as U+FFFD, NUL, lone surrogates) is refused', () => {
    for (const text of ['ab\uFFFD', 'a\u0000b', 'a\uD800b', '\uDC00']) {
      const err = refusal(request({ texts: [text] }), toyTokenizer);
      expect(err.field).toBe('texts[0]');
      expect(err.message).toMatch(/not valid UTF-8/);
    }
    // A proper surrogate pair (an emoji) is text.
    expect(() => admitRequest(request({ texts: ['\u{1F600}'] }), { ...limits, vocabSize: 1 << 20 }, toyTokenizer)).not.toThrow();
  });
});
