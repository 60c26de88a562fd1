#!/usr/bin/env bash
# Whole-model prefill on one GPU against transformers, in one device call: for each PRESET[:LAYERS], the
# preset's config (cut to LAYERS layers), `eps-moe launch --random-weights --ranks 1` + `eps-moe prefill`
# of 8 x 2048 tokens, then scripts/baselines/transformers_prefill.py (sdpa, grouped_mm experts) on the
# same config and the same token ids. Carry .gpu (../shared/gpu/bundle.sh) and dist (npm run build).
#
# usage: scripts/gpu-prefill.sh [build] PRESET[:LAYERS][@SCHEDULE] ...
#   e.g. build qwen3-30b-a3b qwen3-30b-a3b@fixed:1:grouped_sm90 deepseek-v2-lite dbrx:8
#   (@SCHEDULE: eps-moe's --moe-schedule; transformers runs once per PRESET[:LAYERS]; PROFILE=1 measures
#   the cost model before an auto launch, so that auto can choose among the kernels)
#   LOAD=BxS: B sequences of S tokens per request (default 8x2048); TAG: a label for the rows (e.g. the
#   attention kernel when EPS_ATTENTION_KERNEL is set for the launch); NO_TORCH=1 skips transformers;
#   TRACE=1 traces the launch's steps (events around each op: not for the headline numbers) and prints
#   where the device time went (scripts/trace-summary.js); LAUNCH_PREFIX: a command the launch runs under (a
#   profiler: scripts/gpu-profile-ops.sh). Each row also gives both sides' model TFLOP/s
#   (src/bench/flops.ts's count for this load), to set beside the GPU's cuBLAS ceiling.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/eps-prefill}
mkdir -p "$OUT"
export EPS_CACHE_DIR=${EPS_CACHE_DIR:-/tmp/eps-prefill-cache}
source scripts/gpu-env.sh
rows=()
t0=$(date +%s)
LOAD=${LOAD:-8x2048}
nseq=${LOAD%x*} seqlen=${LOAD#*x}
for item in "$@"; do
  if [ "$item" = build ]; then
    gpu_build "$OUT" "$t0"
    continue
  fi
  sched=auto; [ "$item" != "${item%%@*}" ] && sched=${item#*@}
  shape=${item%%@*}
  preset=${shape%%:*}
  layers=; [ "$shape" != "$preset" ] && layers=${shape#*:}
  cfg=/tmp/eps-prefill-cfg/$preset${layers:+-$layers}
  mkdir -p "$cfg"
  node -e "const {presetConfig}=require('./dist/model/makeModel'); const {applyOverrides, parseOverride}=require('./dist/model/overrides'); const c=applyOverrides(presetConfig(process.argv[1]), process.argv[2] ? [parseOverride('num_hidden_layers='+process.argv[2])] : []); require('fs').writeFileSync(process.argv[3]+'/config.json', JSON.stringify(c, null, 1)); const V=Math.min(32000, c.vocab_size); const r=[]; for (let b=0;b<+process.argv[4];b++) r.push(Array.from({length:+process.argv[5]},(_, i)=>(i*7919+b*104729)%V)); require('fs').writeFileSync('/tmp/load.json', JSON.stringify({sequences:r}))" "$preset" "$layers" "$cfg" "$nseq" "$seqlen" || continue
  log=$OUT/eps-$preset${layers:+-$layers}-${sched//:/_}-$LOAD${TAG:+-$TAG}
  if [ "$sched" = auto ] && [ -n "${PROFILE:-}" ]; then
    # auto chooses by the cost model of this GPU: measure it first (cached for the launch's rank)
    timeout 300 node bin/eps-moe.js profile --model "$cfg" --backend "${BACKEND:-cuda}" > "$log.profile" 2>&1
    echo "profile $preset: rc $? ($(($(date +%s) - t0)) s): $(tail -1 "$log.profile" | cut -c1-160)"
  fi
  ${LAUNCH_PREFIX:-} node bin/eps-moe.js launch --model "$cfg" --random-weights --ranks 1 --backend "${BACKEND:-cuda}" --port 0 --moe-schedule "$sched" \
    --max-tokens-per-rank 16384 --queue-limit 4096 --log-level warn ${TRACE:+--trace "$log.trace.json"} > "$log.launch" 2> "$log.err" &
  lpid=$!
  for _ in $(seq 1 300); do grep -q '^ready:' "$log.launch" && break; kill -0 $lpid 2>/dev/null || break; sleep 1; done
  addr=$(grep -o 'ready: [^ ]*' "$log.launch" | cut -d' ' -f2)
  eps=-
  if [ -n "$addr" ]; then
    node bin/eps-moe.js prefill --server "$addr" --input /tmp/load.json --concurrency 2 --repeat 4 --timeout-ms 300000 > /dev/null 2>&1
    node bin/eps-moe.js prefill --server "$addr" --input /tmp/load.json --concurrency 2 --repeat "${LOAD_REPEAT:-16}" --timeout-ms 300000 > "$log.txt" 2>&1
    eps=$(grep -o '[0-9.]* tokens/s' "$log.txt" | cut -d' ' -f1)
    # the rank's device memory after the runs: allocations that grow with the steps mean the cache is not reusing
    node bin/eps-moe.js status --server "$addr" > "$log.status" 2>&1
    echo "$preset memory: $(grep -m1 'device memory' "$log.status" | sed 's/^ *device memory: //')"
  else
    tail -5 "$log.err"
  fi
  kill -INT $lpid 2>/dev/null; wait $lpid
  if [ -n "${TRACE:-}" ] && [ -f "$log.trace.json" ]; then
    node scripts/trace-summary.js "$log.trace.json" --top 20 > "$log.summary" 2>&1; echo "trace $preset: where the time went"; cat "$log.summary"
    gzip -f "$log.trace.json"
  fi
  tf=-
  tfjson=$OUT/tf-$preset${layers:+-$layers}-$LOAD.json
  if [ -f "$tfjson" ]; then
    tf=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['tokens_per_s'])" "$tfjson" 2>/dev/null || echo -)
  elif [ -z "${NO_TORCH:-}" ]; then
    timeout 400 python3 scripts/baselines/transformers_prefill.py --config "$cfg" --input /tmp/load.json > "$tfjson" 2> "$OUT/tf-$preset.err"
    tf=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['tokens_per_s'])" "$tfjson" 2>/dev/null || echo -)
    [ "$tf" = - ] && tail -3 "$OUT/tf-$preset.err"
  fi
  ratio=$(python3 -c "import sys; a,b=sys.argv[1:]; print(f'{float(a)/float(b):.2f}x')" "$eps" "$tf" 2>/dev/null || echo -)
  # model FLOPs per token of this load (src/bench/flops.ts: matmuls, causal attention, last-token logits)
  gflop_tok=$(node -e "const {prefillFlops}=require('./dist/bench/flops'); const {loadModelSpec}=require('./dist/model/config'); loadModelSpec(process.argv[1]).then((spec) => { const n=+process.argv[2], S=+process.argv[3]; console.log((prefillFlops(spec, Array(n).fill(S)).total / (n * S) / 1e9).toFixed(3)); })" "$cfg" "$nseq" "$seqlen" 2>/dev/null || echo -)
  tf_rate() { python3 -c "import sys; print(f'{float(sys.argv[1]) * float(sys.argv[2]) / 1e3:.0f}')" "$1" "$gflop_tok" 2>/dev/null || echo -; }
  rows+=("$(printf '%-18s %4s layers %-8s %-26s %-6s eps-moe %9s tok/s (%4s TFLOP/s)  transformers %9s tok/s (%4s TFLOP/s)  %s' "$preset" "${layers:-all}" "$LOAD" "$sched" "${TAG:-}" "$eps" "$(tf_rate "$eps")" "$tf" "$(tf_rate "$tf")" "$ratio")")
  echo "$preset${layers:+:$layers}: done ($(($(date +%s) - t0)) s)"
done
echo "---- $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1); $LOAD tokens per request, 2 in flight"
printf '%s\n' "${rows[@]}"
