// The MoE layer benchmark as one rank runs it: for each layer shape, this rank's experts with random
// weights on its device, the cost model (cached or measured by all ranks), then for each token count
// and routing, the layer under baseline, every fixed plan of the sweep (with expert groups, the
// expert-axis plans too), and auto. Times are the slowest rank's (CUDA events on GPU), median of the
// repetitions. The routings' expert ids are the layout's virtual ids (placement.ts).
import type { Communicator } from '../../comm/communicator';
import type { DType } from '../../native/addonTypes';
import { type Device, type Event, type Stream, type Tensor, dtypeBytes, tensorFromFloat32, tensorFromInt32 } from '../../native/device';
import * as ops from '../../native/ops';
import { TensorScope } from '../../native/scope';
import type { MoeWeights } from '../../engine/weightTypes';
import { allToAllMs, type CostModel } from '../../moe/cost/costModel';
import { obtainCostModel } from '../../moe/cost/costModelCache';
import { busiestCrossRows } from '../../moe/plan/layerCounts';
import { routedMoeLayer, type MoeLayerContext } from '../../moe/exec/moeLayer';
import { planLabel, type MoePlan } from '../../moe/plan/plan';
import { type ExpertLayout, expertLayout } from '../../moe/placement';
import { formatMoeSchedule, parseMoeSchedule, type DispatchMode, type MoeSchedule } from '../../moe/schedule';
import { autoDegrees } from '../../moe/plan/planner';
import type { OpSpan } from '../../moe/exec/spans';
import { TraceCollector } from '../../trace/traceCollector';
import { rankTraceFile } from '../../trace/merge';
import { makeRouting, type RoutingKind } from './routing';
import type { MoeLayerShape } from './shapes';

/** Schedules measured again with the dedup dispatch (token-axis plans). */
const DEDUP_SWEEP = ['baseline', 'fixed:1:grouped', 'fixed:1:dense', 'fixed:2:dense', 'fixed:4:dense'];
const DEDUP_SUFFIX = '+dedup';

/** The layers a --trace shows, one after the other. */
export const TRACED_SCHEDULES = ['baseline', 'fixed:1:dense+dedup', 'auto'];

/**
 * A benchmark schedule's text: "<schedule>+dedup" runs it with the dedup dispatch, auto with the
 * benchmark's dispatch mode, the others with the per-pair dispatch.
 */
export function benchSchedule(text: string, autoDispatch: DispatchMode): { schedule: MoeSchedule; dispatch: DispatchMode } {
  if (text.endsWith(DEDUP_SUFFIX)) return { schedule: parseMoeSchedule(text.slice(0, -DEDUP_SUFFIX.length)), dispatch: 'dedup' };
  const schedule = parseMoeSchedule(text);
  return { schedule, dispatch: schedule.kind === 'auto' ? autoDispatch : 'pairs' };
}

export interface MoeBenchOptions {
  shapes: MoeLayerShape[];
  tokensPerRank: number[];
  routings: RoutingKind[];
  /** Fixed plans to sweep, e.g. fixed:2:dense. */
  sweep: string[];
  /**
   * Expert groups of each rank's experts (the expert axis' unit; 1: token chunks only). A shape whose
   * ranks hold fewer experts runs with as many groups as they hold.
   */
  expertGroups?: number;
  /**
   * What auto may use (default auto: it weighs the dedup dispatch); unless pairs, D = 1 plans are also
   * measured with the dedup dispatch (schedules named "<schedule>+dedup") where it applies.
   */
  dispatch?: DispatchMode;
  warmup: number;
  reps: number;
  /**
   * Write a trace of this point to `trace.file` (rank r writes file.rank<r>.json): one layer under each
   * of TRACED_SCHEDULES, one after the other.
   */
  trace?: { shape: string; tokens: number; routing: RoutingKind; file: string };
}

export interface ScheduleResult {
  schedule: string;
  ms: number;
  predictedMs: number | null;
  plan: string;
}

export interface MoeBenchRow {
  shape: string;
  world: number;
  /** The expert groups this shape ran with. */
  expertGroups: number;
  tokensPerRank: number;
  routing: RoutingKind;
  results: ScheduleResult[];
  baselineMs: number;
  groupedMs: number;
  best: ScheduleResult;
  auto: ScheduleResult;
  floorMs: number;
  gemmFloorMs: number;
  commFloorMs: number;
  maxRowsPerRank: number;
}

