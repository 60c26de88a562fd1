// The full forward on the CUDA backend (bf16 weights and activations) against transformers' fp32
// logits for every golden fixture: relative L2 error and argmax agreement at every position, beside the
// CPU reference run with the same bf16 storage (the part of the error that bf16 itself makes).
// Skipped, saying why, where the addon has no CUDA backend.
import * as fs from 'fs';
import * as path from 'path';
import { LocalCommunicator } from '../src/comm/communicator';
import { loadRankEngine } from '../src/engine/rankEngine';
import { hasBackend } from '../src/native/addon';
import { withEnv } from '../src/util/env';
import { FIXTURES, GOLDEN_FIXTURES, loadGolden } from './helpers/cli';

const cuda = hasBackend('cuda');
if (!cuda) console.log('gpu.golden: skipped: this addon has no CUDA backend (build on a host with nvcc, cuBLAS and NCCL)');
const maybe = cuda ? describe : describe.skip;

const summary: string[] = [];

maybe('CUDA forward vs transformers fp32 (golden fixtures)', () => {
  afterAll(() => {
    const table = ['fixture              CUDA bf16 vs transformers   CPU bf16 vs transformers', ...summary].join('\n');
    if (process.env.EPS_GOLDEN_REPORT) fs.writeFileSync(process.env.EPS_GOLDEN_REPORT, `${table}\n`);
  });

  test.each(GOLDEN_FIXTURES)('%s', async (fixture) => {
    const golden = loadGolden(fixture);
    const cudaLogits = await forwardAll(fixture, 'cuda', 'bf16', golden.sequences);
    // The CPU reference with the same bf16 storage: how far bf16 alone takes this tiny random model from
    // transformers' fp32 (a routing flip near a tie moves whole rows), so that the CUDA path is held to it.
    const cpuBf16 = await forwardAll(fixture, 'cpu', 'bf16', golden.sequences);
    const cuda = compare(cudaLogits, golden.logits);
    const storage = compare(cpuBf16, golden.logits);
    summary.push(
      `${fixture.padEnd(20)} ${cuda.relL2.toExponential(2)}   ${cuda.agree}/${cuda.positions}      ${storage.relL2.toExponential(2)}   ${storage.agree}/${storage.positions}`,
    );
    expect(cuda.relL2).toBeLessThan(Math.max(5e-2, storage.relL2 + 1e-2));
    expect(cuda.agree / cuda.positions).toBeGreaterThan(0.9);
  });

  // The dense SwiGLU MLPs (shared experts, dense layers) through the Hopper grouped GEMM (opt-in, src/moe/exec/mlp.ts):
  // the same bound, where it runs.
  test.each(['deepseek-v2-lite', 'deepseek-v3'])('%s, EPS_MLP_KERNEL=grouped_sm90', async (fixture) => {
    const golden = loadGolden(fixture);
    const logits = await withEnv({ EPS_MLP_KERNEL: 'grouped_sm90' }, () => forwardAll(fixture, 'cuda', 'bf16', golden.sequences));
    const storage = compare(await forwardAll(fixture, 'cpu', 'bf16', golden.sequences), golden.logits);
    const got = compare(logits, golden.logits);
    expect(got.relL2).toBeLessThan(Math.max(5e-2, storage.relL2 + 1e-2));
    expect(got.agree / got.positions).toBeGreaterThan(0.9);
  });
});

async function forwardAll(fixture: string, backend: 'cpu' | 'cuda', dtype: 'bf16', sequences: number[][]): Promise<Float32Array[]> {
  const engine = await loadRankEngine({
    modelDir: path.join(FIXTURES, fixture),
    backend,
    deviceIndex: 0,
    comm: new LocalCommunicator(),
    weightDtype: dtype,
    actDtype: dtype,
  });
  try {
    return (await engine.runner.forward(sequences, { allLogits: true })).logits;
  } finally {
    await engine.dispose();
  }
}

/** Relative L2 error over every position's logits, and at how many positions the argmax agrees. */
function compare(logits: Float32Array[], golden: number[][][]): { relL2: number; agree: number; positions: number } {
  let num = 0;
  let den = 0;
  let agree = 0;
  let positions = 0;
  golden.forEach((rows, s) => {
    const V = rows[0].length;
    rows.forEach((want, t) => {
      const got = logits[s].subarray(t * V, (t + 1) * V);
      let gi = 0;
      let wi = 0;
      want.forEach((w, v) => {
        num += (got[v] - w) ** 2;
        den += w * w;
        if (got[v] > got[gi]) gi = v;
        if (w > want[wi]) wi = v;
      });
      agree += gi === wi ? 1 : 0;
      positions++;
    });
  });
  return { relL2: Math.sqrt(num / den), agree, positions };
}

test('gpu.golden runs or says why it is skipped', () => {
  expect(typeof cuda).toBe('boolean');
});
