#!/bin/bash
# Build, check and time the sm_90a prefill attention kernel against torch SDPA (flash and cuDNN backends) in
# one device call (issue 13).
#   bash scripts/kernels/attention_sm90.sh [sanitize] [vs-torch]
# Writes $OUT/build.log, $OUT/sass.txt.gz, $OUT/check.log, $OUT/ours.json, $OUT/sdpa.txt; the merged table
# (ours, flash, cuDNN, ratios) is printed, then issue 13's acceptance table: ours and torch SDPA in one
# process, timed in alternation (scripts/baselines/attention_interleaved.py, $OUT/interleaved.log).
# vs-torch: only that last table (MODES=-1,3,-1:8 times those variants too: schedule[:head group], -1 = the default).
set -o pipefail
OUT=${OUT:-/tmp/attn-out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1
BIN=/tmp/attn
source scripts/kernels/vs_torch.sh
interleaved() { vs_torch attention_capi.cu attention_sm90.cu /tmp/libattn.so attention_interleaved.py --modes="${MODES:--1}"; }
for a in "$@"; do [ "$a" = vs-torch ] && { interleaved; exit; }; done
nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -I native/cuda \
  native/cuda/bench/attention_sm90_check.cu native/cuda/attention_sm90.cu -o $BIN >"$OUT/build.log" 2>&1 \
  || { cat "$OUT/build.log"; exit 1; }
grep -A2 "attentionSm90Kernel" "$OUT/build.log" | grep -E "registers|spill" | sort | uniq -c | sed 's/^ */ptxas: /'
grep -iE "warning" "$OUT/build.log" | head -5
cuobjdump -sass $BIN > "$OUT/sass.txt" 2>/dev/null
echo "HGMMA in SASS: $(grep -c HGMMA "$OUT/sass.txt"), local memory (LDL/STL): $(grep -cE 'LDL|STL' "$OUT/sass.txt")"
gzip -f "$OUT/sass.txt"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
if [ "${1:-}" = sanitize ]; then
  timeout 60 compute-sanitizer --tool memcheck $BIN --small --no-time > "$OUT/sanitizer.log" 2>&1
  echo "sanitizer rc=$?"; grep -E "ERROR SUMMARY|FAIL|ALL PASS" "$OUT/sanitizer.log"
fi
timeout 100 $BIN --json "$OUT/ours.json" ${MODE:+--mode $MODE} > "$OUT/check.log" 2>&1; echo "check+timing rc=$?"
grep -E "^FAIL|error|^ALL PASS|^FAILED|^device" "$OUT/check.log" | head -30
sed -n '/^case /,$p' "$OUT/check.log"
timeout 120 python3 scripts/baselines/sdpa_attention.py --ours "$OUT/ours.json" --reps 10 --warmup 2 --json "$OUT/sdpa.json" \
  > "$OUT/sdpa.txt" 2> "$OUT/sdpa.err"; echo "sdpa rc=$?"; tail -3 "$OUT/sdpa.err"
sed -n '/^## attention: eps-moe vs torch SDPA/,$p' "$OUT/sdpa.txt"
interleaved
