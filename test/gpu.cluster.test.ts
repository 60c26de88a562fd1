// A 2-rank CUDA cluster (NCCL between the GPUs) answers the golden fixtures: top log-probs against
// the log-softmax of transformers' fp32 logits, within bf16 rounding. Skipped, saying why, without
// the CUDA backend or with fewer than two GPUs.
import * as fs from 'fs';
import * as path from 'path';
import { addon, hasBackend } from '../src/native/addon';
import { FIXTURES, goldenCases, loadGolden, referenceLogprobs, startCluster } from './clusterHarness';

const gpus = hasBackend('cuda') ? addon().devices('cuda').length : 0;
if (gpus < 2) console.log(`gpu.cluster: skipped: needs the CUDA backend and 2 GPUs (this addon sees ${gpus})`);
const maybe = gpus >= 2 ? describe : describe.skip;
const K = 5;
const rows: string[] = [];

maybe('2-rank CUDA cluster vs transformers', () => {
  afterAll(() => {
    if (process.env.EPS_CLUSTER_REPORT)
      fs.writeFileSync(process.env.EPS_CLUSTER_REPORT, `fixture            max |logprob diff|  argmax agree\n${rows.join('\n')}\n`);
  });

  test.each(['mixtral', 'mixtral-sharded', 'qwen2-moe', 'qwen3-moe', 'qwen3-moe-fused'])('%s', async (fixture) => {
    const golden = loadGolden(fixture);
    const cluster = await startCluster({ model: path.join(FIXTURES, fixture), ranks: 2, backend: 'cuda' });
    try {
      const cases = goldenCases(golden, [
        [2, 9],
        [3, 20],
      ]);
      const res = await cluster.client.prefill({ sequences: cases.map((c) => ({ ids: c.ids })), topLogprobs: K }, { timeoutMs: 120_000 });
      let maxDiff = 0;
      let agree = 0;
      res.sequences.forEach((got, i) => {
        const ref = referenceLogprobs(cases[i].logits);
        for (const t of got.topLogprobs) maxDiff = Math.max(maxDiff, Math.abs(t.logprob - ref[t.token]));
        const best = ref.indexOf(Math.max(...ref));
        if (got.nextToken === best) agree++;
      });
      rows.push(`${fixture.padEnd(18)} ${maxDiff.toExponential(2).padStart(17)}  ${agree}/${cases.length}`);
      expect(maxDiff).toBeLessThan(0.25); // bf16 weights and activations: about 1e-2 of logits up to 16
      expect(agree / cases.length).toBeGreaterThanOrEqual(0.8);
    } finally {
      await cluster.destroy();
    }
  });
});

test('gpu.cluster runs or says why it is skipped', () => {
  expect(gpus).toBeGreaterThanOrEqual(0);
});
