// Builds one rank's ModelWeights on its device from a WeightSource: a Hugging Face checkpoint
// (checkpointSource.ts) or seeded random values made on the device (randomSource.ts). The shapes
// come from the ModelSpec alone; a source only fills tensors.
import type { Device, Stream, Tensor } from '../native/device';
import { tensorFromFloat32, tensorFromInt32 } from '../native/device';
import type { DType } from '../native/addonTypes';
import type { ModelSpec } from '../model/config';
import { ropeInvFreq } from '../model/rope';
import * as ops from '../native/ops';
import { expertLayout, type ExpertLayout } from '../moe/placement';
import type { LayerWeights, MlaWeights, MlpWeights, ModelWeights, MoeWeights } from './weightTypes';

/** A weight by role; `expert` names one routed expert of a MoE layer. */
export type WeightRole =
  | 'embed'
  | 'finalNorm'
  | 'lmHead'
  | 'inputNorm'
  | 'postNorm'
  | 'q'
  | 'k'
  | 'v'
  | 'o'
  | 'qBias'
  | 'kBias'
  | 'vBias'
  | 'oBias'
  | 'qNorm'
  | 'kNorm'
  | 'router'
  | 'routerBias'
  | 'mlaQA'
  | 'mlaQABias'
  | 'mlaQANorm'
  | 'mlaQB'
  | 'mlaKvA'
  | 'mlaKvABias'
  | 'mlaKvANorm'
  | 'mlaKvB'
  | 'expertGateUp'
  | 'expertDown'
  | 'sharedGateUp'
  | 'sharedDown'
  | 'sharedGate'
  | 'denseGateUp'
  | 'denseDown';

export interface WeightKey {
  role: WeightRole;
  layer?: number;
  expert?: number;
}

export interface WeightSource {
  /** Fills `dst` (allocated with the weight's shape and the device dtype) in stream order. */
  fill(key: WeightKey, dst: Tensor, stream: Stream): Promise<void>;
  /** Whether the checkpoint has its own lm_head (false: tied to the embedding). */
  hasLmHead(): boolean;
  /** Bytes the source will read for this rank (for progress), or 0 when unknown. */
  totalBytes?(): number;
}

export interface LoadOptions {
  rank: number;
  world: number;
  weightDtype: DType;
  /** Groups of each rank's experts (moe/placement.ts): the routers' rows are put in their virtual order. Default 1. */
  expertGroups?: number;
  onProgress?: (done: number, total: number) => void;
}

export async function loadWeights(spec: ModelSpec, device: Device, source: WeightSource, opts: LoadOptions): Promise<ModelWeights> {
  const s = device.stream();
  const dt = opts.weightDtype;
  const H = spec.hiddenSize;
  const hd = spec.headDim;
  const layout = expertLayout(spec.moe.numExperts, opts.world, opts.expertGroups ?? 1);
  const plan = countTensors(spec, layout.ranges[opts.rank].count);
  let done = 0;
  // Fills `into` (a view of a stacked tensor) when given, else a new tensor of the shape.
  const make = async (key: WeightKey, shape: number[], into?: Tensor): Promise<Tensor> => {
    const t = into ?? device.tensor(dt, shape);
    await source.fill(key, t, s);
    done++;
    opts.onProgress?.(done, plan);
    return t;
  };
  const mlp = async (layer: number, gateUp: WeightRole, down: WeightRole, I: number): Promise<MlpWeights> => ({
    gateUp: await make({ role: gateUp, layer }, [2 * I, H]),
    down: await make({ role: down, layer }, [H, I]),
  });

  const embed = await make({ role: 'embed' }, [spec.vocabSize, H]);
  const finalNorm = await make({ role: 'finalNorm' }, [H]);
  const lmHead = source.hasLmHead() && !spec.tieWordEmbeddings ? await make({ role: 'lmHead' }, [spec.vocabSize, H]) : embed;
  const rope = ropeInvFreq(spec);
  const invFreq = tensorFromFloat32(device, s, 'f32', [rope.invFreq.length], rope.invFreq);

  const layers: LayerWeights[] = [];
  for (let i = 0; i < spec.numLayers; i++) {
    const at = (role: WeightRole, shape: number[]) => make({ role, layer: i }, shape);
    const inputNorm = await at('inputNorm', [H]);
    const postNorm = await at('postNorm', [H]);
    const layer: LayerWeights = spec.mla
      ? { inputNorm, postNorm, ...(await mlaWeights(spec, i, device, s, make)), mlp: { kind: 'dense', dense: { gateUp: undefined as never, down: undefined as never } } }
      : {
          inputNorm,
          postNorm,
          q: await at('q', [spec.numHeads * hd, H]),
          k: await at('k', [spec.numKvHeads * hd, H]),
          v: await at('v', [spec.numKvHeads * hd, H]),
          o: await at('o', [H, spec.numHeads * hd]),
          mlp: { kind: 'dense', dense: { gateUp: undefined as never, down: undefined as never } },
        };
    if (spec.attentionBias) {
      layer.qBias = await at('qBias', [spec.numHeads * hd]);
      layer.kBias = await at('kBias', [spec.numKvHeads * hd]);
      layer.vBias = await at('vBias', [spec.numKvHeads * hd]);
    }
    if (spec.attentionOutputBias) layer.oBias = await at('oBias', [H]);
    if (spec.qkNorm) {
      layer.qNorm = await at('qNorm', [hd]);
      layer.kNorm = await at('kNorm', [hd]);
    }
    if (spec.layers[i].mlp === 'moe') {
      layer.mlp = { kind: 'moe', moe: await moeWeights(spec, i, device, s, make, opts, layout) };
    } else {
      layer.mlp = { kind: 'dense', dense: await mlp(i, 'denseGateUp', 'denseDown', spec.denseIntermediate) };
    }
    layers.push(layer);
  }
  await s.synchronize();
  s.dispose();
  return { embed, finalNorm, lmHead, invFreq, attentionScaling: rope.attentionScaling, layers, expertGroups: layout.groups };
}

