// One typed function per op of native/ops.md. Each enqueues on the stream and returns at once; the
// addon checks the call against the contract first (checkOp) and throws an Error with code
// EPS_INVALID_ARGUMENT naming the op and the argument. Errors while the op runs (e.g. an index that
// only the device knows is out of range) reject the stream's next synchronize() or read().
//
// The names, order and types of every op's tensors, params and ints come from opTable.ts: `op` takes
// them by name, checked against the table by the compiler, and puts them on the wire in the table's
// order (booleans as 0/1, enums as their index). The functions below keep positional signatures.
import type { DType } from './addonTypes';
import type { Device, Stream, Tensor } from './device';
import { opTable, type OpArgs, type OpName, type OpRow, type ParamKind, type ParamOf } from './opTable';

export type ExpertKernel = ParamOf<'expert_matmul', 'kernel'>;

/** Every expert_matmul kernel, in the op table's order. */
export const EXPERT_KERNELS: readonly ExpertKernel[] = opTable.expert_matmul.params.kernel;

/**
 * What a kernel runs as where it cannot run itself (native/ops.md): grouped_sm90, the Hopper kernel,
 * is grouped off compute capability 9.0, on the CPU, and for shapes it does not take.
 */
export const EXPERT_KERNEL_FALLBACK: Readonly<Partial<Record<ExpertKernel, ExpertKernel>>> = { grouped_sm90: 'grouped' };

/**
 * The expert_matmul kernels `device` runs as themselves: grouped and dense everywhere, grouped_sm90 on
 * a CUDA device of compute capability 9.0 whose addon holds the sm_90a kernel. The others run as
 * EXPERT_KERNEL_FALLBACK says (same result); the cost model measures only these.
 */
export function expertKernelsOf(device: Device): ExpertKernel[] {
  const names = device.native.expertKernels ?? ['grouped', 'dense'];
  return EXPERT_KERNELS.filter((k) => names.includes(k));
}

/**
 * Whether grouped_sm90 takes an expert_matmul of this dtype and weight shape [*, N, K] on a device that
 * runs it (expertKernelsOf): bf16, N and K multiples of 8 (native/cuda/grouped_gemm_sm90.h).
 */
export function groupedSm90Takes(dtype: DType, n: number, k: number): boolean {
  return dtype === 'bf16' && n > 0 && k > 0 && n % 8 === 0 && k % 8 === 0;
}

/** Whether grouped_sm90, where it runs, applies expert_matmul's swiglu in its epilogue: it takes the shape and N % 16 == 0. */
export function groupedSm90FusesSwiglu(dtype: DType, n: number, k: number): boolean {
  return groupedSm90Takes(dtype, n, k) && n % 16 === 0;
}

/** A param value the table does not allow (an enum name it does not list), caught before the addon. */
export class OpArgumentError extends Error {
  readonly code = 'EPS_INVALID_ARGUMENT';
}

function wireParam(op: string, name: string, kind: ParamKind, value: unknown): number {
  if (kind === 'number') return value as number;
  if (kind === 'boolean') return value ? 1 : 0;
  const code = kind.indexOf(value as string);
  if (code < 0) throw new OpArgumentError(`${op}: ${name} must be one of ${kind.join(', ')}; got ${JSON.stringify(value)}`);
  return code;
}

/** Enqueues op `name` with its arguments by name (the table's names); the typed functions below call it. */
export function op<N extends OpName>(s: Stream, name: N, args: OpArgs<N>): void {
  const row: OpRow = opTable[name];
  const named = args as Readonly<Record<string, unknown>>;
  const tensors = Object.keys(row.tensors).map((t) => (named[t] as Tensor | undefined)?.native ?? null);
  const params = Object.entries(row.params).map(([p, kind]) => wireParam(name, p, kind, named[p]));
  const ints = Object.keys(row.ints).flatMap((i) => (named[i] as readonly number[] | undefined) ?? []);
  s.device.native.op(s.native, name, tensors, params, ints);
}

/** out[T,H] = table[ids[T]]. `hostIds`, when given (the same ids), are range-checked before enqueueing. */
export function embedding(s: Stream, out: Tensor, table: Tensor, ids: Tensor, hostIds?: readonly number[]): void {
  op(s, 'embedding', { out, table, ids, hostIds });
}

/**
 * out = x / sqrt(mean(x^2) + eps) * w over rows of w.numel; out may be x. With `residual` (x's shape), x += residual
 * first, in place (as `add` would), and the norm reads the sum: the pre-norm residual stream's add and norm in one
 * pass; out must then be another tensor.
 */
export function rmsnorm(s: Stream, out: Tensor, x: Tensor, w: Tensor, eps: number, residual?: Tensor): void {
  op(s, 'rmsnorm', { out, x, w, residual, eps });
}

