#!/usr/bin/env bash
# The EPS benchmarks on a GPU host, in one device call: builds the addon with CUDA, checks the CUDA
# forward against the golden fixtures, then runs the MoE-layer benchmark at the given rank counts and
# the PyTorch expert-parallel baseline at the same shapes. Tables go to $OUT and a summary is printed
# last. Carry .gpu (../shared/gpu/bundle.sh) and dist (npm run build).
#
# usage: scripts/gpu-eps.sh [build] [golden] [moe:W] [torch:W] [cluster:W] ...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/eps-gpu}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export EPS_CUDA=1 CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90} PATH=/usr/local/cuda/bin:$PATH
export EPS_CACHE_DIR=${EPS_CACHE_DIR:-$OUT/cache} PYTHONUNBUFFERED=1
GPU_ENV_NO_BUILD=1 source .gpu/env.sh
summary=()
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t0 )) s"; }

for step in "$@"; do
  case $step in
    build)
      rm -rf build
      if npm run --silent build:native > "$OUT/build.log" 2>&1; then summary+=("build: ok ($(elapsed))"); else tail -30 "$OUT/build.log"; exit 1; fi
      node -e "const a=require('./build/Release/eps_native.node'); console.log(a.backends(), JSON.stringify(a.versions()))" | tee -a "$OUT/build.log" ;;
    golden)
      EPS_GOLDEN_REPORT=$OUT/golden.txt npx jest test/gpu.golden.test.ts > "$OUT/golden.log" 2>&1
      summary+=("golden: $(grep -E '^Tests:' "$OUT/golden.log") ($(elapsed))") ;;
    moe:*)
      w=${step#moe:}
      node bin/eps-moe.js bench moe --ranks "$w" --json "$OUT/moe$w.json" ${TRACE:+--trace "$OUT/trace-moe$w.json"} ${MOE_ARGS:-} > "$OUT/moe$w.txt" 2> "$OUT/moe$w.err"
      summary+=("moe W=$w: rc $? ($(elapsed))"); tail -3 "$OUT/moe$w.err" ;;
    cluster-golden)
      EPS_CLUSTER_REPORT=$OUT/cluster-golden.txt npx jest test/gpu.cluster.test.ts > "$OUT/cluster-golden.log" 2>&1
      summary+=("cluster golden: $(grep -E '^Tests:' "$OUT/cluster-golden.log") ($(elapsed))") ;;
    load:*)
      # load:W:SCHEDULE: a Mixtral-8x7B-shaped cluster with random weights, 8 x 2048 tokens per request
      # (EXPERT_GROUPS=G: its experts in G groups, for schedules such as fixed:2:dense:experts).
      IFS=: read -r _ w sched <<< "$step"
      node -e "const r=[];for(let b=0;b<8;b++)r.push(Array.from({length:2048},(_, i)=>(i*7919+b*104729)%32000));require('fs').writeFileSync('/tmp/load.json',JSON.stringify({sequences:r}))"
      node bin/eps-moe.js launch --preset mixtral-8x7b --random-weights --ranks "$w" --backend cuda --port 0 --moe-schedule "$sched" \
        ${EXPERT_GROUPS:+--expert-groups "$EXPERT_GROUPS"} --max-tokens-per-rank 16384 --queue-limit 4096 --log-level warn > "$OUT/launch.out" 2>> "$OUT/launch.err" &
      lpid=$!
      for _ in $(seq 1 240); do grep -q '^ready:' "$OUT/launch.out" && break; kill -0 $lpid 2>/dev/null || break; sleep 1; done
      addr=$(grep -o 'ready: [^ ]*' "$OUT/launch.out" | cut -d' ' -f2)
      if [ -n "$addr" ]; then
        node bin/eps-moe.js prefill --server "$addr" --input /tmp/load.json --concurrency "$w" --repeat "$w" --timeout-ms 120000 > /dev/null 2>&1
        echo "== load W=$w schedule=$sched (requests of 8 x 2048 tokens)" >> "$OUT/load.txt"
        node bin/eps-moe.js prefill --server "$addr" --input /tmp/load.json --concurrency $((2 * w)) --repeat $((8 * w)) --timeout-ms 120000 >> "$OUT/load.txt" 2>&1
      else
        echo "== load W=$w schedule=$sched: the cluster did not become ready" >> "$OUT/load.txt"; tail -5 "$OUT/launch.err" >> "$OUT/load.txt"
      fi
      kill -INT $lpid 2>/dev/null; wait $lpid
      summary+=("load W=$w $sched: done ($(elapsed))") ;;
    torch:*)
      w=${step#torch:}
      for args in "--hidden 5120 --inter 1536 --experts 160 --topk 6 --shared 3072" "--hidden 4096 --inter 14336 --experts 8 --topk 2" "--hidden 2048 --inter 768 --experts 128 --topk 8"; do
        for t in ${TORCH_TOKENS:-16384}; do
          echo "== $args --tokens-per-rank $t" >> "$OUT/torch$w.txt"
          timeout 120 torchrun --nproc-per-node "$w" scripts/baselines/torch_ep_layer.py $args --tokens-per-rank "$t" --warmup 2 --reps 5 >> "$OUT/torch$w.txt" 2>> "$OUT/torch$w.err"
        done
      done
      summary+=("torch W=$w: done ($(elapsed))") ;;
  esac
done
echo "---- summary"
printf '%s\n' "${summary[@]}"
[ -f "$OUT/golden.txt" ] && cat "$OUT/golden.txt"
[ -f "$OUT/cluster-golden.txt" ] && cat "$OUT/cluster-golden.txt"
[ -f "$OUT/load.txt" ] && cat "$OUT/load.txt"
for f in "$OUT"/moe*.txt; do [ -f "$f" ] && cut -c1-230 "$f"; done
for f in "$OUT"/torch*.txt; do [ -f "$f" ] && grep -E '^==|layer_ms' "$f" | cut -c1-200; done
true
