#!/usr/bin/env bash
# Issue 13's measurement in one device call: builds the addon with CUDA (with `build`), runs
# `eps-moe bench attention --json` (the cases of src/bench/sizes.ts: GQA 32/8 x 128 at 1K..32K, packed
# batches, head dims 64 and 256, MLA qk 192 / v 128), then torch SDPA (flash and cuDNN backends) on the
# same cases from that JSON, and prints the table (ours, flash, cuDNN, ratios) last. On Hopper the bench
# times each attention kernel (sm80, sm90) too, so the table holds before and after. Carry .gpu
# (../shared/gpu/bundle.sh) and dist (npm run build).
#
# usage: OUT=... scripts/gpu-attention.sh [build] [bench args, e.g. --reps 10]
#   SDPA_ARGS: more arguments for scripts/baselines/sdpa_attention.py (e.g. "--packed nested" or
#   "--backends flash,cudnn,efficient"); BENCH_JSON=FILE: skip the bench and use FILE's rows.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/eps-attention}
mkdir -p "$OUT"
source scripts/gpu-env.sh
t0=$(date +%s)
if [ "${1:-}" = build ]; then
  shift
  gpu_build "$OUT" "$t0"
fi
json=${BENCH_JSON:-$OUT/attention.json}
if [ -z "${BENCH_JSON:-}" ]; then
  node bin/eps-moe.js bench attention --backend cuda --json "$json" "$@" > "$OUT/attention.txt" 2> "$OUT/attention.err"
  echo "bench attention: rc $? ($(($(date +%s) - t0)) s)"; tail -3 "$OUT/attention.err"
fi
timeout 540 python3 scripts/baselines/sdpa_attention.py --ours "$json" --json "$OUT/sdpa.json" ${SDPA_ARGS:-} > "$OUT/sdpa.txt" 2> "$OUT/sdpa.err"
echo "sdpa: rc $? ($(($(date +%s) - t0)) s)"; tail -3 "$OUT/sdpa.err"
echo "---- $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
cat "$OUT/attention.txt" 2>/dev/null
sed -n '/^## attention: eps-moe vs torch SDPA/,$p' "$OUT/sdpa.txt"
true