export interface RankContext {
  device: Device;
  comm: Communicator;
  dtype: DType;
  progress: (line: string) => void;
}

export async function runMoeBenchRank(ctx: RankContext, o: MoeBenchOptions): Promise<MoeBenchRow[]> {
  const rows: MoeBenchRow[] = [];
  const ceilingTflops = await measureCeilingTflops(ctx);
  for (const shape of o.shapes) {
    const { model } = await obtainCostModel({
      device: ctx.device,
      comm: ctx.comm,
      dtype: ctx.dtype,
      shape,
      onProgress: (p) => p.done % 10 === 0 && ctx.progress(`cost model ${shape.name}: ${p.phase} ${p.done}/${p.total}`),
    });
    const layout = benchLayout(shape, ctx.comm.world, o.expertGroups ?? 1);
    const weights = await makeWeights(ctx, shape, layout);
    try {
      for (const tokens of o.tokensPerRank) {
        for (const routing of o.routings) {
          ctx.progress(`${shape.name} ${tokens} tokens/rank ${routing}`);
          rows.push(await benchPoint(ctx, o, shape, layout, weights, model, tokens, routing, ceilingTflops));
        }
      }
    } finally {
      for (const t of [weights.router, weights.experts.gateUp, weights.experts.down, weights.shared?.gateUp, weights.shared?.down])
        t?.dispose();
    }
  }
  return rows;
}

