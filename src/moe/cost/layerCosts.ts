// The cost model applied to one layer shape: predicted ms of each op the executor enqueues, from the
// row counts the scheduler sees. Kept per (model, shape) while the model lives, so that every layer of
// a forward plans with the same object and its per-segment caches fill once.
import { EXPERT_KERNELS, groupedSm90FusesSwiglu, type ExpertKernel } from '../../native/ops';
import {
  type CostModel,
  gemmMs,
  gemmTable,
  interpolateLogLog,
  kernelCurve,
  linearMs,
  swigluMs,
  allToAllMs,
  tableKernels,
  type KernelCurve,
} from './costModel';

/** The layer shape the costs depend on (the counts do not: they change every layer). */
export interface LayerShape {
  hidden: number;
  expertIntermediate: number;
  /** 0 when the model has no shared expert. */
  sharedIntermediate: number;
  topK: number;
  /** Bytes per activation element (2 for bf16). */
  dtypeBytes: number;
}

/** Kept while the model lives. (A model is never changed once loaded.) */
const costsByModel = new WeakMap<CostModel, Map<string, LayerCosts>>();

/** The LayerCosts of a model, a layer shape and a world size. */
export function layerCosts(model: CostModel, input: LayerShape, world: number): LayerCosts {
  let byShape = costsByModel.get(model);
  if (!byShape) {
    byShape = new Map();
    costsByModel.set(model, byShape);
  }
  const key = [input.hidden, input.expertIntermediate, input.sharedIntermediate, input.topK, input.dtypeBytes, world].join('/');
  let costs = byShape.get(key);
  if (!costs) {
    const { hidden, expertIntermediate, sharedIntermediate, topK, dtypeBytes } = input;
    costs = new LayerCosts(model, { hidden, expertIntermediate, sharedIntermediate, topK, dtypeBytes }, world);
    byShape.set(key, costs);
  }
  return costs;
}

/** Per-segment costs cached by (integer) row count: the search asks for the same small counts many times. */
const CACHED_ROWS = 4096;

/** One kernel's curves for the layer's two expert GEMMs, and its per-segment cache. */
interface FfnCurves {
  gateUp: KernelCurve;
  down: KernelCurve;
  cache: Float64Array;
}

/** The cost model applied to this layer's shapes. */
export class LayerCosts {
  /**
   * The kernels the model has curves for in both expert GEMMs of the layer, in the op table's order:
   * grouped and dense always, grouped_sm90 where the profiler ran it. The planner chooses among these.
   */
  readonly kernels: readonly ExpertKernel[];
  private readonly ffn = new Map<ExpertKernel, FfnCurves>();
  private readonly rowBytes: number;

  private readonly input: LayerShape;
  private readonly epilogueSwiglu: boolean;

  constructor(
    private readonly model: CostModel,
    shape: LayerShape,
    private readonly world: number,
  ) {
    // Only the shape: the costs outlive this layer's counts (see costsByModel).
    const input = { ...shape };
    this.input = input;
    const { hidden: H, expertIntermediate: I } = input;
    // grouped_sm90 takes bf16 only: 2-byte elements are taken to be bf16.
    this.epilogueSwiglu = input.dtypeBytes === 2 && groupedSm90FusesSwiglu('bf16', 2 * I, H);
    const gateUp = gemmTable(model, 2 * I, H);
    const down = gemmTable(model, H, I);
    const inDown = tableKernels(down);
    this.kernels = tableKernels(gateUp).filter((k) => inDown.includes(k));
    // Every kernel has curves: one the model lacks is predicted as the kernel it runs as (kernelCurve).
    for (const kernel of EXPERT_KERNELS) {
      this.ffn.set(kernel, {
        gateUp: kernelCurve(gateUp, kernel),
        down: kernelCurve(down, kernel),
        cache: new Float64Array(CACHED_ROWS + 1).fill(NaN),
      });
    }
    if (input.sharedIntermediate > 0) {
      gemmTable(model, 2 * input.sharedIntermediate, H);
      gemmTable(model, H, input.sharedIntermediate);
    }
    allToAllMs(model, world, 0); // fails now, naming the world, if the model lacks it
    this.rowBytes = H * input.dtypeBytes;
  }

  /**
   * gate_up expert_matmul, swiglu, down expert_matmul over the segments; 0 with no rows (skipped). grouped_sm90
   * applies the SwiGLU in its gate_up epilogue (exec/mlp.ts) where the shape lets it, so it has no swiglu pass:
   * the epilogue's cost is inside its measured gate_up curve only approximately (the profiler times the plain GEMM).
   */
  ffnMs(kernel: ExpertKernel, segments: ArrayLike<number>): number {
    const curves = this.ffn.get(kernel)!;
    const { cache } = curves;
    const gateUp = curves.gateUp.points;
    const down = curves.down.points;
    let rows = 0;
    let gemms = 0;
    for (let i = 0; i < segments.length; i++) {
      const n = segments[i];
      if (n <= 0) continue;
      rows += n;
      // Both GEMMs of one non-empty segment; their fixed overheads are added once below.
      let ms = n <= CACHED_ROWS ? cache[n] : NaN;
      if (Number.isNaN(ms)) {
        ms = interpolateLogLog(gateUp, n) + interpolateLogLog(down, n);
        if (n <= CACHED_ROWS) cache[n] = ms;
      }
      gemms += ms;
    }
    if (rows === 0) return 0;
    const overhead = curves.gateUp.overheadMs + curves.down.overheadMs;
    const swiglu = kernel === 'grouped_sm90' && this.epilogueSwiglu ? 0 : swigluMs(this.model, rows, this.input.expertIntermediate);
    return overhead + gemms + swiglu;
  }

  allToAllMs(busiestRows: number): number {
    return allToAllMs(this.model, this.world, busiestRows * this.rowBytes);
  }

  /**
   * The dedup dispatch's slots of `busiestRows` rows (exec/dedupDispatcher.ts): each row's expert indices and
   * weights (i32 and f32 per slot), two all-to-alls beside the rows' own.
   */
  slotsMs(busiestRows: number): number {
    return 2 * allToAllMs(this.model, this.world, busiestRows * this.input.topK * 4);
  }

  /** moe_unpermute over `rows` output rows (tokens, or received rows on the dedup path). */
  unpermuteRowsMs(rows: number): number {
    return linearMs(this.model.smallOps.unpermute, rows);
  }

  /** The layer's host sync (read, gather, until the host enqueues again): the same for every layer. */
  hostSyncMs(): number {
    return this.model.smallOps.hostSyncMs;
  }

  routerMs(pairs: number): number {
    return linearMs(this.model.smallOps.router, pairs / this.input.topK);
  }

  permuteMs(pairs: number): number {
    return linearMs(this.model.smallOps.permute, pairs);
  }

  unpermuteMs(pairs: number): number {
    return linearMs(this.model.smallOps.unpermute, pairs / this.input.topK);
  }

  /**
   * The shared expert over the rank's tokens: two dense GEMMs and a swiglu; its gate matmul and
   * sigmoid_gate_add read and write [T, H] as unpermute does, so they are costed as one unpermute.
   */
  sharedMs(pairs: number): number {
    const tokens = pairs / this.input.topK;
    if (tokens === 0) return 0;
    const { hidden: H, sharedIntermediate: Is } = this.input;
    return (
      gemmMs(this.model, 'dense', [tokens], 2 * Is, H) +
      swigluMs(this.model, tokens, Is) +
      gemmMs(this.model, 'dense', [tokens], H, Is) +
      linearMs(this.model.smallOps.unpermute, tokens)
    );
  }
}
