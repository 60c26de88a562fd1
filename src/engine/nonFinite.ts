// Non-finite results are errors: what the forward found (per sequence, from the count_nonfinite op run on
// the device over its logits rows and, with the debug check, over every layer's MLP output) and the one
// message that names it. The forward itself never throws for them: every rank finishes the step (its
// collectives stay in step with the others) and the caller decides (Prefill answers INTERNAL, `forward` exits 1).

/** A sequence whose logits were not all finite. */
export interface NonFinite {
  /** Index of the sequence in the batch the forward ran. */
  sequence: number;
  /** Non-finite logits of the sequence... */
  values: number;
  /** ...of this many (the vocab, times its tokens with all logits). */
  of: number;
  /** With the layer check: the first layer whose MLP output held a non-finite value at one of its tokens. */
  firstLayer?: number;
}

/** "12 of 32000 logits are NaN or infinite (first at layer 3's MLP output)" (no sequence name: callers add theirs). */
export function describeNonFinite(nf: NonFinite): string {
  const where = nf.firstLayer === undefined ? '' : ` (the first non-finite value came from layer ${nf.firstLayer}'s MLP output)`;
  return `${nf.values} of ${nf.of} logits are NaN or infinite${where}`;
}

/** The error of a forward that produced non-finite logits, naming the first such sequence. */
export class NonFiniteError extends Error {
  readonly code = 'EPS_NON_FINITE';
  constructor(
    readonly found: readonly NonFinite[],
    /** How the caller names sequence i, e.g. (i) => `sequences[${i}]`. */
    name: (i: number) => string = (i) => `sequences[${i}]`,
  ) {
    const first = found[0];
    const more = found.length > 1 ? ` (and ${found.length - 1} more sequence${found.length > 2 ? 's' : ''})` : '';
    super(`${name(first.sequence)}: ${describeNonFinite(first)}${more}`);
  }
}