async function moeWeights(
  spec: ModelSpec,
  layer: number,
  device: Device,
  s: Stream,
  make: (key: WeightKey, shape: number[], into?: Tensor) => Promise<Tensor>,
  opts: LoadOptions,
  layout: ExpertLayout,
): Promise<MoeWeights> {
  const { numExperts: E, expertIntermediate: I, sharedIntermediate: Is } = spec.moe;
  const H = spec.hiddenSize;
  const local = layout.ranges[opts.rank];
  const router = await virtualRouter(device, s, layout, await make({ role: 'router', layer }, [E, H]));
  const routerBias = spec.moe.routing?.scoreCorrectionBias
    ? (await virtualRouter(device, s, layout, await make({ role: 'routerBias', layer }, [E, 1], device.tensor('f32', [E, 1])))).reshape([E])
    : undefined;
  // Experts are stacked [Elocal, ...]: each is filled into its slice of the stack.
  const gateUp = device.tensor(opts.weightDtype, [local.count, 2 * I, H]);
  const down = device.tensor(opts.weightDtype, [local.count, H, I]);
  for (let j = 0; j < local.count; j++) {
    const e = local.first + j;
    await make({ role: 'expertGateUp', layer, expert: e }, [2 * I, H], gateUp.rows(j, 1).reshape([2 * I, H]));
    await make({ role: 'expertDown', layer, expert: e }, [H, I], down.rows(j, 1).reshape([H, I]));
  }
  const w: MoeWeights = { router, experts: { gateUp, down }, local };
  if (routerBias) w.routerBias = routerBias;
  if (Is > 0) {
    w.shared = {
      gateUp: await make({ role: 'sharedGateUp', layer }, [2 * Is, H]),
      down: await make({ role: 'sharedDown', layer }, [H, Is]),
    };
    if (spec.moe.sharedGate) w.sharedGate = await make({ role: 'sharedGate', layer }, [1, H]);
  }
  return w;
}

type Make = (key: WeightKey, shape: number[], into?: Tensor) => Promise<Tensor>;

/**
 * MLA's weights (weightTypes.ts MlaWeights): q (or qB) rows reordered per head from [nope | rope] to
 * [rope | nope], kvA's rope rows kept last; the rope rows de-interleaved (evens, then odds) where the model
 * pairs adjacent dims; kvB's rows as every head's nope rows, then every head's v rows.
 */