async function benchPoint(
  ctx: RankContext,
  o: MoeBenchOptions,
  shape: MoeLayerShape,
  layout: ExpertLayout,
  w: MoeWeights,
  model: CostModel,
  T: number,
  routing: RoutingKind,
  ceilingTflops: number,
): Promise<MoeBenchRow> {
  const { device, comm } = ctx;
  const s = device.stream();
  const commStream = device.stream({ highPriority: true });
  const E = shape.numExperts;
  const k = shape.topK;
  const route = makeRouting(routing, T, E, k, 1000 + comm.rank);
  const h = device.tensor(ctx.dtype, [T, shape.hidden]);
  ops.fillRandom(s, h, 17 + comm.rank, 1);
  const idx = tensorFromInt32(device, s, [T, k], route.idx);
  const wts = tensorFromFloat32(device, s, 'f32', [T, k], route.weights);
  const out = device.tensor(ctx.dtype, [T, shape.hidden]);
  try {
    const run = async (
      schedule: MoeSchedule,
      dispatch: DispatchMode,
      trace?: { collector: TraceCollector; offsetMs: number; label: string },
    ): Promise<{ ms: number; plan: MoePlan }> => {
      const scope = new TensorScope(device);
      const spans: OpSpan[] = [];
      const layerCtx: MoeLayerContext = {
        compute: s,
        comm: commStream,
        scope,
        communicator: comm,
        actDtype: ctx.dtype,
        routing: {
          numExperts: E,
          topK: k,
          normTopkProb: true,
          routedScale: 1,
          expertIntermediate: shape.expertIntermediate,
          sharedIntermediate: shape.sharedIntermediate,
        },
        layout,
        schedule,
        costModel: model,
        dispatch,
        onSpan: trace ? (sp) => spans.push(sp) : undefined,
      };
      try {
        const start = s.record();
        const plan = await routedMoeLayer(layerCtx, w, h, out, idx, wts);
        const end = s.record();
        await s.synchronize();
        const ms = end.elapsedSince(start);
        if (trace) {
          const at = (e: Event) => trace.offsetMs + e.elapsedSince(start);
          for (const sp of spans) trace.collector.op(comm.rank, sp.stream, `${trace.label}: ${sp.name}`, at(sp.start), at(sp.end), sp.args);
          const timeline = plan.timeline.map((op) => ({ ...op, name: `${trace.label}: ${op.name}` }));
          trace.collector.predictedTimeline(comm.rank, timeline, spans.length ? at(spans[0].start) : trace.offsetMs, {
            plan: planLabel(plan),
          });
        }
        for (const e of [start, end, ...spans.flatMap((sp) => [sp.start, sp.end])]) e.dispose();
        return { ms, plan };
      } finally {
        scope.dispose();
      }
    };
    const slowest = async (ms: number): Promise<number> => {
      const all = comm.world > 1 ? await comm.allGather(Int32Array.of(Math.round(ms * 1000))) : [Int32Array.of(Math.round(ms * 1000))];
      return Math.max(...all.map((a) => a[0])) / 1000;
    };
    const measure = async (text: string): Promise<ScheduleResult> => {
      const { schedule, dispatch } = benchSchedule(text, o.dispatch ?? 'auto');
      for (let i = 0; i < o.warmup; i++) await run(schedule, dispatch);
      const times: number[] = [];
      let plan: MoePlan | undefined;
      for (let i = 0; i < o.reps; i++) {
        const r = await run(schedule, dispatch);
        times.push(await slowest(r.ms));
        plan = r.plan;
      }
      times.sort((a, b) => a - b);
      return {
        schedule: text,
        ms: times[times.length >> 1],
        predictedMs: plan!.predicted ? plan!.predictedMs : null,
        plan: planLabel(plan!),
      };
    };

    const results: ScheduleResult[] = [];
    const dedupApplies = comm.world > 1 && layout.groups === 1 && o.dispatch !== 'pairs';
    const dedupSweep = dedupApplies ? DEDUP_SWEEP.map((t) => t + DEDUP_SUFFIX) : [];
    for (const text of ['baseline', 'fixed:1:grouped', ...o.sweep, ...expertSweep(layout.groups), 'auto', ...dedupSweep]) {
      if (!results.some((r) => r.schedule === text)) results.push(await measure(text));
    }
    if (o.trace && o.trace.shape === shape.name && o.trace.tokens === T && o.trace.routing === routing) {
      const collector = new TraceCollector();
      let offsetMs = 0;
      for (const text of TRACED_SCHEDULES) {
        if (text.endsWith(DEDUP_SUFFIX) && !dedupApplies) continue;
        const { schedule, dispatch } = benchSchedule(text, o.dispatch ?? 'auto');
        await run(schedule, dispatch); // warm
        const { ms } = await run(schedule, dispatch, { collector, offsetMs, label: text });
        offsetMs += (await slowest(ms)) + 1;
      }
      await collector.write(rankTraceFile(o.trace.file, comm.rank));
    }
    const fixed = results.filter((r) => r.schedule.startsWith('fixed:'));
    const best = fixed.reduce((a, b) => (b.ms < a.ms ? b : a));
    const floor = await floorOf(ctx, shape, layout, route.idx, T, model, ceilingTflops);
    return {
      shape: shape.name,
      world: comm.world,
      expertGroups: layout.groups,
      tokensPerRank: T,
      routing,
      results,
      baselineMs: results.find((r) => r.schedule === 'baseline')!.ms,
      groupedMs: results.find((r) => r.schedule === 'fixed:1:grouped')!.ms,
      best,
      auto: results.find((r) => r.schedule === 'auto')!,
      ...floor,
    };
  } finally {
    for (const t of [h, idx, wts, out]) t.dispose();
    s.dispose();
    commStream.dispose();
  }
}

/**
 * The layer's floor: its GEMM FLOPs on the busiest rank over the measured GEMM ceiling, and the
 * all-to-all bytes of the busiest rank (dispatch + combine) over the measured all-to-all bandwidth,
 * with rows as the dedup dispatch sends them (one per token and destination rank: the fewer bytes of
 * the two ways this system can send); the floor is the larger (perfect overlap).
 */
