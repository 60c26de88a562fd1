// The full forward on the CUDA backend (bf16 weights and activations) against transformers' fp32
// logits for every golden fixture: relative L2 error and argmax agreement at every position.
// Skipped, saying why, where the addon has no CUDA backend.
import * as fs from 'fs';
import * as path from 'path';
import { LocalCommunicator } from '../src/comm/communicator';
import { loadRankEngine } from '../src/engine/rankEngine';
import { hasBackend } from '../src/native/addon';
import { FIXTURES, GOLDEN_FIXTURES, loadGolden } from './helpers/cli';

const cuda = hasBackend('cuda');
if (!cuda) console.log('gpu.golden: skipped: this addon has no CUDA backend (build on a host with nvcc, cuBLAS and NCCL)');
const maybe = cuda ? describe : describe.skip;

const summary: string[] = [];

maybe('CUDA forward vs transformers fp32 (golden fixtures)', () => {
  afterAll(() => {
    const table = ['fixture            rel L2     argmax agree', ...summary].join('\n');
    if (process.env.EPS_GOLDEN_REPORT) fs.writeFileSync(process.env.EPS_GOLDEN_REPORT, `${table}\n`);
  });

  test.each(GOLDEN_FIXTURES)('%s', async (fixture) => {
    const golden = loadGolden(fixture);
    const engine = await loadRankEngine({
      modelDir: path.join(FIXTURES, fixture),
      backend: 'cuda',
      deviceIndex: 0,
      comm: new LocalCommunicator(),
    });
    try {
      const { logits } = await engine.runner.forward(golden.sequences, { allLogits: true });
      let num = 0;
      let den = 0;
      let agree = 0;
      let positions = 0;
      golden.logits.forEach((rows, s) => {
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
      const relL2 = Math.sqrt(num / den);
      summary.push(`${fixture.padEnd(18)} ${relL2.toExponential(2)}   ${agree}/${positions}`);
      expect(relL2).toBeLessThan(5e-2);
      expect(agree / positions).toBeGreaterThan(0.9);
    } finally {
      await engine.dispose();
    }
  });
});

test('gpu.golden runs or says why it is skipped', () => {
  expect(typeof cuda).toBe('boolean');
});
