#!/usr/bin/env bash
# Issue 13 in one device call, every phase bounded so that the call ends inside its limit: the addon build;
# scripts/kernels/attention_sm90.sh (every schedule's correctness, timings beside torch SDPA flash and cuDNN);
# whole prefills with the sm_80 and the sm_90a attention kernels (EPS_ATTENTION_KERNEL) for each preset and
# load; a traced prefill (where the step's time goes); test/gpu.ops.test.ts; test/gpu.golden.test.ts (its table);
# then transformers on each preset's first load, while time is left. Short table last; seven files in $OUT.
# Carry .gpu (../shared/gpu/bundle.sh) and dist (npm run build).
#
# usage: OUT=... (where the logs come back) [LIMIT=seconds] [PRESETS="qwen3-30b-a3b deepseek-v2-lite"] [LOADS="8x2048 2x8192"]
#        [KERNELS="sm80 sm90"] [TF_PRESETS="$PRESETS"] [NO_TF=1] [NO_TRACE=1]
#        bash scripts/gpu-attention-prefill.sh
# A phase starts only if the time it needs is left before LIMIT (default 570 s); skipped phases say so.
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s)
LIMIT=${LIMIT:-570}
# Everything is written under /tmp/eps-attention-prefill; the few files worth reading come back in $OUT at the end (the device
# tool returns at most 8 files).
RESULTS=${OUT:-/tmp/eps-attention-prefill-results}
OUT=/tmp/eps-attention-prefill
rm -rf "$OUT"
PRESETS=${PRESETS:-qwen3-30b-a3b}
LOADS=${LOADS:-8x2048 2x8192}
KERNELS=${KERNELS:-sm80 sm90}
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( LIMIT - $(elapsed) )); }
mkdir -p "$OUT/attn" "$OUT/pf" "$OUT/ops"
source scripts/gpu-env.sh
gpu_build "$OUT" "$T0"

OUT=$OUT/attn timeout $(( $(left) < 190 ? $(left) : 190 )) bash scripts/kernels/attention_sm90.sh > "$OUT/attn.txt" 2>&1
echo "attention harness: rc $? ($(elapsed) s)"
pass=0
grep -q "^ALL PASS" "$OUT/attn/check.log" 2>/dev/null && pass=1

prefill() {  # KERNEL LOAD PRESET
  if [ "$1" = sm90 ] && [ $pass = 0 ]; then echo "prefill $*: skipped (the harness did not pass)"; return; fi
  if [ "$(left)" -lt 45 ]; then echo "prefill $*: skipped (time)"; return; fi
  OUT=$OUT/pf EPS_ATTENTION_KERNEL=$1 TAG=$1 NO_TORCH=1 LOAD=$2 timeout 80 bash scripts/gpu-prefill.sh "$3" > "$OUT/pf-$3-$2-$1.txt" 2>&1
  echo "prefill $*: rc $? ($(elapsed) s)"
}
for preset in $PRESETS; do
  for load in $LOADS; do for kernel in $KERNELS; do prefill "$kernel" "$load" "$preset"; done; done
done

# where a step's device time goes with the default kernels (the ops of the first preset and load, traced)
if [ "$(left)" -gt 160 ] && [ -z "${NO_TRACE:-}" ]; then
  OUT=$OUT/pf TRACE=1 TAG=trace NO_TORCH=1 LOAD=${LOADS%% *} timeout 90 bash scripts/gpu-prefill.sh "${PRESETS%% *}" > "$OUT/trace.txt" 2>&1
  echo "traced prefill: rc $? ($(elapsed) s)"
fi
if [ "$(left)" -gt 100 ]; then
  timeout $(( $(left) - 10 )) npx jest test/gpu.ops.test.ts --verbose > "$OUT/ops/jest.log" 2>&1
  echo "gpu.ops: rc $? ($(elapsed) s)"
else
  echo "gpu.ops: skipped (time)"
fi
# the CUDA forward against transformers' logits, every golden fixture (a few seconds), with its per-fixture table
if [ "$(left)" -gt 40 ]; then
  EPS_GOLDEN_REPORT=$OUT/ops/golden.txt timeout 30 npx jest test/gpu.golden.test.ts > "$OUT/ops/golden.log" 2>&1
  echo "gpu.golden: rc $? ($(elapsed) s)"
fi
first_load=${LOADS%% *}
for preset in ${TF_PRESETS:-$PRESETS}; do
  if [ "$(left)" -gt 70 ] && [ -z "${NO_TF:-}" ]; then
    OUT=$OUT/pf LOAD=$first_load TAG=tf timeout $(( $(left) - 10 )) bash scripts/gpu-prefill.sh "$preset" > "$OUT/pf-tf-$preset.txt" 2>&1
    echo "transformers $preset: rc $? ($(elapsed) s)"
  fi
done

echo "==== attention harness"
grep -hE "^FAIL|^ALL PASS|^FAILED|ptxas|HGMMA|^device" "$OUT/attn.txt" "$OUT/attn/check.log" | head -14
sed -n '/^case /,/^$/p' "$OUT/attn/check.log" | head -40
sed -n '/^## attention: eps-moe vs torch SDPA/,$p' "$OUT/attn/sdpa.txt" 2>/dev/null | grep -v "^- " | head -30
echo "==== gpu.ops"
grep -E "^Tests:" "$OUT/ops/jest.log" 2>/dev/null
grep -E "✕" "$OUT/ops/jest.log" 2>/dev/null | head -12
echo "==== gpu.golden (CUDA bf16 and CPU bf16 against transformers fp32: rel L2, argmax agreement)"
grep -E "^Tests:" "$OUT/ops/golden.log" 2>/dev/null
cat "$OUT/ops/golden.txt" 2>/dev/null
echo "==== where the traced step's time went"
sed -n '/where the time went/,$p' "$OUT/trace.txt" 2>/dev/null | head -26
echo "==== prefill (one GPU)"
for f in "$OUT"/pf-*.txt; do [ -f "$f" ] && grep -E "tok/s" "$f" | tail -1 | cut -c1-190; done
echo "total: $(elapsed) s"
mkdir -p "$RESULTS"
cp "$OUT/build.log" "$OUT/attn/check.log" "$RESULTS/" 2>/dev/null
cp "$OUT/attn/sdpa.txt" "$RESULTS/sdpa.txt" 2>/dev/null
cp "$OUT/ops/jest.log" "$RESULTS/gpu-ops.log" 2>/dev/null
cat "$OUT/ops/golden.txt" "$OUT/ops/golden.log" > "$RESULTS/gpu-golden.txt" 2>/dev/null
cp "$OUT/trace.txt" "$RESULTS/trace.txt" 2>/dev/null
cat "$OUT"/pf-*.txt > "$RESULTS/prefill.txt" 2>/dev/null
true
