#!/usr/bin/env bash
# session 10 call 4: event downloads' op test, probe (GEMMs alone, and after the fused norm), a traced DeepSeek-V2-Lite
# prefill with host times and event downloads, untraced A/B of event downloads, then golden candidates.
set -u
T0=$(date +%s); R=$OUT; W=/tmp/s10c4; mkdir -p $W
el() { echo $(( $(date +%s) - T0 )); }
source scripts/gpu-env.sh
gpu_build "$W" "$T0"
timeout 90 npx jest test/gpu.ops.test.ts -t "event downloads|shared rope key" > $R/ops.log 2>&1; echo "gpu.ops: rc $?"; grep -E "Tests:|✕" $R/ops.log | head -5
timeout 40 node scripts/gemm-probe.js 2>&1 | tee $R/probe.txt
echo "== traced prefill, event downloads ($(el) s)"
EPS_EVENT_DOWNLOADS=1 OUT=$W/tr TRACE=1 NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=3 timeout 85 bash scripts/gpu-prefill.sh deepseek-v2-lite > $R/trace-run.txt 2>&1
cp $W/tr/*.summary $R/trace-summary.txt 2>/dev/null; head -48 $R/trace-summary.txt
for ev in 0 1 0 1; do
  echo "== EPS_EVENT_DOWNLOADS=$ev ($(el) s)"
  EPS_EVENT_DOWNLOADS=$ev OUT=$W/pf TAG=events$ev NO_TORCH=1 LOAD=8x2048 LOAD_REPEAT=8 timeout 45 bash scripts/gpu-prefill.sh deepseek-v2-lite 2>&1 | grep "tok/s" | tail -1
  [ $(el) -gt 250 ] && break
done
echo "== candidates ($(el) s)"
N=${N:-8} OUT=$R bash scripts/gpu-golden-candidates.sh 2>&1 | tail -25
