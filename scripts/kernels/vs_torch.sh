# Sourced by the kernel scripts: vs_torch SOURCE LIB SCRIPT ARGS... builds the kernel's C entry point
# (native/cuda/bench/SOURCE with the kernel's .cu, LIB) as a shared library for sm_90a, then runs
# scripts/baselines/SCRIPT --lib LIB ARGS... (ours and torch in one process, timed in alternation) into
# $OUT/interleaved.log, bounded by VS_LIMIT seconds, and prints its failures and its table.
vs_torch() {
  local capi=$1 kernel=$2 lib=$3 script=$4
  shift 4
  nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fPIC -shared -I native/cuda \
    "native/cuda/bench/$capi" "native/cuda/$kernel" -o "$lib" >"$OUT/lib-build.log" 2>&1 \
    || { cat "$OUT/lib-build.log"; return 1; }
  (cd scripts/baselines && timeout "${VS_LIMIT:-240}" python3 "$script" --lib "$lib" "$@") > "$OUT/interleaved.log" 2>&1
  echo "interleaved rc=$?"
  grep -E "^FAIL|rror" "$OUT/interleaved.log" | head -5
  # The table comes at the end; a run cut by VS_LIMIT has only its ROW lines, one per case timed.
  grep -q "TFLOP/s, median of" "$OUT/interleaved.log" && sed -n '/TFLOP\/s, median of/,$p' "$OUT/interleaved.log" \
    || grep "^ROW " "$OUT/interleaved.log"
}
