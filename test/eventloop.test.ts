// Acceptance: compute never blocks the Node event loop. A timer keeps firing on schedule while a
// multi-second forward runs (ops run on the stream's worker thread; JS only enqueues and awaits).
import { LocalCommunicator } from '../src/comm/communicator';
import { loadRankEngine } from '../src/engine/rankEngine';
import { parseModelConfig } from '../src/model/config';
import { presetConfig } from '../src/model/makeModel';

test('a 20 ms timer fires on schedule during a multi-second forward', async () => {
  // tiny-mixtral's family, made wider and deeper so that the CPU forward takes seconds.
  const config = {
    ...presetConfig('tiny-mixtral'),
    hidden_size: 512,
    intermediate_size: 1024,
    num_hidden_layers: 8,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    head_dim: 64,
  };
  const spec = parseModelConfig(config, 'test config');
  const engine = await loadRankEngine({ spec, randomSeed: 1, backend: 'cpu', deviceIndex: 0, comm: new LocalCommunicator() });
  try {
    const sequences = [0, 1, 2, 3].map((b) => Array.from({ length: 384 }, (_, i) => (i * 7 + b) % spec.vocabSize));
    const ticks: number[] = [];
    const timer = setInterval(() => ticks.push(performance.now()), 20);
    const start = performance.now();
    const { logits } = await engine.step(sequences);
    const elapsed = performance.now() - start;
    clearInterval(timer);

    expect(logits).toHaveLength(4);
    expect(elapsed).toBeGreaterThan(1000); // the forward really is long
    // A loop blocked by compute would show a gap as long as the forward (seconds). The bounds leave
    // room for a loaded CI machine (other test files run processes beside this one).
    const gaps = ticks.slice(1).map((t, i) => t - ticks[i]);
    expect(Math.max(...gaps)).toBeLessThan(Math.min(400, elapsed / 4));
    expect(ticks.length).toBeGreaterThan((elapsed / 20) * 0.4);
  } finally {
    await engine.dispose();
  }
});
