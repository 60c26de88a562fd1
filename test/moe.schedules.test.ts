// Every plan computes the same function: one MoE layer on 1 to 4 ranks (in-process, CPU backend), with
// the experts in G = 1, 2, 3 or 4 groups (as far as the ranks hold experts), under baseline, auto and
// fixed plans of both axes (token chunks, expert-group chunks), on routings with empty experts, every
// token on the same experts, ranks without tokens, and more chunks than tokens, gives the float64
// reference layer (test/reference/moe.ts) to fp32 round-off.
import { InProcessCommunicator } from '../src/comm/inProcessCommunicator';
import { LocalCommunicator, type Communicator } from '../src/comm/communicator';
import { TensorScope } from '../src/native/scope';
import type { MoeWeights } from '../src/engine/weightTypes';
import { measureCostModel } from '../src/moe/cost/profiler';
import { COST_MODEL_VERSION, type CostModel } from '../src/moe/cost/costModel';
import { routedMoeLayer } from '../src/moe/exec/moeLayer';
import type { MoePlan } from '../src/moe/plan/plan';
import { type ExpertLayout, expertLayout } from '../src/moe/placement';
import { parseMoeSchedule, type DispatchMode } from '../src/moe/schedule';
import { Device, type Tensor, tensorFromFloat32, tensorFromInt32 } from '../src/native/device';
import { moeLayerRef, type MoeLayerRefWeights } from './reference/moe';
import { fillRandomRef } from './reference/ops';
import { withEnv } from '../src/util/env';

const H = 24;
const I = 16;
const E = 8;
const K = 2;
const IS = 20; // shared expert
const TOKENS = 23;
const device = Device.open('cpu');

const host: Required<MoeLayerRefWeights> = {
  gateUp: fillRandomRef(E * 2 * I * H, 1, 0.3),
  down: fillRandomRef(E * H * I, 2, 0.3),
  shared: { gateUp: fillRandomRef(2 * IS * H, 4, 0.3), down: fillRandomRef(H * IS, 5, 0.3), gate: fillRandomRef(H, 6, 0.3) },
};

interface Layer {
  gateUp: Tensor;
  down: Tensor;
  shared: { gateUp: Tensor; down: Tensor };
  sharedGate: Tensor;
}

function uploadLayer(): Layer {
  const s = device.stream();
  const t = (shape: number[], data: Float32Array) => tensorFromFloat32(device, s, 'f32', shape, data);
  return {
    gateUp: t([E, 2 * I, H], host.gateUp as Float32Array),
    down: t([E, H, I], host.down as Float32Array),
    shared: { gateUp: t([2 * IS, H], host.shared.gateUp as Float32Array), down: t([H, IS], host.shared.down as Float32Array) },
    sharedGate: t([1, H], host.shared.gate as Float32Array),
  };
}

/** This rank's view of the layer: its experts are rows of the full stacks, in checkpoint order. */
function rankWeights(layer: Layer, layout: ExpertLayout, rank: number): MoeWeights {
  const local = layout.ranges[rank];
  return {
    router: layer.sharedGate, // not read: the layer is entered after routing
    experts: { gateUp: layer.gateUp.rows(local.first, local.count), down: layer.down.rows(local.first, local.count) },
    local,
    shared: layer.shared,
    sharedGate: layer.sharedGate,
  };
}

type Routing = { idx: number[]; w: number[] }; // per token: K experts (checkpoint ids) and weights

function routings(T: number): Record<string, Routing[]> {
  let seed = 7;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const pick = (pool: number[]) => (): Routing => {
    const a = pool[Math.floor(rand() * pool.length)];
    let b = a;
    while (b === a) b = pool[Math.floor(rand() * pool.length)];
    const w0 = 0.2 + 0.6 * rand();
    return { idx: [a, b], w: [w0, 1 - w0] };
  };
  const all = Array.from({ length: E }, (_, e) => e);
  return {
    uniform: Array.from({ length: T }, pick(all)),
    'experts 3..7 empty': Array.from({ length: T }, pick([0, 1, 2])),
    'every token on experts 5 and 6': Array.from({ length: T }, () => ({ idx: [5, 6], w: [0.7, 0.3] })),
  };
}

