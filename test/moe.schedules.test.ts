// Every plan computes the same function: one MoE layer on 1 to 4 ranks (in-process, CPU backend)
// under baseline, auto and several fixed plans, on routings with empty experts, every token on the
// same experts, ranks without tokens, and more chunks than tokens, gives the single-rank baseline's
// output to fp32 round-off.
import { InProcessCommunicator } from '../src/comm/inProcessCommunicator';
import { LocalCommunicator, type Communicator } from '../src/comm/communicator';
import { TensorScope } from '../src/engine/scope';
import type { MoeWeights } from '../src/engine/weightTypes';
import { measureCostModel } from '../src/moe/costModelProfiler';
import type { CostModel } from '../src/moe/costModel';
import { routedMoeLayer } from '../src/moe/moeLayer';
import { expertRanges } from '../src/moe/placement';
import { parseMoeSchedule } from '../src/moe/schedule';
import { Device, type Tensor, tensorFromFloat32, tensorFromInt32 } from '../src/native/device';
import * as ops from '../src/native/ops';

const H = 24;
const I = 16;
const E = 8;
const K = 2;
const IS = 20; // shared expert
const device = Device.open('cpu');

interface Layer {
  gateUp: Tensor;
  down: Tensor;
  router: Tensor;
  shared: { gateUp: Tensor; down: Tensor };
  sharedGate: Tensor;
}

function makeLayer(): Layer {
  const s = device.stream();
  const t = (shape: number[], seed: number) => {
    const x = device.tensor('f32', shape);
    ops.fillRandom(s, x, seed, 0.3);
    return x;
  };
  return {
    gateUp: t([E, 2 * I, H], 1),
    down: t([E, H, I], 2),
    router: t([E, H], 3),
    shared: { gateUp: t([2 * IS, H], 4), down: t([H, IS], 5) },
    sharedGate: t([1, H], 6),
  };
}

/** This rank's view of the layer: its experts are rows of the full stacks. */
function rankWeights(layer: Layer, world: number, rank: number): MoeWeights {
  const local = expertRanges(E, world)[rank];
  return {
    router: layer.router,
    experts: { gateUp: layer.gateUp.rows(local.first, local.count), down: layer.down.rows(local.first, local.count) },
    local,
    shared: layer.shared,
    sharedGate: layer.sharedGate,
  };
}

type Routing = { idx: number[]; w: number[] }; // per token: K experts and weights

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
  world: number,
  schedule: string,
  tokensPerRank: number[],
  routing: Routing[],
  layer: Layer,
  x: Float32Array,
  model?: CostModel,
): Promise<Float32Array> {
  const comms: Communicator[] = world > 1 ? InProcessCommunicator.group(world) : [new LocalCommunicator()];
  const starts = tokensPerRank.map((_, r) => tokensPerRank.slice(0, r).reduce((a, b) => a + b, 0));
  const outs = await Promise.all(
    comms.map(async (comm, r) => {
      const T = tokensPerRank[r];
      const s = device.stream();
      const scope = new TensorScope(device);
      const mine = routing.slice(starts[r], starts[r] + T);
      const h = scope.adopt(tensorFromFloat32(device, s, 'f32', [T, H], x.slice(starts[r] * H, (starts[r] + T) * H)));
      const idx = scope.adopt(tensorFromInt32(device, s, [T, K], Int32Array.from(mine.flatMap((m) => m.idx))));
      const w = scope.adopt(tensorFromFloat32(device, s, 'f32', [T, K], Float32Array.from(mine.flatMap((m) => m.w))));
      const out = scope.tensor('f32', [T, H]);
      await routedMoeLayer(
        {
          compute: s,
          comm: device.stream(),
          scope,
          communicator: comm,
          actDtype: 'f32',
          routing: { numExperts: E, topK: K, normTopkProb: false, routedScale: 1, expertIntermediate: I, sharedIntermediate: IS },
          ranges: expertRanges(E, world),
          schedule: parseMoeSchedule(schedule),
          costModel: model,
        },
        rankWeights(layer, world, r),
        h,
        out,
        idx,
        w,
      );
      const result = T > 0 ? await out.readFloat32(s) : new Float32Array(0);
      scope.dispose();
      return result;
    }),
  );
  const all = new Float32Array(x.length);
  outs.forEach((o, r) => all.set(o, starts[r] * H));
  return all;
}

const SPLITS: Record<number, number[]> = { 1: [23], 2: [15, 8], 3: [11, 0, 12], 4: [3, 9, 1, 10] };
const SCHEDULES = ['baseline', 'auto', 'fixed:1:grouped', 'fixed:2:dense', 'fixed:3:grouped', 'fixed:8:grouped', 'fixed:16:dense'];

describe('every plan computes the same MoE layer', () => {
  const layer = makeLayer();
  const x = Float32Array.from({ length: 23 * H }, (_, i) => Math.sin(i * 0.37) * 1.5);
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

  for (const [name, routing] of Object.entries(routings(23))) {
    test.each([1, 2, 3, 4])(`${name}: %i rank(s), every schedule`, async (world) => {
      const reference = await runLayer(1, 'baseline', [23], routing, layer, x);
      expect(reference.some((v) => v !== 0)).toBe(true);
      for (const schedule of SCHEDULES) {
        const got = await runLayer(world, schedule, SPLITS[world], routing, layer, x, models.get(world));
        let maxDiff = 0;
        let maxRef = 0;
        reference.forEach((v, i) => {
          maxDiff = Math.max(maxDiff, Math.abs(v - got[i]));
          maxRef = Math.max(maxRef, Math.abs(v));
        });
        expect({ schedule, ok: maxDiff <= 1e-5 * maxRef }).toEqual({ schedule, ok: true });
      }
    });
  }
});
