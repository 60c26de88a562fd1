// The planner's kernel choice among the cost model's kernels (issue 12): grouped_sm90, the Hopper
// kernel, is weighed beside grouped and dense only where the model has its curves (the profiler measures
// them on Hopper), chosen where it is predicted fastest, and never offered where the model lacks it.
import { EXPERT_KERNELS, type ExpertKernel } from '../src/native/ops';
import { gemmMs, kernelCurve, tableKernels, validateCostModel } from '../src/moe/cost/costModel';
import { layerCosts } from '../src/moe/cost/layerCosts';
import { measuredKernels } from '../src/moe/cost/profiler';
import { GROUPED_MARGIN, pickKernel } from '../src/moe/plan/planner';
import { planMoeLayer } from '../src/moe/plan/planner';
import { parseMoeSchedule } from '../src/moe/schedule';
import { H, I, flatStartDense, inputFor, planAll, proportional, randomCounts, syntheticModel, uniform } from './helpers/planning';

const dense = flatStartDense;
// Experts 0,1 (rank 0) get 16 rows per micro-chunk from each of 2 ranks; experts 2,3 (rank 1) get 1.
const counts = Array.from({ length: 2 }, () => Array.from({ length: 2 }, () => [16, 16, 1, 1]));

describe('pickKernel', () => {
  test('grouped against dense reads as before: grouped < GROUPED_MARGIN x dense', () => {
    expect(pickKernel({ grouped: 0.89, dense: 1 })).toBe('grouped');
    expect(pickKernel({ grouped: 0.9, dense: 1 })).toBe('dense');
    expect(pickKernel({ grouped: 0.95, dense: 1 })).toBe('dense');
  });

  test('grouped_sm90 against dense takes the grouped margin; against grouped the faster wins', () => {
    expect(pickKernel({ grouped: 2, dense: 1, grouped_sm90: 0.95 })).toBe('dense');
    expect(pickKernel({ grouped: 2, dense: 1, grouped_sm90: GROUPED_MARGIN * 0.99 })).toBe('grouped_sm90');
    expect(pickKernel({ grouped: 0.5, dense: 1, grouped_sm90: 0.4 })).toBe('grouped_sm90');
    expect(pickKernel({ grouped: 0.4, dense: 1, grouped_sm90: 0.5 })).toBe('grouped');
    // A tie between the two grouped kernels: the earlier in the op table.
    expect(pickKernel({ grouped: 0.4, dense: 1, grouped_sm90: 0.4 })).toBe('grouped');
  });

  test('a kernel without a time is never picked', () => {
    expect(pickKernel({ grouped: 0.5, dense: 1 })).toBe('grouped');
    expect(pickKernel({ grouped: 5, dense: 1 })).toBe('dense');
  });
});

