// GPU-host check: expert_matmul timed by a plain event pair around 5 runs against the cost-model profiler's curve
// (they must agree; a 32-bit overflow once made the profiler measure one segment). Run: node scripts/check-expert-gemm-timing.js
const { Device } = require('../dist/native/device');
const ops = require('../dist/native/ops');
const { measureCostModel } = require('../dist/moe/cost/profiler');
(async () => {
  const device = Device.open('cuda', 0);
  const s = device.stream();
  const E = 80,
    N = 3072,
    K = 5120;
  const w = device.tensor('bf16', [E, N, K]);
  ops.fillRandom(s, w, 1, 0.02);
  for (const rows of [64, 256, 1024, 2048]) {
    const R = rows * E;
    const a = device.tensor('bf16', [R, K]);
    ops.fillRandom(s, a, 2, 1);
    const out = device.tensor('bf16', [R, N]);
    for (const kernel of ['dense', 'grouped']) {
      const counts = new Array(E).fill(rows);
      ops.expertMatmul(s, out, a, w, counts, kernel);
      await s.synchronize();
      const t0 = process.hrtime.bigint();
      const ev0 = s.record();
      for (let i = 0; i < 5; i++) ops.expertMatmul(s, out, a, w, counts, kernel);
      const ev1 = s.record();
      await s.synchronize();
      const wall = Number(process.hrtime.bigint() - t0) / 1e6 / 5;
      const evms = ev1.elapsedSince(ev0) / 5;
      const tf = (2 * R * N * K) / (evms * 1e9);
      console.log(
        `rows ${rows} ${kernel}: events ${evms.toFixed(3)} ms, wall ${wall.toFixed(3)} ms, ${tf.toFixed(0)} TFLOP/s, per segment ${((evms / E) * 1000).toFixed(1)} us`,
      );
    }
    a.dispose();
    out.dispose();
  }
  w.dispose();
  const m = await measureCostModel({
    device,
    dtype: 'bf16',
    hidden: 5120,
    expertIntermediate: 1536,
    sharedIntermediate: 0,
    numExperts: 80,
    topK: 6,
    rowsPerExpert: [1, 16, 64, 256, 1024, 2048, 4096],
  });
  for (const g of m.gemm) {
    console.log('profiler N', g.n, 'K', g.k, 'segments', g.segments);
    console.log('  dense  ', g.dense.points.map((p) => `${p.rows}:${(p.ms * 1000).toFixed(1)}`).join(' '));
    console.log('  grouped', g.grouped.points.map((p) => `${p.rows}:${(p.ms * 1000).toFixed(1)}`).join(' '));
  }
})();
