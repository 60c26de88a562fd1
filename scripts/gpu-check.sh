#!/usr/bin/env bash
# The one script a GPU-host call runs: builds the addon with the CUDA backend, runs the GPU tests,
# times a few kernels, and prints a short summary last (the part a device call's reply shows).
#
# usage, on the GPU host, from the project root, with .gpu/ carried (../shared/gpu/bundle.sh here):
#   scripts/gpu-check.sh [all|ops|nccl|bench]      (default: all)
# Logs go to $OUT (the device tool's folder) or /tmp/eps-gpu-check.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
OUT=${OUT:-/tmp/eps-gpu-check}
mkdir -p "$OUT"

# Never NVLink multicast on shared hosts.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export EPS_CUDA=1                                              # fail the build loudly without CUDA
export CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90}  # H200 only: half the compile time
export PATH=/usr/local/cuda/bin:$PATH
summary=()
started=$(date +%s)

nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpus.txt"
gpus=$(nvidia-smi -L | wc -l)

GPU_ENV_NO_BUILD=1 source .gpu/env.sh
rm -rf build
if npm run --silent build:native > "$OUT/build.log" 2>&1; then
  summary+=("build: ok ($(( $(date +%s) - started )) s)")
else
  tail -n 40 "$OUT/build.log"
  echo "gpu-check: the native build failed (log: $OUT/build.log)"
  exit 1
fi
grep -E "eps-moe: CUDA backend" "$OUT/build.log" | head -n 1
node -e "const a=require('./build/Release/eps_native.node'); console.log('backends', a.backends(), 'versions', JSON.stringify(a.versions())); console.log('devices', JSON.stringify(a.devices('cuda')))" \
  2>&1 | tee "$OUT/addon.txt"

run_jest() {  # name file
  local log="$OUT/jest-$1.log"
  npx jest "$2" --verbose > "$log" 2>&1
  local rc=$?
  local line
  line=$(grep -E "^Tests:" "$log" | tail -n 1)
  summary+=("$1: ${line:-no summary} (rc $rc)")
  grep -E "✕" "$log" | head -n 20
  if [ $rc -ne 0 ]; then grep -B2 -A25 "●" "$log" | head -n 150; fi
  # the op tests print their error table at the end
  sed -n '/relative L2 error per case/,/^$/p' "$log" | head -n 80
}

if [ "$what" = all ] || [ "$what" = ops ]; then run_jest ops test/gpu.ops.test.ts; fi
if [ "$what" = all ] || [ "$what" = nccl ]; then
  run_jest nccl test/gpu.nccl.test.ts
  [ "$gpus" -lt 2 ] && summary+=("nccl: two-process part skipped ($gpus GPU)")
fi

if [ "$what" = all ] || [ "$what" = bench ]; then
  # Quick timings, CUDA events around 10 launches after 3 warm-ups, random data. Not the benchmark
  # suite (npm run bench): a check that the kernels are in the expected range.
  cat > "$OUT/quick-bench.js" <<'EOF'