async function mlaWeights(
  spec: ModelSpec,
  layer: number,
  device: Device,
  s: Stream,
  make: Make,
): Promise<{ mla: MlaWeights; o: Tensor; oBias?: Tensor }> {
  const m = spec.mla!;
  const H = spec.hiddenSize;
  const nq = spec.numHeads;
  const nope = m.qkNopeHeadDim;
  const rope = m.qkRopeHeadDim;
  const qk = nope + rope;
  const at = (role: WeightRole, shape: number[]) => make({ role, layer }, shape);
  // Row j of a rope block [0, rope): de-interleaved, row j takes source row 2j (j < rope/2) or 2(j - rope/2) + 1.
  const ropeRow = (j: number) => (m.ropeInterleave ? (j < rope / 2 ? 2 * j : 2 * (j - rope / 2) + 1) : j);
  const qOrder: number[] = [];
  for (let h = 0; h < nq; h++) {
    for (let j = 0; j < rope; j++) qOrder.push(h * qk + nope + ropeRow(j));
    for (let j = 0; j < nope; j++) qOrder.push(h * qk + j);
  }
  const kvOrder = Array.from({ length: m.kvLoraRank + rope }, (_, j) => (j < m.kvLoraRank ? j : m.kvLoraRank + ropeRow(j - m.kvLoraRank)));
  const w: MlaWeights = {
    kvA: undefined as never,
    kvANorm: undefined as never,
    kvB: undefined as never,
  };
  if (m.qLoraRank === null) {
    w.q = permuteRows(device, s, await at('q', [nq * qk, H]), qOrder);
  } else {
    w.qA = await at('mlaQA', [m.qLoraRank, H]);
    if (m.attentionBias) w.qABias = await at('mlaQABias', [m.qLoraRank]);
    w.qANorm = await at('mlaQANorm', [m.qLoraRank]);
    w.qB = permuteRows(device, s, await at('mlaQB', [nq * qk, m.qLoraRank]), qOrder);
  }
  w.kvA = permuteRows(device, s, await at('mlaKvA', [m.kvLoraRank + rope, H]), kvOrder);
  if (m.attentionBias) {
    w.kvABias = permuteRows(device, s, await at('mlaKvABias', [m.kvLoraRank + rope, 1]), kvOrder).reshape([m.kvLoraRank + rope]);
  }
  w.kvANorm = await at('mlaKvANorm', [m.kvLoraRank]);
  // kv_b_proj's rows per head [nope | v] regrouped as every head's nope rows, then every head's v rows: the values
  // then come out of their own GEMM already laid out as the attention op reads them (attention.ts).
  const vd = m.vHeadDim;
  const kvBOrder: number[] = [];
  for (let h = 0; h < nq; h++) for (let j = 0; j < nope; j++) kvBOrder.push(h * (nope + vd) + j);
  for (let h = 0; h < nq; h++) for (let j = 0; j < vd; j++) kvBOrder.push(h * (nope + vd) + nope + j);
  w.kvB = permuteRows(device, s, await at('mlaKvB', [nq * (nope + vd), m.kvLoraRank]), kvBOrder);
  const o = await at('o', [H, nq * m.vHeadDim]);
  return m.attentionBias ? { mla: w, o, oBias: await at('oBias', [H]) } : { mla: w, o };
}

/** t with row i = t's row order[i] (a gather on the device; t itself when the order is the identity). */
function permuteRows(device: Device, s: Stream, t: Tensor, order: readonly number[]): Tensor {
  if (order.every((r, i) => r === i)) return t;
  const idx = tensorFromInt32(device, s, [order.length], Int32Array.from(order));
  const out = device.tensor(t.dtype, t.shape);
  ops.gatherRows(s, out, t, idx);
  idx.dispose();
  t.dispose();
  return out;
}

/**
 * The router with row v = the checkpoint's row of expert globalOf(v), so that the router's output
 * index is the virtual id (a gather on the device; with one group, the checkpoint's router itself).
 * Each logit is the same dot product as before, so top-k picks the same experts; only an exact tie
 * between two logits breaks by the lower virtual id rather than the lower checkpoint id.
 */
async function virtualRouter(device: Device, s: Stream, layout: ExpertLayout, router: Tensor): Promise<Tensor> {
  if (layout.identity) return router;
  const order = Int32Array.from({ length: layout.numExperts }, (_, v) => layout.globalOf(v));
  const idx = tensorFromInt32(device, s, [order.length], order);
  const permuted = device.tensor(router.dtype, router.shape);
  ops.gatherRows(s, permuted, router, idx);
  // The gather holds its inputs until it has run (ops keep them alive natively).
  idx.dispose();
  router.dispose();
  return permuted;
}

function countTensors(spec: ModelSpec, localExperts: number): number {
  let n = 3;
  const m = spec.mla;
  for (let i = 0; i < spec.numLayers; i++) {
    n += m
      ? 2 + (m.qLoraRank === null ? 1 : 3) + 4 + (m.attentionBias ? (m.qLoraRank === null ? 2 : 3) : 0)
      : 6 + (spec.attentionBias ? 3 : 0) + (spec.attentionOutputBias ? 1 : 0) + (spec.qkNorm ? 2 : 0);
    if (spec.layers[i].mlp === 'moe') {
      n += 1 + 2 * localExperts + (spec.moe.routing?.scoreCorrectionBias ? 1 : 0);
      if (spec.moe.sharedIntermediate > 0) n += 2 + (spec.moe.sharedGate ? 1 : 0);
    } else n += 2;
  }
  return n;
}
