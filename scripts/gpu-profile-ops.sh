#!/usr/bin/env bash
# Nsight Compute on the kernels behind one span of a prefill step, in one device call. The preset's config, cut to
# LAYERS layers, runs `launch` + `prefill` (scripts/gpu-prefill.sh) under ncu. ncu profiles the first COUNT kernels
# whose names match KERNELS (a regex), in every process the launcher starts. For each it prints the duration, the DRAM
# and SM throughput, and the achieved occupancy. The default KERNELS are those of a Qwen3 layer's router span (the
# router's GEMM to fp32 logits, then the top-k kernel): 121-183 us of a ~5.7 ms layer on an H100 in sessions 6 and 7
# (BENCHMARKS.md), several times what their work needs. (Session 6's suspect, qk_norm_rope at 634 us, was the
# separate norm and rope passes: 163 us since they are one, session 7.)
# Carry .gpu (../shared/gpu/bundle.sh) and dist (npm run build).
#
# usage: OUT=... [PRESET=qwen3-30b-a3b] [LAYERS=2] [KERNELS='router|gemm|nvjet'] [COUNT=8] [LIMIT=240] bash scripts/gpu-profile-ops.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/eps-profile}
mkdir -p "$OUT"
T0=$(date +%s)
source scripts/gpu-env.sh
[ -f build/Release/eps_native.node ] || gpu_build "$OUT" "$T0"
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
rm -f "$OUT/ncu.csv"
LAUNCH_PREFIX="$NCU --target-processes all -k regex:${KERNELS:-router|gemm|nvjet} -c ${COUNT:-8} --section SpeedOfLight --section Occupancy --csv --log-file $OUT/ncu.csv" \
  OUT=$OUT/pf NO_TORCH=1 LOAD=${LOAD:-8x2048} LOAD_REPEAT=1 timeout "${LIMIT:-240}" bash scripts/gpu-prefill.sh "${PRESET:-qwen3-30b-a3b}:${LAYERS:-2}"
echo "==== ncu ($(( $(date +%s) - T0 )) s): kernel, grid x block, duration, DRAM and SM throughput, achieved occupancy"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys
rows = {}
try:
    lines = [l for l in open(sys.argv[1]) if l.startswith('"')]
except OSError as e:
    sys.exit(f"no ncu output: {e}")
for r in csv.DictReader(lines):
    k = rows.setdefault(r["ID"], {"name": r["Kernel Name"][:60], "shape": f'{r["Grid Size"]} x {r["Block Size"]}'})
    k[r["Metric Name"]] = f'{r["Metric Value"]} {r["Metric Unit"]}'.strip()
for k in rows.values():
    print(f'{k["name"]:<60} {k["shape"]:<24} {k.get("Duration", "-"):>12}  DRAM {k.get("DRAM Throughput", "-"):>8}  '
          f'SM {k.get("Compute (SM) Throughput", "-"):>8}  occupancy {k.get("Achieved Occupancy", "-")}')
PY