describe('auto with the Hopper kernel in the model', () => {
  test('chosen per rank where it is predicted fastest', () => {
    // grouped 0.01 ms per row, grouped_sm90 0.005.
    const model = syntheticModel({ world: 2, grouped: proportional(0.01), dense, sm90: proportional(0.005) });
    const plans = planAll(counts, model, 'auto');
    // Rank 0: 4 segments of 32 rows: grouped 4 x 0.32, grouped_sm90 4 x 0.16, dense 4 x 0.1: dense.
    expect(plans[0].chunks[0].kernel).toBe('dense');
    expect(plans[0].chunks[0].predicted.kernelMs).toEqual({
      grouped: expect.closeTo(2 * 4 * 0.32, 9),
      dense: expect.closeTo(2 * 4 * 0.1, 9),
      grouped_sm90: expect.closeTo(2 * 4 * 0.16, 9),
    });
    // Rank 1: 4 segments of 2 rows: grouped 4 x 0.02, grouped_sm90 4 x 0.01, dense 4 x 0.1: grouped_sm90.
    const c = plans[1].chunks[0];
    expect(c.kernel).toBe('grouped_sm90');
    expect(c.predicted.ffnMs).toBeCloseTo(2 * 4 * 0.01, 9);
    expect(c.predicted.kernelMs.grouped_sm90).toBeCloseTo(2 * 4 * 0.01, 9);
    const text = plans[1].explain();
    expect(text).toContain('chosen kernels | all grouped | all dense | all grouped_sm90;');
    expect(text).toContain('kernel grouped_sm90 (grouped 0.160 ms, dense 0.800 ms, grouped_sm90 0.080 ms)');
  });

  test('slower than grouped: grouped stays', () => {
    const model = syntheticModel({ world: 2, grouped: proportional(0.01), dense, sm90: proportional(0.02) });
    const plans = planAll(counts, model, 'auto');
    expect(plans.map((p) => p.chunks[0].kernel)).toEqual(['dense', 'grouped']);
  });

  test('fixed:D without a kernel picks it too; on the dedup candidate as well', () => {
    const model = syntheticModel({ world: 2, groupedPerRow: 0.002, densePerRow: 0.002, sm90: proportional(0.0005) });
    for (const p of planAll(uniform(2, 4, 4, 8), model, 'fixed:2'))
      expect(p.chunks.map((c) => c.kernel)).toEqual(['grouped_sm90', 'grouped_sm90']);
    const input = { ...inputFor(uniform(2, 4, 4, 8), 0), dedup: { microRows: [new Array(8).fill(8), new Array(8).fill(8)], only: true } };
    const p = planMoeLayer(input, model, parseMoeSchedule('auto'));
    expect(p.dispatch).toBe('dedup');
    expect(p.chunks.every((c) => c.kernel === 'grouped_sm90')).toBe(true);
  });
});

describe('the SwiGLU in grouped_sm90\'s epilogue', () => {
  test('grouped_sm90 is predicted without the swiglu pass where it fuses it (bf16), the others with it', () => {
    const model = syntheticModel({ world: 1, grouped: proportional(0.01), sm90: proportional(0.01) });
    model.smallOps.swiglu = { fixedMs: 0.5, msPerRow: 0.001, width: I };
    const shape = { hidden: H, expertIntermediate: I, sharedIntermediate: 0, topK: 2, dtypeBytes: 2 };
    const costs = layerCosts(model, shape, 1);
    const segments = [8, 0, 8, 4];
    const swiglu = 0.5 + 20 * 0.001;
    expect(costs.ffnMs('grouped', segments) - costs.ffnMs('grouped_sm90', segments)).toBeCloseTo(swiglu, 9);
    // 4-byte elements: grouped_sm90 does not run (it takes bf16), so it is what it runs as, with the pass.
    const f32 = layerCosts(model, { ...shape, dtypeBytes: 4 }, 1);
    expect(f32.ffnMs('grouped_sm90', segments)).toBeCloseTo(f32.ffnMs('grouped', segments), 9);
  });
});

describe('without the Hopper kernel in the model', () => {
  test('never offered, whatever the loads', () => {
    const model = syntheticModel({ world: 4, groupedPerRow: 0.0004, densePerRow: 0.0003, denseOverhead: 0.002, latencyMs: 0.01 });
    const loads = randomCounts(4, 8, 16, 2, [300, 17, 0, 120], 7);
    for (const schedule of ['auto', 'fixed:2', 'fixed:2:experts']) {
      for (const p of planAll(loads, model, schedule, { expertGroups: 2 })) {
        for (const c of p.chunks) {
          expect(['grouped', 'dense']).toContain(c.kernel);
          expect(Object.keys(c.predicted.kernelMs).sort()).toEqual(['dense', 'grouped']);
        }
        expect(p.explain()).not.toContain('grouped_sm90');
      }
    }
  });

  test('fixed:D:grouped_sm90 still runs it, predicted as grouped (what it runs as where it was not measured)', () => {
    const model = syntheticModel({ world: 2, grouped: proportional(0.01), dense });
    const plans = planAll(counts, model, 'fixed:1:grouped_sm90');
    for (const p of plans) {
      expect(p.chunks[0].kernel).toBe('grouped_sm90');
      expect(p.chunks[0].predicted.ffnMs).toBe(p.chunks[0].predicted.kernelMs.grouped);
    }
    // Without a model at all, too (nothing is predicted).
    expect(planAll(counts, undefined, 'fixed:1:grouped_sm90').map((p) => p.chunks[0].kernel)).toEqual(['grouped_sm90', 'grouped_sm90']);
  });
});

