#!/usr/bin/env bash
# The open questions of issues 11 and 12 that need the GPU, one device call of under 600 s a stage (carry .gpu and
# dist). Each stage prints its table last; times are seconds since the call began.
#   diag   (~530 s) why the first GEMM after each fused norm runs 3-10x its isolated time in the step (BENCHMARKS.md,
#          session 10): the op tests of what is new (event downloads, the shared rope key, memory counters, the
#          projection switch, partial rope); scripts/gemm-probe.js (the GEMMs alone, after the fused norm, and after
#          the routed experts) under cuBLAS's and cuBLASLt's logs ($OUT/lt-probe.tgz: which kernels run); traced
#          DeepSeek-V2-Lite prefills with event downloads: as is, with the residual add as its own op
#          (EPS_FUSED_RESIDUAL=0), and with the projections through our grouped GEMM (EPS_PROJ_KERNEL=grouped_sm90).
#          Per span, `ahead us` near 0 means the device waited for the host there; `host us` the host's time inside
#          it. Last, while time is left, a short step under the logs ($OUT/lt-step.tgz).
#   ab     (~460 s) event downloads off/on (DeepSeek-V2-Lite), then issue 12's tile band 8 (default) against 16 in a
#          Qwen3-30B-A3B prefill (EPS_GROUPED_SM90_BAND), each alternated twice.
#   golden (~500 s, [N=24]) scripts/gpu-golden-candidates.sh: fixtures whose routing holds in bf16, back as
#          $OUT/fixtures.tgz.
#   attn   (~400 s) the sm_90a attention's schedules at DeepSeek-V2-Lite's shape (16 heads, 192/128, 8 x 2K, the
#          shared rope key): whole prefills under each EPS_ATTENTION_SM90_MODE (the default, 7, was tuned at 4K+
#          with 128 heads; 477 us a layer here, 360 TFLOP/s).
# usage: OUT=$OUT bash scripts/gpu-followup.sh diag|ab|golden|attn
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s); R=${OUT:-/tmp/eps-followup}; W=/tmp/eps-followup-work; mkdir -p "$R" "$W"
el() { echo $(( $(date +%s) - T0 )); }
source scripts/gpu-env.sh
# diag builds afresh (native code changed since any earlier call); the others reuse a warm machine's build
if [ "${1:-diag}" = diag ] || [ ! -f build/Release/eps_native.node ]; then gpu_build "$W" "$T0"; fi
traced() { # traced NAME [ENV=VALUE ...]: a traced DeepSeek-V2-Lite prefill, its summary's key lines
  local name=$1; shift
  echo "== traced prefill: $name ($(el) s)"
  env "$@" EPS_EVENT_DOWNLOADS=1 OUT=$W/tr-$name TRACE=1 NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=3 timeout 85 \
    bash scripts/gpu-prefill.sh deepseek-v2-lite > "$R/trace-run-$name.txt" 2>&1
  cp "$W"/tr-$name/*.summary "$R/trace-summary-$name.txt" 2>/dev/null
  grep -E "tok/s|memory" "$R/trace-run-$name.txt" | tail -2
  grep -E "^rank|mla_q|mla_kv|router|o_proj|input_norm|post_norm|ffn|shared|attention\b|between|gap" "$R/trace-summary-$name.txt" | head -24
}
case "${1:-diag}" in
diag)
  timeout 110 npx jest test/gpu.ops.test.ts -t "event downloads|shared rope key|memory counters|projection under|other 128" \
    > "$R/ops.log" 2>&1
  echo "gpu.ops: rc $? ($(el) s)"; grep -E "Tests:|✕" "$R/ops.log" | head -8
  mkdir -p "$W/lt-probe" "$W/lt-step"
  # cuBLASLt's trace names the kernels it launches; cuBLAS's own log, the calls (cublasGemmEx may not go through Lt)
  CUBLASLT_LOG_LEVEL=2 CUBLASLT_LOG_FILE="$W/lt-probe/lt-%i.log" CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG="$W/lt-probe/cublas.log" \
    timeout 60 node scripts/gemm-probe.js > "$R/probe-logged.txt" 2>&1
  tar -C "$W" -czf "$R/lt-probe.tgz" lt-probe
  # timed without the logs (they cost host time per call)
  timeout 60 node scripts/gemm-probe.js 2>&1 | tee "$R/probe.txt"
  # the SM clock, power and throttle reasons every 100 ms through the first traced run (does the GPU slow down there?)
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv -lms 100 > "$R/smi.csv" 2>&1 &
  smi=$!
  traced fused
  kill $smi 2>/dev/null
  echo "clocks.sm over the run (MHz): $(awk -F', ' 'NR > 1 && $2 + 0 > 0 { n++; s += $2; if (!m || $2 + 0 < m) m = $2 + 0 } END { if (n) printf "mean %.0f, min %d, %d samples", s / n, m, n }' "$R/smi.csv")"
  traced unfused EPS_FUSED_RESIDUAL=0
  traced proj EPS_PROJ_KERNEL=grouped_sm90
  if [ "$(el)" -lt 500 ]; then
    echo "== the step's kernels, logged ($(el) s)"
    CUBLASLT_LOG_LEVEL=2 CUBLASLT_LOG_FILE="$W/lt-step/lt-%i.log" CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG="$W/lt-step/cublas.log" \
      OUT=$W/lt NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=1 timeout $((585 - $(el))) bash scripts/gpu-prefill.sh deepseek-v2-lite 2>&1 | grep -E "tok/s"
    tar -C "$W" -czf "$R/lt-step.tgz" lt-step
  fi
  echo "== ($(el) s)"; for n in fused unfused proj; do echo "$n: $(grep -E "tok/s" "$R/trace-run-$n.txt" | tail -1)"; grep -E "mla_q|router_gemm" "$R/trace-summary-$n.txt"; done
  ;;
ab)
  rows=()
  for ev in 0 1 0 1; do
    [ "$(el)" -gt 150 ] && break
    rows+=("events $ev: $(EPS_EVENT_DOWNLOADS=$ev OUT=$W/pf TAG=events$ev NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=8 timeout 45 \
      bash scripts/gpu-prefill.sh deepseek-v2-lite 2>&1 | grep "tok/s" | tail -1)")
  done
  for band in 8 16 8 16; do
    [ "$(el)" -gt 500 ] && break
    rows+=("band $band: $(EPS_GROUPED_SM90_BAND=$band OUT=$W/band TAG=band$band NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=8 timeout 75 \
      bash scripts/gpu-prefill.sh qwen3-30b-a3b 2>&1 | grep "tok/s" | tail -1)")
  done
  echo "== ($(el) s)"; printf '%s\n' "${rows[@]}"
  ;;
golden)
  N=${N:-24} OUT=$R bash scripts/gpu-golden-candidates.sh 2>&1 | tail -25
  ;;
attn)
  rows=()
  for mode in default 0 1 2 5 6 default; do
    [ "$(el)" -gt 500 ] && break
    env=(); [ "$mode" != default ] && env=(EPS_ATTENTION_SM90_MODE=$mode)
    rows+=("mode $mode: $(env "${env[@]}" OUT=$W/attn TAG=mode$mode NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=8 timeout 60 \
      bash scripts/gpu-prefill.sh deepseek-v2-lite 2>&1 | grep "tok/s" | tail -1)")
  done
  echo "== ($(el) s)"; printf '%s\n' "${rows[@]}"
  ;;
*) echo "usage: OUT=... bash scripts/gpu-followup.sh diag|ab|golden|attn" >&2; exit 2 ;;
esac
