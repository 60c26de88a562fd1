#!/usr/bin/env bash
# Issues 12 and 13's kernel acceptance tables in one device call (needs nvcc and torch, not Node): for the
# grouped GEMM and the attention kernel, the standalone harness's correctness cases (every config or
# schedule, poisoned outputs), then ours against torch in one process, timed in alternation
# (scripts/baselines/grouped_mm_interleaved.py, attention_interleaved.py). The SM clock is sampled once a
# second meanwhile (the tables' ratios hold only under one clock regime, which the alternation gives).
#   OUT=$OUT bash scripts/gpu-kernel-acceptance.sh
# CONFIGS (default 0,5: auto, config 5) and MODES (default -1,7,-1:4,-1:8: the default schedule, pp-split, the
# default with head groups of 4 and 8 query heads) pick the variants timed beside torch; the first of each is what
# the engine runs and what the acceptance count uses. LIMIT (seconds) bounds it.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/kernel-acceptance}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
T0=$(date +%s); LIMIT=${LIMIT:-540}
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,temperature.gpu --format=csv,noheader
nvidia-smi --query-gpu=clocks.sm,power.draw --format=csv,noheader,nounits -lms 1000 > "$OUT/smi.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

# Harness cases: build, then every config / schedule on the correctness cases (no timing).
nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -I native/cuda native/cuda/bench/grouped_gemm_check.cu \
  native/cuda/grouped_gemm_sm90.cu -o /tmp/eps-ggc > "$OUT/ggc-build.log" 2>&1 &
B1=$!
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -I native/cuda native/cuda/bench/attention_sm90_check.cu \
  native/cuda/attention_sm90.cu -o /tmp/eps-attn > "$OUT/attn-build.log" 2>&1 &
B2=$!
wait $B1 $B2
for bin in ggc attn; do
  [ -x /tmp/eps-$bin ] || { echo "$bin: build failed"; tail -5 "$OUT/$bin-build.log"; continue; }
  timeout 90 /tmp/eps-$bin --no-time > "$OUT/$bin-cases.log" 2>&1; echo "$bin cases: rc $? ($(( $(date +%s) - T0 )) s)"
  grep -E "FAIL|error|^ALL PASS" "$OUT/$bin-cases.log" | head -8
done

source scripts/kernels/vs_torch.sh
( OUT=$OUT/grouped VS_LIMIT=$(( $(left) / 2 )); mkdir -p "$OUT"
  vs_torch grouped_gemm_capi.cu grouped_gemm_sm90.cu /tmp/libgg.so grouped_mm_interleaved.py --configs="${CONFIGS:-0,5}" )
echo "grouped table: $(( $(date +%s) - T0 )) s"
( OUT=$OUT/attention VS_LIMIT=$(( $(left) - 10 )); mkdir -p "$OUT"
  vs_torch attention_capi.cu attention_sm90.cu /tmp/libattn.so attention_interleaved.py --modes="${MODES:--1,7,-1:4,-1:8}" )
echo "attention table: $(( $(date +%s) - T0 )) s"
kill $SMI 2>/dev/null
sort -t, -k1 -n "$OUT/smi.csv" | awk -F', *' 'NF >= 2 {c[++n] = $1} END {if (n) print "SM clock (MHz) during the call: min", c[1], "median", c[int(n/2) + 1], "max", c[n], "(" n " samples)"}'
