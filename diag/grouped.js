// Diagnostic: cuBLAS grouped expert GEMM timings, batch by batch, on whole tensors and on views.
const { Device } = require('../dist/native/device');
const ops = require('../dist/native/ops');
(async () => {
  const device = Device.open('cuda', 0);
  const s = device.stream();
  const E = 80, N = 3072, K = 5120, rows = 1024, R = rows * E;
  const w = device.tensor('bf16', [E, N, K]); ops.fillRandom(s, w, 1, 0.02);
  const big = device.tensor('bf16', [4 * R, K]); ops.fillRandom(s, big, 2, 1);
  const bigOut = device.tensor('bf16', [4 * R, N]);
  const counts = new Array(E).fill(rows);
  for (const [label, a, out] of [['views', big.rows(0, R), bigOut.rows(0, R)], ['views2', big.rows(0, R), bigOut.rows(0, R)]]) {
    for (const kernel of ['grouped', 'dense', 'grouped']) {
      const line = [];
      for (let b = 0; b < 4; b++) {
        await s.synchronize();
        const t0 = process.hrtime.bigint();
        const e0 = s.record();
        for (let i = 0; i < 2; i++) ops.expertMatmul(s, out, a, w, counts, kernel);
        const e1 = s.record();
        const host = Number(process.hrtime.bigint() - t0) / 1e6;
        await s.synchronize();
        line.push(`${(e1.elapsedSince(e0) / 2).toFixed(3)}ms(host ${host.toFixed(2)})`);
      }
      console.log(label, kernel, line.join(' '));
    }
  }
  // The answer itself: grouped vs dense outputs must agree.
  const o1 = device.tensor('bf16', [R, N]);
  const o2 = device.tensor('bf16', [R, N]);
  ops.expertMatmul(s, o1, big.rows(0, R), w, counts, 'grouped');
  ops.expertMatmul(s, o2, big.rows(0, R), w, counts, 'dense');
  const x = await o1.readFloat32(s), y = await o2.readFloat32(s);
  let d = 0, m = 0; for (let i = 0; i < x.length; i += 997) { d = Math.max(d, Math.abs(x[i] - y[i])); m = Math.max(m, Math.abs(y[i])); }
  console.log('grouped vs dense max diff', d, 'max', m);
})();