const a = require(process.cwd() + '/build/Release/eps_native.node');
const d = a.openDevice('cuda', 0);
const s = d.createStream();
const rnd = (dtype, shape, seed, std = 0.02) => { const t = d.alloc(dtype, shape); d.op(s, 'fill_random', [t], [seed, std], []); return t; };
async function time(fn, reps = 10) {
  for (let i = 0; i < 3; i++) fn();
  const e0 = d.createEvent(), e1 = d.createEvent();
  s.record(e0); for (let i = 0; i < reps; i++) fn(); s.record(e1);
  await s.synchronize();
  return e1.elapsedSince(e0) / reps;
}
(async () => {
  const rows = [];
  { const n = 8192, A = rnd('bf16', [n, n], 1), W = rnd('bf16', [n, n], 2), C = d.alloc('bf16', [n, n]);
    const ms = await time(() => d.op(s, 'matmul', [C, A, W, null], [], []));
    rows.push(['matmul bf16 8192^3', ms, 2 * n ** 3 / ms / 1e9]); [A, W, C].forEach((t) => t.dispose()); }
  // Attention, causal, Mixtral-like heads: one sequence of T tokens, or B sequences of T / B.
  for (const [T, B] of [[1024, 1], [4096, 1], [8192, 1], [8192, 8]]) {
    const nq = 32, nkv = 8, hd = 128, len = T / B;
    const q = rnd('bf16', [T, nq, hd], 3, 1), k = rnd('bf16', [T, nkv, hd], 4, 1), v = rnd('bf16', [T, nkv, hd], 5, 1);
    const o = d.alloc('bf16', [T, nq, hd]), cu = d.alloc('i32', [B + 1]);
    const cuHost = Array.from({ length: B + 1 }, (_, b) => b * len);
    cu.upload(s, new Uint8Array(Int32Array.from(cuHost).buffer));
    const ms = await time(() => d.op(s, 'attention', [o, q, k, v, cu], [1 / Math.sqrt(hd)], cuHost));
    rows.push([`attention ${B}x${len} 32q/8kv hd128`, ms, 2 * B * len * len * hd * nq / ms / 1e9]);
    [q, k, v, o, cu].forEach((t) => t.dispose());
  }
  // Memory-bound ops at a Mixtral-like layer (T=16384 tokens, H=4096, I=14336, 8 experts, top-2):
  // GB/s counts each input read once and each output written once.
  {
    const T = 16384, H = 4096, I = 14336, E = 8, k = 2;
    const x = rnd('bf16', [T, H], 8, 1), w = rnd('bf16', [H], 9, 1), y = d.alloc('bf16', [T, H]);
    const gu = rnd('bf16', [T * k, 2 * I], 10, 1), act = d.alloc('bf16', [T * k, I]);
    const logits = rnd('f32', [T, E], 11, 1), idx = d.alloc('i32', [T, k]), tw = d.alloc('f32', [T, k]);
    const perm = d.alloc('bf16', [T * k, H]), rowMap = d.alloc('i32', [T, k]), counts = d.alloc('i32', [E]);
    d.op(s, 'router', [idx, tw, logits], [k, 1, 1], []);
    const gb = (bytes, ms) => bytes / ms / 1e6;
    const add = (name, ms, bytes) => rows.push([name, ms, gb(bytes, ms), 'GB/s']);
    add('rmsnorm bf16 [16384,4096]', await time(() => d.op(s, 'rmsnorm', [y, x, w], [1e-5], [])), 2 * T * H * 2);
    add('swiglu bf16 [32768,14336]', await time(() => d.op(s, 'swiglu', [act, gu], [], [])), T * k * 3 * I * 2);
    add('router f32 [16384,8] k=2', await time(() => d.op(s, 'router', [idx, tw, logits], [k, 1, 1], [])), T * E * 4 + T * k * 8);
    add('moe_permute bf16 [16384,4096] k=2', await time(() => d.op(s, 'moe_permute', [perm, rowMap, counts, x, idx], [], [])), (T + T * k) * H * 2);
    add('moe_unpermute bf16 [16384,4096] k=2', await time(() => d.op(s, 'moe_unpermute', [y, perm, rowMap, tw], [0], [])), (T * k + T) * H * 2);
    add('add bf16 [16384,4096]', await time(() => d.op(s, 'add', [y, y, x], [], [])), 3 * T * H * 2);
    [x, w, y, gu, act, logits, idx, tw, perm, rowMap, counts].forEach((t) => t.dispose());
  }
  for (const [E, N, K] of [[80, 3072, 5120], [4, 28672, 4096]]) {
    const w = rnd('bf16', [E, N, K], 6);
    for (const M of [64, 256, 1024, 4096]) {
      const R = E * M, x = rnd('bf16', [R, K], 7, 1), y = d.alloc('bf16', [R, N]);
      const counts = new Array(E).fill(M);
      for (const [kernel, name] of [[0, 'grouped'], [1, 'dense']]) {
        const ms = await time(() => d.op(s, 'expert_matmul', [y, x, w], [kernel], counts), 5);
        rows.push([`expert_matmul ${name} E=${E} N=${N} K=${K} M=${M}`, ms, 2 * R * N * K / ms / 1e9]);
      }
      [x, y].forEach((t) => t.dispose());
    }
    w.dispose();
  }
  for (const [name, ms, rate, unit = 'TFLOP/s'] of rows)
    console.log(`${name.padEnd(56)} ${ms.toFixed(3).padStart(9)} ms ${rate.toFixed(1).padStart(7)} ${unit}`);
})().catch((e) => { console.error(e); process.exit(1); });
EOF
  if timeout 300 node "$OUT/quick-bench.js" > "$OUT/quick-bench.txt" 2>&1; then
    summary+=("quick bench: ok")
  else
    summary+=("quick bench: failed (rc $?)")
  fi
  cat "$OUT/quick-bench.txt"
fi

echo
echo "==== gpu-check summary ($(( $(date +%s) - started )) s, $gpus GPU(s)) ===="
for line in "${summary[@]}"; do echo "  $line"; done
