#!/usr/bin/env bash
# Issue 11's DeepSeek-V2-Lite measurements in one device call (no other script needed; carry .gpu and dist), each
# phase started only while its time is left before LIMIT (default 540 s), most needed first:
#   1. the addon build;
#   2. the op tests of what changed for it on the CPU only (copy_cols, expert_matmul, attention with kShared) and the golden fixtures
#      (test/gpu.golden.test.ts: every fixture, and the DeepSeek ones with the shared expert in the grouped GEMM);
#   3. a traced prefill (where the step goes, with the spans inside qkv_proj and the router);
#   4. untraced prefills with the shared expert on cuBLAS (the default) and through the grouped GEMM
#      (EPS_MLP_KERNEL=grouped_sm90), in alternation, then transformers on the same load.
# usage: OUT=... [LIMIT=s] [PRESET=deepseek-v2-lite] [LOAD=8x2048] bash scripts/gpu-deepseek.sh
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s)
LIMIT=${LIMIT:-540}
R=${OUT:-/tmp/eps-deepseek-results}
W=/tmp/eps-deepseek
PRESET=${PRESET:-deepseek-v2-lite}
LOAD=${LOAD:-8x2048}
rm -rf "$W"; mkdir -p "$W" "$R"
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( LIMIT - $(elapsed) )); }
# phase NAME SECONDS: whether a phase that needs SECONDS still fits (says so when it does not)
phase() { if [ "$(left)" -ge "$2" ]; then echo "== $1 ($(elapsed) s)"; else echo "== $1: skipped, $(left) s left"; return 1; fi; }
source scripts/gpu-env.sh
gpu_build "$W" "$T0"
if phase "op tests and golden fixtures" 150; then
  timeout 120 npx jest test/gpu.ops.test.ts -t "copy_cols|expert_matmul|shared rope key|attention MLA" > "$R/ops.log" 2>&1; echo "gpu.ops: rc $?"
  grep -E "Tests:|✕" "$R/ops.log" | head -8
  EPS_GOLDEN_REPORT="$R/golden.txt" timeout 120 npx jest test/gpu.golden.test.ts > "$R/golden.log" 2>&1; echo "gpu.golden: rc $?"
  grep -E "Tests:|✕" "$R/golden.log" | head -8; cat "$R/golden.txt" 2>/dev/null
fi
if phase "traced prefill" 90; then
  OUT=$W/tr TRACE=1 NO_TORCH=1 LOAD=$LOAD LOAD_REPEAT=3 timeout 85 bash scripts/gpu-prefill.sh "$PRESET" > "$R/trace-run.txt" 2>&1
  cp "$W"/tr/*.summary "$R/trace-summary.txt" 2>/dev/null && head -45 "$R/trace-summary.txt"
fi
rows=()
for round in 1 2; do
  for shared in cublas grouped_sm90; do
    phase "prefill, shared expert on $shared (round $round)" 45 || continue
    v=; [ "$shared" = grouped_sm90 ] && v=grouped_sm90
    rows+=("$(EPS_MLP_KERNEL=$v OUT=$W/pf TAG=shared-$shared NO_TORCH=1 LOAD=$LOAD LOAD_REPEAT=8 timeout 60 \
      bash scripts/gpu-prefill.sh "$PRESET" 2>&1 | grep "tok/s" | tail -1)")
  done
done
if phase "transformers" 150; then
  rows+=("$(OUT=$W/pf LOAD=$LOAD LOAD_REPEAT=8 timeout 145 bash scripts/gpu-prefill.sh "$PRESET" 2>&1 | grep "tok/s" | tail -1)")
fi
echo "---- $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); $(elapsed) s"
printf '%s\n' "${rows[@]}" | tee "$R/prefill.txt"
