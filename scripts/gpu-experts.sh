#!/usr/bin/env bash
# Issue 12, item 4, in one device call: builds the addon with CUDA (with `build`), runs
# `eps-moe bench experts --json` (the shapes of src/bench/sizes.ts: Qwen3-30B-A3B and DeepSeek-V2/V3
# gate_up and down, 32..4096 rows per expert, balanced and Zipf), then torch._grouped_mm on the same
# rows (each row's counts) from that JSON, and prints the table (sm90, grouped, dense, torch, ratios) last.
# Carry .gpu (../shared/gpu/bundle.sh) and dist (npm run build).
#
# usage: OUT=... scripts/gpu-experts.sh [build] [bench args, e.g. --reps 5]
#   BENCH_JSON=FILE: skip the bench and use FILE's rows.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/eps-experts}
mkdir -p "$OUT"
source scripts/gpu-env.sh
t0=$(date +%s)
if [ "${1:-}" = build ]; then
  shift
  gpu_build "$OUT" "$t0"
fi
json=${BENCH_JSON:-$OUT/experts.json}
if [ -z "${BENCH_JSON:-}" ]; then
  node bin/eps-moe.js bench experts --backend cuda --json "$json" "$@" > "$OUT/experts.txt" 2> "$OUT/experts.err"
  echo "bench experts: rc $? ($(($(date +%s) - t0)) s)"; tail -3 "$OUT/experts.err"
fi
timeout 540 python3 scripts/baselines/grouped_mm_bench.py --ours "$json" --json "$OUT/torch.json" > "$OUT/torch.txt" 2> "$OUT/torch.err"
echo "torch: rc $? ($(($(date +%s) - t0)) s)"; tail -3 "$OUT/torch.err"
echo "---- $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
sed -n '/^## experts: eps-moe expert_matmul vs torch._grouped_mm/,$p' "$OUT/torch.txt"
true