/** out = (x - mean(x)) / sqrt(var(x) + eps) * w over rows of w.numel (LayerNorm without bias); out may be x. */
export function layernorm(s: Stream, out: Tensor, x: Tensor, w: Tensor, eps: number): void {
  op(s, 'layernorm', { out, x, w, eps });
}

/** out = min(max(x, lo), hi) element-wise (lo <= hi); out may be x. */
export function clamp(s: Stream, out: Tensor, x: Tensor, lo: number, hi: number): void {
  op(s, 'clamp', { out, x, lo, hi });
}

/**
 * Rotates x[T,nh,hd] in place (GPT-NeoX rotate-half over the first 2*len(invFreq) dims). With `norm`,
 * each head is first RMS-normalised with norm.weight [hd] (Qwen3's q/k norm): the same result as
 * rmsnorm over [T*nh, hd] then rope, in one pass over x.
 */
export function rope(
  s: Stream,
  x: Tensor,
  positions: Tensor,
  invFreq: Tensor,
  attentionScaling: number,
  norm?: { weight: Tensor; eps: number },
): void {
  op(s, 'rope', { x, positions, invFreq, normWeight: norm?.weight, attentionScaling, normEps: norm?.eps ?? 0 });
}

/**
 * Causal attention within each packed sequence [cu[b], cu[b+1]). `cuSeqlensHost` is the same
 * offsets on the host (B+1 values, from 0 to T). With `kShared` [T, r], every head's key is kShared's r
 * dims followed by k's hd - r (MLA's rope key, shared by the heads, never copied per head).
 */
export function attention(
  s: Stream,
  out: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  cuSeqlens: Tensor,
  cuSeqlensHost: readonly number[],
  scale: number,
  kShared?: Tensor,
): void {
  op(s, 'attention', { out, q, k, v, cuSeqlens, cuSeqlensHost, scale, kShared });
}

/** out[M,N] = a[M,K] @ w[N,K]^T (+ bias[N]). */
export function matmul(s: Stream, out: Tensor, a: Tensor, w: Tensor, bias?: Tensor): void {
  op(s, 'matmul', { out, a, w, bias });
}

function isCountList(counts: readonly number[] | Tensor): counts is readonly number[] {
  return Array.isArray(counts);
}

/**
 * Rows of a in segments of counts[s] rows; segment s gets out = a @ w[s % E]^T (counts.length a
 * multiple of E; sum = rows of a). The kernel choice changes speed, not the result (a kernel the
 * device does not run, grouped_sm90 off Hopper, runs as EXPERT_KERNEL_FALLBACK says).
 * counts may be an i32 tensor on the device ([S]; sum <= rows of a, rows past it left unwritten):
 * grouped_sm90 then runs without the host ever seeing them; the other kernels read them to the host
 * first, which waits for the stream.
 * swiglu: w is each expert's gate rows then its up rows ([E, 2I, K]) and out[R, I] gets
 * silu(gate) * up of the product, as `swiglu` on it would give (grouped_sm90 in its epilogue, without
 * writing the product; the other kernels through a scratch product and the swiglu kernel).
 */
export function expertMatmul(
  s: Stream,
  out: Tensor,
  a: Tensor,
  w: Tensor,
  counts: readonly number[] | Tensor,
  kernel: ExpertKernel,
  swiglu = false,
): void {
  if (isCountList(counts)) op(s, 'expert_matmul', { out, a, w, counts, kernel, swiglu });
  else op(s, 'expert_matmul', { out, a, w, segmentCounts: counts, kernel, swiglu });
}

/** out[T,I] = silu(gateUp[:, :I]) * gateUp[:, I:]. */
export function swiglu(s: Stream, out: Tensor, gateUp: Tensor): void {
  op(s, 'swiglu', { out, gateUp });
}

export type RouterScoring = ParamOf<'router', 'scoring'>;
export type RouterMethod = ParamOf<'router', 'method'>;

/** How a router scores and picks beyond plain softmax top-k (DeepSeek-V2/V3; native/ops.md `router`). */
export interface RouterSelection {
  scoring: RouterScoring;
  method: RouterMethod;
  /** Expert groups (group methods); 1 for greedy. */
  groups: number;
  /** Groups kept per token (group methods); 1 for greedy. */
  topkGroup: number;
  /** e_score_correction_bias [E] f32: added to the scores for choosing only. */
  bias?: Tensor;
  /** The group of each logit column, when the columns are not in checkpoint order (virtual expert ids). */
  expertGroup?: readonly number[];
}

export const SOFTMAX_GREEDY: RouterSelection = { scoring: 'softmax', method: 'greedy', groups: 1, topkGroup: 1 };