async function runLayer(
  layout: ExpertLayout,
  schedule: string,
  tokensPerRank: number[],
  routing: Routing[],
  layer: Layer,
  x: Float32Array,
  model?: CostModel,
  dispatch: DispatchMode = 'auto',
  onSpan?: (rank: number, name: string, args: Record<string, string | number>) => void,
): Promise<{ out: Float32Array; plans: MoePlan[] }> {
  const world = layout.world;
  const comms: Communicator[] = world > 1 ? InProcessCommunicator.group(world) : [new LocalCommunicator()];
  const starts = tokensPerRank.map((_, r) => tokensPerRank.slice(0, r).reduce((a, b) => a + b, 0));
  const results = await Promise.all(
    comms.map(async (comm, r) => {
      const T = tokensPerRank[r];
      const s = device.stream();
      const scope = new TensorScope(device);
      const mine = routing.slice(starts[r], starts[r] + T);
      // The router would have numbered the experts by virtual id.
      const virtual = Int32Array.from(mine.flatMap((m) => m.idx.map((e) => layout.virtualOf(e))));
      const h = scope.adopt(tensorFromFloat32(device, s, 'f32', [T, H], x.slice(starts[r] * H, (starts[r] + T) * H)));
      const idx = scope.adopt(tensorFromInt32(device, s, [T, K], virtual));
      const w = scope.adopt(tensorFromFloat32(device, s, 'f32', [T, K], Float32Array.from(mine.flatMap((m) => m.w))));
      const out = scope.tensor('f32', [T, H]);
      const plan = await routedMoeLayer(
        {
          compute: s,
          comm: device.stream(),
          scope,
          communicator: comm,
          actDtype: 'f32',
          routing: { numExperts: E, topK: K, normTopkProb: false, routedScale: 1, expertIntermediate: I, sharedIntermediate: IS },
          layout,
          schedule: parseMoeSchedule(schedule),
          costModel: model,
          dispatch,
          onSpan: onSpan ? (sp) => onSpan(r, sp.name, sp.args) : undefined,
        },
        rankWeights(layer, layout, r),
        h,
        out,
        idx,
        w,
      );
      const result = T > 0 ? await out.readFloat32(s) : new Float32Array(0);
      scope.dispose();
      return { result, plan };
    }),
  );
  const all = new Float32Array(x.length);
  results.forEach(({ result }, r) => all.set(result, starts[r] * H));
  return { out: all, plans: results.map((r) => r.plan) };
}

function expectCloseToReference(schedule: string, reference: Float64Array, got: Float32Array): void {
  let maxDiff = 0;
  let maxRef = 0;
  reference.forEach((v, i) => {
    maxDiff = Math.max(maxDiff, Math.abs(v - got[i]));
    maxRef = Math.max(maxRef, Math.abs(v));
  });
  expect({ schedule, ok: maxRef > 0 && maxDiff <= 1e-5 * maxRef }).toEqual({ schedule, ok: true });
}

const SPLITS: Record<number, number[]> = { 1: [TOKENS], 2: [15, 8], 3: [11, 0, 12], 4: [3, 9, 1, 10] };
/** Schedules run with dedup dispatch: D = 1 ones use it, fixed:2 falls back to the per-pair path. */
const DEDUP_SCHEDULES = ['baseline', 'auto', 'fixed:1:grouped', 'fixed:2:dense', 'fixed:3:grouped', 'fixed:16:dense'];
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const TOKEN_SCHEDULES = ['baseline', 'auto', 'fixed:1:grouped', 'fixed:1:grouped_sm90', 'fixed:2:dense', 'fixed:3:grouped', 'fixed:8:grouped', 'fixed:16:dense'];

/** The expert axis at D = 1, 2 (unions of groups when G > 2, uneven when G = 3) and G. */
function expertSchedules(groups: number): string[] {
  if (groups === 1) return [];
  return [
    ...new Set(['fixed:1:dense:experts', 'fixed:2:grouped:experts', `fixed:${groups}:dense:experts`, `fixed:${groups}:grouped:experts`]),
  ];
}

