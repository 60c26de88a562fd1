// The op table: every op of native/ops.md written once as data, its tensors (in call order, with
// their dtype), its params (typed) and its host ints. ops.ts takes its types and its wire encoding
// from here; native/opcheck.cc enforces the same table in C++, and test/opTable.test.ts checks that
// this table, the addon's (addon().opTable()) and ops.md's agree.
//
// tensors: name -> 'float' (f32, bf16 or f16), 'i32', 'f32', or 'any' (the op's own rule decides);
//          a trailing '?' marks an optional tensor (only at the end).
// params:  name -> 'number', 'boolean' (0/1 on the wire), or a list of names (an enum: the wire code
//          is the name's index).
// ints:    name -> 'required' | 'optional': the host integer arrays, concatenated in this order.
//
// Names are unique within an op: the typed call takes them as one object (see ops.ts's `op`).
import type { Tensor } from './device';

export const opTable = {
  embedding: {
    tensors: { out: 'float', table: 'float', ids: 'i32' },
    params: {},
    ints: { hostIds: 'optional' },
  },
  rmsnorm: {
    tensors: { out: 'float', x: 'float', w: 'float', residual: 'float?' },
    params: { eps: 'number' },
    ints: {},
  },
  layernorm: {
    tensors: { out: 'float', x: 'float', w: 'float' },
    params: { eps: 'number' },
    ints: {},
  },
  rope: {
    tensors: { x: 'float', positions: 'i32', invFreq: 'f32', normWeight: 'float?' },
    params: { attentionScaling: 'number', normEps: 'number' },
    ints: {},
  },
  attention: {
    tensors: { out: 'float', q: 'float', k: 'float', v: 'float', cuSeqlens: 'i32', kShared: 'float?' },
    params: { scale: 'number' },
    ints: { cuSeqlensHost: 'required' },
  },
  matmul: {
    tensors: { out: 'float', a: 'float', w: 'float', bias: 'float?' },
    params: {},
    ints: {},
  },
  expert_matmul: {
    tensors: { out: 'float', a: 'float', w: 'float', segmentCounts: 'i32?' },
    params: { kernel: ['grouped', 'dense', 'grouped_sm90'], swiglu: 'boolean' },
    ints: { counts: 'optional' },
  },
  swiglu: {
    tensors: { out: 'float', gateUp: 'float' },
    params: {},
    ints: {},
  },
  router: {
    tensors: { topkIdx: 'i32', topkW: 'f32', logits: 'float', bias: 'f32?' },
    params: {
      k: 'number',
      renormalize: 'boolean',
      scale: 'number',
      scoring: ['softmax', 'sigmoid'],
      method: ['greedy', 'group_limited_greedy', 'noaux_tc'],
      groups: 'number',
      topkGroup: 'number',
    },
    ints: { expertGroup: 'optional' },
  },
  moe_permute: {
    tensors: { out: 'float', rowMap: 'i32', counts: 'i32', x: 'float', topkIdx: 'i32' },
    params: {},
    ints: {},
  },
  moe_count: {
    tensors: { counts: 'i32', topkIdx: 'i32' },
    params: {},
    ints: { bounds: 'required' },
  },
  moe_rank_count: {
    tensors: { counts: 'i32', topkIdx: 'i32' },
    params: {},
    ints: { offsets: 'required', bounds: 'required' },
  },
  moe_rank_dispatch: {
    tensors: {
      out: 'float',
      rowMap: 'i32',
      counts: 'i32',
      localIdx: 'i32',
      localW: 'f32',
      x: 'float',
      topkIdx: 'i32',
      topkW: 'f32',
    },
    params: {},
    ints: { offsets: 'required' },
  },
  moe_unpermute: {
    tensors: { out: 'float', y: 'float', rowMap: 'i32', topkW: 'f32' },
    params: { accumulate: 'boolean' },
    ints: {},
  },
  add: {
    tensors: { out: 'float', a: 'float', b: 'float' },
    params: {},
    ints: {},
  },
  clamp: {
    tensors: { out: 'float', x: 'float' },
    params: { lo: 'number', hi: 'number' },
    ints: {},
  },
  sigmoid_gate_add: {
    tensors: { out: 'float', y: 'float', gate: 'float' },
    params: {},
    ints: {},
  },
  copy: {
    tensors: { dst: 'any', src: 'any' },
    params: {},
    ints: {},
  },
  gather_rows: {
    tensors: { out: 'float', x: 'float', idx: 'i32' },
    params: {},
    ints: {},
  },
  copy_cols: {
    tensors: { out: 'float', x: 'float' },
    params: {},
    ints: { cols: 'required' },
  },
  fill_random: {
    tensors: { out: 'float' },
    params: { seed: 'number', std: 'number' },
    ints: {},
  },
  count_nonfinite: {
    tensors: { counts: 'i32', x: 'float' },
    params: {},
    ints: {},
  },
} as const satisfies Record<string, OpRow>;

export type TensorKind = 'float' | 'i32' | 'f32' | 'any';
export type ParamKind = 'number' | 'boolean' | readonly string[];

/** The shape every row of the table has. */
export interface OpRow {
  readonly tensors: Readonly<Record<string, TensorKind | `${TensorKind}?`>>;
  readonly params: Readonly<Record<string, ParamKind>>;
  readonly ints: Readonly<Record<string, 'required' | 'optional'>>;
}

export type OpName = keyof typeof opTable;
type Row<N extends OpName> = (typeof opTable)[N];

/** The TypeScript value of a param kind: number, boolean, or the enum's names. */
export type ParamValue<K> = K extends 'number' ? number : K extends 'boolean' ? boolean : K extends readonly (infer E)[] ? E : never;

/** The value of param P of op N, e.g. ParamOf<'expert_matmul', 'kernel'> = 'grouped' | 'dense' | 'grouped_sm90'. */
export type ParamOf<N extends OpName, P extends keyof Row<N>['params']> = ParamValue<Row<N>['params'][P]>;

type Optional<R, Mark> = { [K in keyof R]: R[K] extends Mark ? K : never }[keyof R];
type TensorArgs<R> = { readonly [K in Exclude<keyof R, Optional<R, `${string}?`>>]: Tensor } & {
  readonly [K in Optional<R, `${string}?`>]?: Tensor | undefined;
};
type ParamArgs<R> = { readonly [K in keyof R]: ParamValue<R[K]> };
type IntArgs<R> = { readonly [K in Exclude<keyof R, Optional<R, 'optional'>>]: readonly number[] } & {
  readonly [K in Optional<R, 'optional'>]?: readonly number[] | undefined;
};

/** The arguments of op N by name: its tensors, params and ints in one object. */
export type OpArgs<N extends OpName> = TensorArgs<Row<N>['tensors']> & ParamArgs<Row<N>['params']> & IntArgs<Row<N>['ints']>;
