#!/usr/bin/env bash
# Before/after on one GPU, in one device call: the tree here against an earlier one (a tarball of its
# sources with dist/ built, e.g. made with `git archive REV` + `npx tsc`), both built with CUDA on this
# host, measured alternately so that drift of the host hits both alike. Carry .gpu (../shared/gpu/
# bundle.sh), dist and the tarball.
#
# usage: scripts/gpu-compare.sh BASE.tar.gz THIS.tar.gz|. [build] [tests] [bench] [load:PRESET] ...
#   THIS: a tarball like BASE's (a fixed commit, whatever else is in the working tree), or . (this tree)
#   build        both addons with CUDA (in parallel); kept between calls on a warm machine
#   tests        this tree's one-GPU suites: gpu.ops, gpu.golden, gpu.cluster (skips itself on one GPU)
#   bench        `eps-moe bench experts attention`, base, this, base, this
#   load:PRESET  `launch --preset PRESET --random-weights --ranks 1` + `prefill` of 8 x 2048 tokens, base then this
set -uo pipefail
cd "$(dirname "$0")/.."
base_tar=$1
this_tar=$2
shift 2
OUT=${OUT:-/tmp/eps-compare}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export EPS_CUDA=${EPS_CUDA:-1} CMAKE_CUDA_ARCHITECTURES=${CMAKE_CUDA_ARCHITECTURES:-90} PATH=/usr/local/cuda/bin:$PATH
export EPS_CACHE_DIR=${EPS_CACHE_DIR:-/tmp/eps-compare-cache}
GPU_ENV_NO_BUILD=1 source .gpu/env.sh
top=$PWD
here=$top
[ "$this_tar" != . ] && here=$top/.cache/this
base=$top/.cache/base
summary=()
t0=$(date +%s)
elapsed() { echo "$(($(date +%s) - t0)) s"; }
nvidia-smi 2>/dev/null --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"

for step in "$@"; do
  case $step in
    build)
      rm -rf "$base" build && mkdir -p "$base" && tar -C "$base" -xzf "$base_tar" && ln -s "$top/node_modules" "$base/node_modules"
      if [ "$this_tar" != . ]; then
        rm -rf "$here" && mkdir -p "$here" && tar -C "$here" -xzf "$this_tar" && ln -s "$top/node_modules" "$here/node_modules"
      fi
      (cd "$here" && npm run --silent build:native > "$OUT/build-this.log" 2>&1) &
      p1=$!
      (cd "$base" && npm run --silent build:native > "$OUT/build-base.log" 2>&1) &
      p2=$!
      wait $p1; r1=$?; wait $p2; r2=$?
      summary+=("build: this rc $r1, base rc $r2 ($(elapsed))")
      [ $r1 -eq 0 ] && [ $r2 -eq 0 ] || { tail -20 "$OUT/build-this.log" "$OUT/build-base.log"; exit 1; } ;;
    tests)
      for suite in ops golden cluster; do
        (cd "$here" && npx jest "test/gpu.$suite.test.ts") > "$OUT/jest-$suite.log" 2>&1
        summary+=("gpu.$suite: $(grep -E '^Tests:' "$OUT/jest-$suite.log") rc $? ($(elapsed))")
        grep -E "✕|skipped:" "$OUT/jest-$suite.log" | head -10
      done ;;
    bench)
      for round in $(seq 1 "${ROUNDS:-2}"); do
        for tree in base this; do
          dir=$here; [ $tree = base ] && dir=$base
          (cd "$dir" && node bin/eps-moe.js bench experts attention --json "$OUT/bench-$tree-$round.json" > "$OUT/bench-$tree-$round.txt" 2>&1)
          summary+=("bench $tree round $round: rc $? ($(elapsed))")
        done
      done ;;
    load:*)
      preset=${step#load:}
      node -e "const r=[];for(let b=0;b<8;b++)r.push(Array.from({length:2048},(_, i)=>(i*7919+b*104729)%32000));require('fs').writeFileSync('/tmp/load.json',JSON.stringify({sequences:r}))"
      for tree in base this; do
        dir=$here; [ $tree = base ] && dir=$base
        log=$OUT/load-$preset-$tree
        (cd "$dir" && node bin/eps-moe.js launch --preset "$preset" --random-weights --ranks 1 --backend "${BACKEND:-cuda}" --port 0 \
          --max-tokens-per-rank 16384 --queue-limit 4096 --log-level warn > "$log.launch" 2> "$log.err") &
        lpid=$!
        for _ in $(seq 1 300); do grep -q '^ready:' "$log.launch" && break; kill -0 $lpid 2>/dev/null || break; sleep 1; done
        addr=$(grep -o 'ready: [^ ]*' "$log.launch" | cut -d' ' -f2)
        if [ -n "$addr" ]; then
          (cd "$here" && node bin/eps-moe.js prefill --server "$addr" --input /tmp/load.json --concurrency 2 --repeat 4 --timeout-ms 120000) > /dev/null 2>&1
          (cd "$here" && node bin/eps-moe.js prefill --server "$addr" --input /tmp/load.json --concurrency 2 --repeat "${LOAD_REPEAT:-16}" --timeout-ms 120000) > "$log.txt" 2>&1
        else
          echo "the cluster did not become ready" > "$log.txt"; tail -5 "$log.err" >> "$log.txt"
        fi
        pkill -INT -f "eps-moe.js launch" ; wait $lpid
        summary+=("load $preset $tree: done ($(elapsed))")
      done ;;
  esac
done
echo "---- summary"
printf '%s\n' "${summary[@]}"
for f in "$OUT"/load-*.txt; do [ -f "$f" ] && { echo "== $(basename "$f")"; tail -4 "$f"; }; done
ls "$OUT"/bench-this-*.json > /dev/null 2>&1 && node scripts/compare-bench.js "$OUT"/bench-base-*.json -- "$OUT"/bench-this-*.json
true