// (world, G): G up to the experts a rank holds (8 experts: 8, 4, 3 (rank 2: 2, so an empty group), 2).
const LAYOUTS: [number, number][] = [
  [1, 1],
  [1, 2],
  [1, 4],
  [2, 1],
  [2, 2],
  [2, 4],
  [3, 1],
  [3, 2],
  [3, 3],
  [4, 1],
  [4, 2],
];

const routingCases = Object.entries(routings(TOKENS));
const x = Float32Array.from({ length: TOKENS * H }, (_, i) => Math.sin(i * 0.37) * 1.5);
const references = new Map(
  routingCases.map(([name, routing]) => [
    name,
    moeLayerRef(
      x,
      routing.map((r) => r.idx),
      routing.map((r) => r.w),
      host,
      { H, I, Is: IS },
    ),
  ]),
);

describe('every plan computes the same MoE layer', () => {
  const layer = uploadLayer();
  const models = new Map<number, CostModel>();

  beforeAll(async () => {
    for (const world of [1, 2, 3, 4]) {
      const comms = world > 1 ? InProcessCommunicator.group(world) : [new LocalCommunicator()];
      const got = await Promise.all(
        comms.map((comm) =>
          measureCostModel({
            device,
            comm: world > 1 ? comm : undefined,
            dtype: 'f32',
            hidden: H,
            expertIntermediate: I,
            sharedIntermediate: IS,
            numExperts: E,
            topK: K,
            rowsPerExpert: [1, 4, 16],
            allToAllBytes: [1024, 65536],
            smallOpTokens: [4, 32],
            warmup: 0,
            reps: 1,
          }),
        ),
      );
      models.set(world, got[0]);
    }
  });

  for (const [name, routing] of routingCases) {
    test.each(LAYOUTS)(`${name}: %i rank(s), %i expert group(s), every schedule`, async (world, groups) => {
      const layout = expertLayout(E, world, groups);
      const reference = references.get(name)!;
      for (const schedule of [...TOKEN_SCHEDULES, ...expertSchedules(groups)]) {
        const { out, plans } = await runLayer(layout, schedule, SPLITS[world], routing, layer, x, models.get(world));
        expectCloseToReference(schedule, reference, out);
        if (schedule.endsWith(':experts')) expect(plans.every((p) => p.axis === 'experts')).toBe(true);
      }
      // Dedup dispatch: token-axis plans (1 to 16 chunks, more chunks than some ranks have tokens) send
      // each token once per rank where there are several ranks and one group; the expert axis and G > 1
      // keep the per-pair path. Every one computes the layer.
      for (const schedule of [...DEDUP_SCHEDULES, ...expertSchedules(groups)]) {
        const { out, plans } = await runLayer(layout, schedule, SPLITS[world], routing, layer, x, models.get(world), 'dedup');
        expectCloseToReference(`${schedule} with dedup dispatch`, reference, out);
        const dedup = world > 1 && groups === 1 && !schedule.endsWith(':experts');
        expect({ schedule, dispatch: plans.map((p) => p.dispatch) }).toEqual({
          schedule,
          dispatch: plans.map(() => (dedup ? 'dedup' : 'pairs')),
        });
      }
    });
  }

  // Alone, a plan of one chunk needs nothing from the plan to permute: the permute is enqueued before the host
  // waits for the counts (its span ends before count_sync's), and the layer still computes the same. Several
  // chunks, or several ranks, permute after the plan.
  test.each([
    [1, 'auto', true],
    [1, 'baseline', true],
    [1, 'fixed:1:dense', true],
    [1, 'fixed:3:grouped', false],
    [2, 'auto', false],
  ] as const)('on %i rank(s), %s permutes before the host sync: %s', async (world, schedule, early) => {
    const layout = expertLayout(E, world, 1);
    const [name, routing] = routingCases[0];
    const order: string[] = [];
    const { out } = await runLayer(layout, schedule, SPLITS[world], routing, layer, x, models.get(world), 'auto', (r, span) => {
      if (r === 0 && (span === 'count_sync' || span.startsWith('permute'))) order.push(span);
    });
    expectCloseToReference(schedule, references.get(name)!, out);
    // (across ranks auto may choose the dedup dispatch, whose rows need no permute span at all)
    const sync = order.indexOf('count_sync');
    const firstPermute = order.findIndex((n) => n.startsWith('permute'));
    expect(sync).toBeGreaterThanOrEqual(0);
    expect(firstPermute >= 0 && firstPermute < sync).toBe(early);
  });

  // Alone, with grouped_sm90 fixed, the experts and the unpermute run on the counts the permute left on the
  // device, enqueued before the host reads the counts (EPS_MOE_DEVICE_COUNTS=0: after, as in a cluster); the
  // same layer either way, every routing.
  test.each(routingCases)('%s: alone, fixed:1:grouped_sm90 on device counts computes the layer before the host sync', async (name, routing) => {
    const layout = expertLayout(E, 1, 1);
    for (const [setting, before] of [['', true], ['0', false]] as const) {
      const order: string[] = [];
      const { out, plans } = await withEnv({ EPS_MOE_DEVICE_COUNTS: setting }, () =>
        runLayer(layout, 'fixed:1:grouped_sm90', SPLITS[1], routing, layer, x, undefined, 'auto', (_r, span) => order.push(span)),
      );
      expectCloseToReference(`fixed:1:grouped_sm90, EPS_MOE_DEVICE_COUNTS='${setting}'`, references.get(name)!, out);
      // (this layer has a shared expert: it runs early and the unpermute adds onto it)
      const spans = order.filter((n) => !n.startsWith('router'));
      expect({ setting, spans }).toEqual({
        setting,
        spans: before
          ? ['permute 0', 'shared expert', 'ffn 0', 'unpermute 0', 'count_sync']
          : ['permute 0', 'shared expert', 'count_sync', 'ffn 0', 'unpermute 0'],
      });
      expect(plans[0].chunks.map((c) => c.kernel)).toEqual(['grouped_sm90']);
    }
  });

  test.each([1, 2, 3, 4])('dedup dispatch on %i rank(s) sends one row per distinct (token, rank) pair', async (world) => {
    const layout = expertLayout(E, world, 1);
    const [name, routing] = routingCases[0];
    const starts = SPLITS[world].map((_, r) => SPLITS[world].slice(0, r).reduce((a, b) => a + b, 0));
    // Independent count: the distinct ranks owning each token's experts (ranges contiguous by checkpoint id).
    const owner = (e: number) => layout.ranges.findIndex((g) => e >= g.first && e < g.first + g.count);
    const distinct = SPLITS[world].map((T, r) =>
      routing.slice(starts[r], starts[r] + T).reduce((acc, m) => acc + new Set(m.idx.map(owner)).size, 0),
    );
    const perPair = SPLITS[world].map((T) => T * K);
    for (const schedule of ['baseline', 'fixed:3:dense']) {
      // Summed over the chunks' dispatches.
      const sent = new Array<number>(world).fill(0);
      const { out } = await runLayer(layout, schedule, SPLITS[world], routing, layer, x, undefined, 'dedup', (r, name, args) => {
        if (name.startsWith('dispatch')) sent[r] += Number(args.sent);
      });
      expectCloseToReference(`${schedule} with dedup dispatch`, references.get(name)!, out);
      // One rank runs the per-pair path (nothing to deduplicate across ranks).
      if (world > 1) {
        expect({ schedule, sent }).toEqual({ schedule, sent: distinct });
        expect(sum(sent)).toBeLessThan(sum(perPair));
      }
    }
  });

  test('auto weighs the dedup dispatch: chosen when the all-to-all dominates, never with --dispatch pairs', async () => {
    const layout = expertLayout(E, 2, 1);
    const [name, routing] = routingCases[0];
    const commBound = { ...launchBoundModel(2), allToAll: [{ world: 2, latencyMs: 0, bytesPerMs: 1, points: [] }] };
    const auto = await runLayer(layout, 'auto', SPLITS[2], routing, layer, x, commBound);
    expect(auto.plans.map((p) => p.dispatch)).toEqual(['dedup', 'dedup']);
    // The rank that searched weighed both (the other found its decision in the plan cache).
    expect(auto.plans.some((p) => p.candidates.some((c) => c.dispatch === 'pairs'))).toBe(true);
    expectCloseToReference('auto (dedup)', references.get(name)!, auto.out);
    const pairs = await runLayer(layout, 'auto', SPLITS[2], routing, layer, x, commBound, 'pairs');
    expect(pairs.plans.every((p) => p.dispatch === 'pairs' && p.candidates.every((c) => c.dispatch === 'pairs'))).toBe(true);
    expectCloseToReference('auto (pairs)', references.get(name)!, pairs.out);
    // baseline and fixed plans keep the per-pair dispatch unless it is asked for.
    const fixed = await runLayer(layout, 'fixed:1:dense', SPLITS[2], routing, layer, x, commBound);
    expect(fixed.plans.map((p) => p.dispatch)).toEqual(['pairs', 'pairs']);
    // The shared expert runs before the host sync in every overlapping plan, last in the baseline.
    expect([...auto.plans, ...pairs.plans, ...fixed.plans].every((p) => p.shared === 'early' && p.computeOrder[0].op !== 'ffn')).toBe(true);
    expect(fixed.plans[0].computeOrder[0]).toEqual({ op: 'shared' });
    const chosen = auto.plans[0];
    expect(chosen.computeOrder.map((c) => c.op)).toEqual([
      'permute',
      'shared',
      ...new Array(chosen.degree - 1).fill('permute'),
      ...new Array(chosen.degree).fill('ffn'),
      ...new Array(chosen.degree).fill('unpermute'),
    ]);
    const baseline = await runLayer(layout, 'baseline', SPLITS[2], routing, layer, x, commBound);
    expect(baseline.plans.map((p) => p.shared)).toEqual(['serial', 'serial']);
    expectCloseToReference('fixed:1:dense (early shared expert)', references.get(name)!, fixed.out);
  });

  test('auto chooses the expert axis when GEMM launches dominate, and computes the same layer', async () => {
    const layout = expertLayout(E, 2, 4);
    const [name, routing] = routingCases[0];
    const { out, plans } = await runLayer(layout, 'auto', SPLITS[2], routing, layer, x, launchBoundModel(2));
    for (const p of plans) {
      expect(p.axis).toBe('experts');
      expect(p.degree).toBeGreaterThan(1);
    }
    expectCloseToReference('auto', references.get(name)!, out);
  });
});

