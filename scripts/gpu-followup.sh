#!/usr/bin/env bash
# The open questions of issues 11 and 12 that need the GPU, in device calls of under 600 s (carry .gpu and dist).
#   OUT=$OUT bash scripts/gpu-followup.sh diag    (~450 s) why the first GEMM after each fused norm runs 3-10x its
#     isolated time in the step (BENCHMARKS.md session 10): the op tests of what is new (event downloads, the shared
#     rope key, memory counters); scripts/gemm-probe.js (the GEMMs alone, and after the fused norm) with cuBLASLt's
#     log (which kernels it launches, $OUT/lt-probe.tgz); a short DeepSeek-V2-Lite launch with the same log (the
#     kernels of the step, $OUT/lt-step.tgz); a traced prefill with event downloads (each span's aheadUs: near 0, the
#     device waited for the host right there; hostUs: a long one means the GPU waited for the host inside it; the
#     router -> permute gap); the same with the residual add as its own op (does the slow GEMM follow the fused
#     norm?); event downloads off/on, twice.
#   OUT=$OUT bash scripts/gpu-followup.sh band    (~400 s) issue 12's tile band: 8 (default) against 16 in a
#     Qwen3-30B-A3B prefill, alternating (EPS_GROUPED_SM90_BAND), transformers once beside them.
#   OUT=$OUT [N=24] bash scripts/gpu-followup.sh golden   (~500 s) scripts/gpu-golden-candidates.sh: fixtures whose
#     routing holds in bf16, back as $OUT/fixtures.tgz.
#   OUT=$OUT bash scripts/gpu-followup.sh attn    (~350 s) the sm_90a attention's schedules at DeepSeek-V2-Lite's
#     shape (16 heads, 192/128, 8 x 2K, the shared rope key): whole prefills under each EPS_ATTENTION_SM90_MODE (the
#     default, 7, was tuned at 4K+ with 128 heads; 477 us a layer here, 360 TFLOP/s).
# Each stage prints its table last; times in seconds since the call began.
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s); R=${OUT:-/tmp/eps-followup}; W=/tmp/eps-followup-work; mkdir -p "$R" "$W"
el() { echo $(( $(date +%s) - T0 )); }
source scripts/gpu-env.sh
# diag builds afresh (native code changed since any earlier call); the others reuse a warm machine's build
[ "${1:-diag}" = diag ] || [ ! -f build/Release/eps_native.node ] && gpu_build "$W" "$T0"
case "${1:-diag}" in
diag)
  timeout 100 npx jest test/gpu.ops.test.ts -t "event downloads|shared rope key|memory counters" > "$R/ops.log" 2>&1
  echo "gpu.ops: rc $? ($(el) s)"; grep -E "Tests:|✕" "$R/ops.log" | head -8
  mkdir -p "$W/lt-probe" "$W/lt-step"
  # cuBLASLt's trace names the kernels it launches; cuBLAS's own log, the calls (cublasGemmEx may not go through Lt)
  CUBLASLT_LOG_LEVEL=2 CUBLASLT_LOG_FILE="$W/lt-probe/lt-%i.log" CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG="$W/lt-probe/cublas.log" \
    timeout 60 node scripts/gemm-probe.js > "$R/probe-logged.txt" 2>&1
  tar -C "$W" -czf "$R/lt-probe.tgz" lt-probe; ls -la "$W/lt-probe" | tail -4
  timeout 60 node scripts/gemm-probe.js 2>&1 | tee "$R/probe.txt"
  echo "== the step's kernels, logged ($(el) s)"
  CUBLASLT_LOG_LEVEL=2 CUBLASLT_LOG_FILE="$W/lt-step/lt-%i.log" CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG="$W/lt-step/cublas.log" OUT=$W/lt NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=1 timeout 80 \
    bash scripts/gpu-prefill.sh deepseek-v2-lite 2>&1 | grep -E "tok/s|memory"
  tar -C "$W" -czf "$R/lt-step.tgz" lt-step
  echo "== traced prefill, event downloads ($(el) s)"
  EPS_EVENT_DOWNLOADS=1 OUT=$W/tr TRACE=1 NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=3 timeout 85 bash scripts/gpu-prefill.sh deepseek-v2-lite > "$R/trace-run.txt" 2>&1
  cp "$W"/tr/*.summary "$R/trace-summary.txt" 2>/dev/null; head -50 "$R/trace-summary.txt"
  echo "== traced prefill, the residual add apart from the norm (EPS_FUSED_RESIDUAL=0) ($(el) s)"
  EPS_FUSED_RESIDUAL=0 EPS_EVENT_DOWNLOADS=1 OUT=$W/tr0 TRACE=1 NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=3 timeout 85 \
    bash scripts/gpu-prefill.sh deepseek-v2-lite > "$R/trace-run-unfused.txt" 2>&1
  cp "$W"/tr0/*.summary "$R/trace-summary-unfused.txt" 2>/dev/null; grep -E "mla_q|router_gemm|o_proj|between" "$R/trace-summary-unfused.txt"
  rows=()
  for ev in 0 1 0 1; do
    [ "$(el)" -gt 500 ] && break
    rows+=("events $ev: $(EPS_EVENT_DOWNLOADS=$ev OUT=$W/pf TAG=events$ev NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=8 timeout 45 \
      bash scripts/gpu-prefill.sh deepseek-v2-lite 2>&1 | grep "tok/s" | tail -1)")
  done
  echo "== ($(el) s)"; printf '%s\n' "${rows[@]}"
  ;;
band)
  rows=()
  for band in 8 16 8 16; do
    [ "$(el)" -gt 330 ] && break
    rows+=("band $band: $(EPS_GROUPED_SM90_BAND=$band OUT=$W/band TAG=band$band NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=8 timeout 70 \
      bash scripts/gpu-prefill.sh qwen3-30b-a3b 2>&1 | grep "tok/s" | tail -1)")
  done
  rows+=("transformers: $(OUT=$W/band LOAD=8x2048 LOAD_REPEAT=8 timeout 200 bash scripts/gpu-prefill.sh qwen3-30b-a3b 2>&1 | grep "tok/s" | tail -1)")
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
*) echo "usage: OUT=... bash scripts/gpu-followup.sh diag|band|golden|attn" >&2; exit 2 ;;
esac
