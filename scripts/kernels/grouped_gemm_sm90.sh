#!/bin/bash
# Build, check and time the sm_90a grouped GEMM against torch._grouped_mm in one device call (issue 12).
#   bash scripts/kernels/grouped_gemm_sm90.sh [sanitize] [vs-torch]
# Writes $OUT/build.log, $OUT/ggc.log, $OUT/loads.txt, $OUT/torch.log; the merged table is printed, then the
# fused SwiGLU timings (SWIGLU lines of ggc.log), then the acceptance table of issue 12: ours and torch in one
# process, timed in alternation (scripts/baselines/grouped_mm_interleaved.py, $OUT/interleaved.log).
# vs-torch: only that last table (CONFIGS=0,3,4 times those configs too; 0 = auto; C:B is config C with tiles in
# bands of B m-tiles; ONLY="tag|tag" keeps the cases whose tag holds one of the texts).
set -o pipefail
OUT=${OUT:-/tmp/ggc-out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
BIN=/tmp/ggc
source scripts/kernels/vs_torch.sh
interleaved() { vs_torch grouped_gemm_capi.cu grouped_gemm_sm90.cu /tmp/libgg.so grouped_mm_interleaved.py --configs="${CONFIGS:-0}" ${ONLY:+--only="$ONLY"}; }
for a in "$@"; do [ "$a" = vs-torch ] && { interleaved; exit; }; done
nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -DWITH_CUBLAS -I native/cuda \
  native/cuda/bench/grouped_gemm_check.cu native/cuda/grouped_gemm_sm90.cu -lcublas -o $BIN >"$OUT/build.log" 2>&1 \
  || { cat "$OUT/build.log"; exit 1; }
awk '/Compiling entry function.*groupedGemmSm90Kernel/ {
    match($0, /KernelILi[0-9]+ELi[0-9]+ELi[0-9]ELb[01]/); k = substr($0, RSTART + 9, RLENGTH - 9); gsub(/ELi|ELb/, ",", k); next }
  k != "" && /spill stores/ { sp = $0; sub(/^ */, "", sp); next }
  k != "" && /Used [0-9]+ registers/ { match($0, /Used [0-9]+ registers/);
    print "ptxas <BN,STAGES,EPI,SWIGLU> <" k ">: " substr($0, RSTART, RLENGTH) ", " sp; k = "" }' "$OUT/build.log"
grep -iE "warning" "$OUT/build.log" | head -5
echo "HGMMA in SASS: $(cuobjdump -sass $BIN | grep -c HGMMA)"
cuobjdump -sass $BIN > "$OUT/sass.txt" 2>/dev/null; gzip -f "$OUT/sass.txt"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
if [ "${1:-}" = sanitize ]; then
  timeout 100 compute-sanitizer --tool memcheck $BIN --no-time --small > "$OUT/sanitizer.log" 2>&1; echo "sanitizer rc=$?"; grep -E "ERROR SUMMARY|FAIL|ALL PASS" "$OUT/sanitizer.log"
fi
timeout 60 $BIN --no-time > "$OUT/cases.log" 2>&1; echo "cases rc=$?"; grep -E "FAIL|error|ALL PASS" "$OUT/cases.log" | head -20
echo "fused swiglu cases: $(grep -c '^  swiglu .*PASS$' "$OUT/cases.log") PASS, $(grep -c '^  swiglu .*FAIL$' "$OUT/cases.log") FAIL"
timeout 200 $BIN --skip-cases --loads "$OUT/loads.txt" 2>&1 > "$OUT/ggc.log"; echo "timing rc=$?"
grep -E "FAIL|error" "$OUT/ggc.log" | head -10
grep -E "^ALL PASS|^FAILED|CEILING" "$OUT/ggc.log"
PYTHONUNBUFFERED=1 timeout 150 python3 scripts/baselines/grouped_mm.py --loads "$OUT/loads.txt" --ours "$OUT/ggc.log" \
  > "$OUT/torch.log" 2>&1; echo "torch rc=$?"
grep -E "error|CEILING" "$OUT/torch.log" | head -8
sed -n '/^shape \/ load/,$p' "$OUT/torch.log"
grep -E "^SWIGLU" "$OUT/ggc.log"
interleaved