/**
 * A synthetic cost model where every GEMM costs 1 ms up to 1024 rows (launch-bound: cutting tokens
 * doubles the GEMMs, cutting expert groups does not) and the all-to-all about as much as the FFN.
 */
function launchBoundModel(world: number): CostModel {
  const flat = {
    overheadMs: 0,
    points: [
      { rows: 1, ms: 1 },
      { rows: 1024, ms: 1 },
    ],
  };
  const table = (n: number, k: number) => ({ n, k, segments: 4, grouped: flat, dense: flat });
  const free = { fixedMs: 0, msPerRow: 0 };
  return {
    version: COST_MODEL_VERSION,
    key: {
      device: 'synthetic',
      backend: 'cpu',
      dtype: 'f32',
      hidden: H,
      expertIntermediate: I,
      sharedIntermediate: IS,
      numExperts: E,
      topK: K,
      versions: {},
      worlds: [world],
    },
    measuredAt: '2025-01-01T00:00:00.000Z',
    gemm: [table(2 * I, H), table(H, I), table(2 * IS, H), table(H, IS)],
    allToAll: [{ world, latencyMs: 0, bytesPerMs: 300, points: [] }],
    smallOps: { router: free, permute: free, swiglu: { ...free, width: I }, unpermute: free, hostSyncMs: 0 },
  };
}
