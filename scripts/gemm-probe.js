// GEMM probe: DeepSeek-V2-Lite's q_proj and router shapes through ops.matmul, fresh tensors, events.
const { Device } = require('../dist/native/device');
const ops = require('../dist/native/ops');
const d = Device.open(process.env.PROBE_BACKEND || 'cuda');
const s = d.stream();
async function time(name, M, N, K, outDt, reps = 20) {
  const a = d.tensor('bf16', [M, K]), w = d.tensor('bf16', [N, K]), o = d.tensor(outDt, [M, N]);
  ops.fillRandom(s, a, 1, 1); ops.fillRandom(s, w, 2, 0.02);
  for (let i = 0; i < 3; i++) ops.matmul(s, o, a, w);
  const e0 = s.record();
  for (let i = 0; i < reps; i++) ops.matmul(s, o, a, w);
  const e1 = s.record();
  await s.synchronize();
  const ms = e1.elapsedSince(e0) / reps;
  console.log(`${name.padEnd(28)} M=${M} N=${N} K=${K} out ${outDt}: ${(ms * 1000).toFixed(1)} us, ${(2 * M * N * K / ms / 1e9).toFixed(0)} TFLOP/s`);
  a.dispose(); w.dispose(); o.dispose();
}
(async () => {
  await time('q_proj', 16384, 3072, 2048, 'bf16');
  await time('kv_a', 16384, 576, 2048, 'bf16');
  await time('kv_b half', 16384, 2048, 512, 'bf16');
  await time('o_proj', 16384, 2048, 2048, 'bf16');
  await time('router f32', 16384, 64, 2048, 'f32');
  await time('router bf16', 16384, 64, 2048, 'bf16');
  await time('router qwen3 f32', 16384, 128, 2048, 'f32');
  await time('q_proj f32 out', 16384, 3072, 2048, 'f32');
  await time('q_proj N=3072 M=8192', 8192, 3072, 2048, 'bf16');
  await time('N=3584 (q 16h x 224)', 16384, 3584, 2048, 'bf16');
  await seq(3072);
  await seq(64);
  await seq(3072, 10, true);
  await seq(64, 10, true);
})();
// The model's order: the fused residual rmsnorm, then the GEMM on its output, each timed by its own events. With
// `afterExperts`, DeepSeek-V2-Lite's routed experts (grouped_sm90 gate/up with the SwiGLU epilogue, then down, 64
// experts x 1536 rows) run first, as the previous layer's do in the step.
async function seq(N, reps = 10, afterExperts = false) {
  const T = 16384, H = 2048;
  const x = d.tensor('bf16', [T, H]), res = d.tensor('bf16', [T, H]), hn = d.tensor('bf16', [T, H]), wn = d.tensor('bf16', [H]);
  const w = d.tensor('bf16', [N, H]), o = d.tensor(N === 64 ? 'f32' : 'bf16', [T, N]);
  for (const [t, sd] of [[x, 1], [res, 1], [wn, 0.1], [w, 0.02]]) ops.fillRandom(s, t, 3, sd);
  const E = 64, I = 1408, rows = T * 6, counts = Array(E).fill(rows / E);
  const ex = afterExperts
    ? { a: d.tensor('bf16', [rows, H]), gu: d.tensor('bf16', [E * 2 * I, H]), dn: d.tensor('bf16', [E * H, I]), act: d.tensor('bf16', [rows, I]), out: d.tensor('bf16', [rows, H]) }
    : undefined;
  if (ex) for (const t of [ex.a, ex.gu, ex.dn]) ops.fillRandom(s, t, 5, 0.02);
  let norm = 0, gemm = 0;
  for (let i = 0; i < reps; i++) {
    if (ex) {
      ops.expertMatmul(s, ex.act, ex.a, ex.gu.reshape([E, 2 * I, H]), counts, 'grouped_sm90', true);
      ops.expertMatmul(s, ex.out, ex.act, ex.dn.reshape([E, H, I]), counts, 'grouped_sm90');
    }
    const e0 = s.record();
    ops.rmsnorm(s, hn, x, wn, 1e-6, res);
    const e1 = s.record();
    ops.matmul(s, o, hn, w);
    const e2 = s.record();
    await s.synchronize();
    if (i > 1) { norm += e1.elapsedSince(e0); gemm += e2.elapsedSince(e1); }
  }
  console.log(`${afterExperts ? 'experts, ' : ''}fused norm: norm ${(norm / (reps - 2) * 1000).toFixed(1)} us, then GEMM N=${N} ${(gemm / (reps - 2) * 1000).toFixed(1)} us`);
  if (ex) for (const t of Object.values(ex)) t.dispose();
}