/** Scores, then top-k of logits[T,E] into topkIdx[T,k] (i32) and topkW[T,k] (f32); softmax greedy unless `sel` says otherwise. */
export function router(
  s: Stream,
  topkIdx: Tensor,
  topkW: Tensor,
  logits: Tensor,
  k: number,
  renormalize: boolean,
  scale: number,
  sel: RouterSelection = SOFTMAX_GREEDY,
): void {
  const { scoring, method, groups, topkGroup, bias, expertGroup } = sel;
  op(s, 'router', { topkIdx, topkW, logits, bias, k, renormalize, scale, scoring, method, groups, topkGroup, expertGroup });
}

/** out[r, dstCol + c] = x[floor(r / rowRepeat), srcCol + c] for c < width; out's other columns kept. */
export function copyCols(s: Stream, out: Tensor, x: Tensor, dstCol: number, srcCol: number, width: number, rowRepeat = 1): void {
  op(s, 'copy_cols', { out, x, cols: [dstCol, srcCol, width, rowRepeat] });
}

/** Groups the T*k (token, slot) copies of x by expert: out rows, rowMap[T,k], counts[E]. */
export function moePermute(s: Stream, out: Tensor, rowMap: Tensor, counts: Tensor, x: Tensor, topkIdx: Tensor): void {
  op(s, 'moe_permute', { out, rowMap, counts, x, topkIdx });
}

/** counts[m,e] = (token, slot) pairs of micro-chunk m (tokens [bounds[m], bounds[m+1])) routed to expert e. */
export function moeCount(s: Stream, counts: Tensor, topkIdx: Tensor, bounds: readonly number[]): void {
  op(s, 'moe_count', { counts, topkIdx, bounds });
}

/**
 * counts[m,p] = tokens of micro-chunk m (tokens [bounds[m], bounds[m+1])) with a slot on one of rank p's
 * experts [offsets[p], offsets[p+1]): the rows moe_rank_dispatch sends p from those tokens.
 */
export function moeRankCount(s: Stream, counts: Tensor, topkIdx: Tensor, offsets: readonly number[], bounds: readonly number[]): void {
  op(s, 'moe_rank_count', { counts, topkIdx, offsets, bounds });
}

/** out[t] (+)= sum_j topkW[t,j] * y[rowMap[t,j]] over the slots that were routed. */
export function moeUnpermute(s: Stream, out: Tensor, y: Tensor, rowMap: Tensor, topkW: Tensor, accumulate: boolean): void {
  op(s, 'moe_unpermute', { out, y, rowMap, topkW, accumulate });
}

/**
 * The deduplicated dispatch: one row of x per distinct (token, rank) pair, rank p holding experts
 * [offsets[p], offsets[p+1]); rows sorted by rank then token (out[T*min(k,W),H], tail unwritten),
 * counts[W] rows per rank, rowMap[T,W] the row of (t,p) or -1, and per row the token's k slots for
 * that rank: localIdx (expert - offsets[p], or -1 where the slot's expert is elsewhere) and localW.
 */
export function moeRankDispatch(
  s: Stream,
  out: Tensor,
  rowMap: Tensor,
  counts: Tensor,
  localIdx: Tensor,
  localW: Tensor,
  x: Tensor,
  topkIdx: Tensor,
  topkW: Tensor,
  offsets: readonly number[],
): void {
  op(s, 'moe_rank_dispatch', { out, rowMap, counts, localIdx, localW, x, topkIdx, topkW, offsets });
}

/** out = a + b (same number of elements); out may be a or b. */
export function add(s: Stream, out: Tensor, a: Tensor, b: Tensor): void {
  op(s, 'add', { out, a, b });
}

/** out[T,H] += sigmoid(gate[T,1]) * y[T,H]. */
export function sigmoidGateAdd(s: Stream, out: Tensor, y: Tensor, gate: Tensor): void {
  op(s, 'sigmoid_gate_add', { out, y, gate });
}

/** dst = src, converting between float dtypes (or i32 to i32). */
export function copy(s: Stream, dst: Tensor, src: Tensor): void {
  op(s, 'copy', { dst, src });
}

/** out[R,H] = x[idx[R]]. */
export function gatherRows(s: Stream, out: Tensor, x: Tensor, idx: Tensor): void {
  op(s, 'gather_rows', { out, x, idx });
}

/**
 * out[i] = std * sqrt(3) * u(seed, i), u uniform in [-1, 1) from a counter-based hash that every
 * backend computes bit for bit (native/cpu/random.h). seed is an integer in [0, 2^53].
 */
export function fillRandom(s: Stream, out: Tensor, seed: number, std: number): void {
  op(s, 'fill_random', { out, seed, std });
}

/** counts[r] = how many values of x[r, :] are NaN or infinite (x [R,N], counts [R] i32). */
export function countNonfinite(s: Stream, counts: Tensor, x: Tensor): void {
  op(s, 'count_nonfinite', { counts, x });
}
