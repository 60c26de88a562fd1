#!/usr/bin/env bash
# One device call per suite, ours beside torch on the same cases: builds the addon with CUDA (with `build`),
# runs `eps-moe bench SUITE --json`, then the suite's torch baseline on the rows of that JSON, and prints the
# merged table last. Carry .gpu (../shared/gpu/bundle.sh) and dist (npm run build).
#   attention (issue 13): scripts/baselines/sdpa_attention.py, torch SDPA's flash and cuDNN backends; on Hopper
#             the bench times each attention kernel (sm80, sm90) too, so the table holds before and after.
#   experts (issue 12, item 4): scripts/baselines/grouped_mm_bench.py, torch._grouped_mm on each row's
#             counts, beside our three expert_matmul kernels.
#
# usage: OUT=... scripts/gpu-vs-torch.sh attention|experts [build] [bench args, e.g. --reps 10]
#   TORCH_ARGS: more arguments for the baseline (e.g. "--packed nested" or "--backends flash,cudnn,efficient"
#   for attention); BENCH_JSON=FILE: skip the bench and use FILE's rows.
set -uo pipefail
cd "$(dirname "$0")/.."
suite=${1:-}
case "$suite" in
  attention) baseline=scripts/baselines/sdpa_attention.py; title='^## attention: eps-moe vs torch SDPA' ;;
  experts) baseline=scripts/baselines/grouped_mm_bench.py; title='^## experts: eps-moe expert_matmul vs torch._grouped_mm' ;;
  *) echo "usage: scripts/gpu-vs-torch.sh attention|experts [build] [bench args]" >&2; exit 2 ;;
esac
shift
OUT=${OUT:-/tmp/eps-$suite}
mkdir -p "$OUT"
source scripts/gpu-env.sh
t0=$(date +%s)
if [ "${1:-}" = build ]; then
  shift
  gpu_build "$OUT" "$t0"
fi
json=${BENCH_JSON:-$OUT/$suite.json}
if [ -z "${BENCH_JSON:-}" ]; then
  node bin/eps-moe.js bench "$suite" --backend cuda --json "$json" "$@" > "$OUT/$suite.txt" 2> "$OUT/$suite.err"
  echo "bench $suite: rc $? ($(($(date +%s) - t0)) s)"; tail -3 "$OUT/$suite.err"
fi
timeout 540 python3 "$baseline" --ours "$json" --json "$OUT/torch.json" ${TORCH_ARGS:-} > "$OUT/torch.txt" 2> "$OUT/torch.err"
echo "torch: rc $? ($(($(date +%s) - t0)) s)"; tail -3 "$OUT/torch.err"
echo "---- $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
sed -n "/$title/,\$p" "$OUT/torch.txt"
true