async function floorOf(
  ctx: RankContext,
  shape: MoeLayerShape,
  layout: ExpertLayout,
  idx: Int32Array,
  T: number,
  model: CostModel,
  ceilingTflops: number,
) {
  const { comm } = ctx;
  const W = comm.world;
  const k = shape.topK;
  // Rows this rank sends to each rank (itself included), from its routing (virtual expert ids): per
  // (token, slot) pair, then per distinct (token, rank).
  const counts = new Int32Array(2 * W);
  const ranks = new Set<number>();
  for (let t = 0; t < T; t++) {
    ranks.clear();
    for (let j = 0; j < k; j++) ranks.add(layout.rankOf(idx[t * k + j]));
    for (const p of ranks) counts[W + p]++;
  }
  for (const v of idx) counts[layout.rankOf(v)]++;
  const all = W > 1 ? await comm.allGather(counts) : [counts];
  const pairs = all.map((c) => c.subarray(0, W));
  const maxRows = Math.max(...Array.from({ length: W }, (_, p) => pairs.reduce((sum, from) => sum + from[p], 0)));
  const crossRows = Math.min(busiestCrossRows(pairs), busiestCrossRows(all.map((c) => c.subarray(W))));
  const rowBytes = shape.hidden * dtypeBytes[ctx.dtype];
  const flops =
    2 * maxRows * 3 * shape.expertIntermediate * shape.hidden +
    (shape.sharedIntermediate ? 2 * T * 3 * shape.sharedIntermediate * shape.hidden : 0);
  const gemmFloorMs = flops / (ceilingTflops * 1e9);
  const commFloorMs = W > 1 ? 2 * allToAllMs(model, W, crossRows * rowBytes) : 0;
  return { gemmFloorMs, commFloorMs, floorMs: Math.max(gemmFloorMs, commFloorMs), maxRowsPerRank: maxRows };
}

/** The layout of a shape: `groups` expert groups, or as many as its ranks hold experts when fewer. */
export function benchLayout(shape: MoeLayerShape, world: number, groups: number): ExpertLayout {
  const most = Math.ceil(shape.numExperts / world);
  return expertLayout(shape.numExperts, world, Math.max(1, Math.min(groups, most)));
}

/** The expert-axis plans of G groups: dense at D = powers of two up to G (and G), grouped at D = G. */
export function expertSweep(groups: number): string[] {
  if (groups <= 1) return [];
  const degrees = autoDegrees(groups).filter((d) => d > 1);
  return [...degrees.map((d) => `fixed:${d}:dense:experts`), `fixed:${groups}:grouped:experts`];
}

async function makeWeights(ctx: RankContext, shape: MoeLayerShape, layout: ExpertLayout): Promise<MoeWeights> {
  const { device, comm } = ctx;
  const s = device.stream();
  const local = layout.ranges[comm.rank];
  const H = shape.hidden;
  const I = shape.expertIntermediate;
  const make = (dims: number[], seed: number): Tensor => {
    const t = device.tensor(ctx.dtype, dims);
    ops.fillRandom(s, t, seed, 1 / Math.sqrt(dims[dims.length - 1]));
    return t;
  };
  const w: MoeWeights = {
    router: make([shape.numExperts, H], 1),
    experts: {
      gateUp: make([Math.max(local.count, 0), 2 * I, H], 10 + comm.rank),
      down: make([Math.max(local.count, 0), H, I], 20 + comm.rank),
    },
    local,
  };
  if (shape.sharedIntermediate > 0) {
    w.shared = { gateUp: make([2 * shape.sharedIntermediate, H], 30), down: make([H, shape.sharedIntermediate], 31) };
  }
  await s.synchronize(); // the benchmark's streams read these
  s.dispose();
  return w;
}

/** The GEMM ceiling of this device: a square bf16 (CUDA) or f32 (CPU) matmul, median of 5. */
async function measureCeilingTflops(ctx: RankContext): Promise<number> {
  const n = ctx.device.backend === 'cuda' ? 8192 : 256;
  const s: Stream = ctx.device.stream();
  const a = ctx.device.tensor(ctx.dtype, [n, n]);
  const b = ctx.device.tensor(ctx.dtype, [n, n]);
  const c = ctx.device.tensor(ctx.dtype, [n, n]);
  ops.fillRandom(s, a, 1, 1);
  ops.fillRandom(s, b, 2, 1);
  const times: number[] = [];
  for (let i = 0; i < 7; i++) {
    const start = s.record();
    ops.matmul(s, c, a, b);
    const end = s.record();
    await s.synchronize();
    if (i >= 2) times.push(end.elapsedSince(start));
    start.dispose();
    end.dispose();
  }
  for (const t of [a, b, c]) t.dispose();
  s.dispose();
  times.sort((x, y) => x - y);
  return (2 * n ** 3) / (times[times.length >> 1] * 1e9);
}

export { formatMoeSchedule };