describe('the cost model file', () => {
  test('a grouped_sm90 curve is optional, validated where present, and predicts its own kernel', () => {
    const without = syntheticModel({ world: 1 });
    const withIt = syntheticModel({ world: 1, sm90: proportional(0.0005, 0.01) });
    expect(validateCostModel(JSON.parse(JSON.stringify(without)))).toEqual(without);
    expect(validateCostModel(JSON.parse(JSON.stringify(withIt)))).toEqual(withIt);
    expect(tableKernels(without.gemm[0])).toEqual(['grouped', 'dense']);
    expect(tableKernels(withIt.gemm[0])).toEqual(['grouped', 'dense', 'grouped_sm90']);
    expect(gemmMs(withIt, 'grouped_sm90', [4, 0, 2], 2 * I, H)).toBeCloseTo(0.01 + 6 * 0.0005, 12);
    // Absent: the kernel it runs as.
    expect(kernelCurve(without.gemm[0], 'grouped_sm90')).toBe(without.gemm[0].grouped);
    expect(gemmMs(without, 'grouped_sm90', [4, 0, 2], 2 * I, H)).toBe(gemmMs(without, 'grouped', [4, 0, 2], 2 * I, H));

    const bad = JSON.parse(JSON.stringify(withIt));
    bad.gemm[1].grouped_sm90.points[1].rows = 0.5;
    expect(() => validateCostModel(bad, 'f.json')).toThrow(/gemm\[1\]\.grouped_sm90\.points\[1\]\.rows is not/);
  });

  test('LayerCosts weighs a kernel only where both expert GEMMs have its curve', () => {
    const both = syntheticModel({ world: 1, sm90: proportional(0.0005) });
    expect(layerCosts(both, { hidden: H, expertIntermediate: I, sharedIntermediate: 0, topK: 2, dtypeBytes: 2 }, 1).kernels).toEqual(
      EXPERT_KERNELS,
    );
    const one = syntheticModel({ world: 1, sm90: proportional(0.0005) });
    delete one.gemm[1].grouped_sm90; // the down projection's shape was not taken
    const costs = layerCosts(one, { hidden: H, expertIntermediate: I, sharedIntermediate: 0, topK: 2, dtypeBytes: 2 }, 1);
    expect(costs.kernels).toEqual(['grouped', 'dense']);
    const plans = planAll([[[3, 4]]], one, 'auto');
    expect(plans[0].chunks[0].kernel).not.toBe('grouped_sm90');
  });
});

describe('the profiler measures grouped_sm90 only where it runs as itself', () => {
  const hopper: ExpertKernel[] = ['grouped', 'dense', 'grouped_sm90'];
  test.each([
    ['a Hopper device, bf16, N and K multiples of 8', hopper, 'bf16', 1536, 2048, hopper],
    ['the CPU (or another GPU)', ['grouped', 'dense'], 'bf16', 1536, 2048, ['grouped', 'dense']],
    ['f32 activations', hopper, 'f32', 1536, 2048, ['grouped', 'dense']],
    ['f16 activations', hopper, 'f16', 1536, 2048, ['grouped', 'dense']],
    ['N not a multiple of 8', hopper, 'bf16', 1540, 2048, ['grouped', 'dense']],
    ['K not a multiple of 8', hopper, 'bf16', 1536, 2044, ['grouped', 'dense']],
  ] as const)('%s', (_name, runs, dtype, n, k, expected) => {
    expect(measuredKernels(runs, dtype, n, k)).toEqual(expected);
  });
});
