#!/usr/bin/env bash
# The heterogeneous-TP head kernels on the GPU machine, in one device call.
#
# Here (no GPU needed): build and pack into the git-ignored build-tp-device/ (< 64 MiB):
#   scripts/gpu_tp_kernels.sh prepare
# There (builds nothing; prints a short table last; logs under $OUT):
#   run(carry=["build-tp-device"], command="bash build-tp-device/gpu_tp_kernels.sh",
#       kind="nvidia-h200-x2")
# Steps: the GPU suites of the head kernels and staging slots (GpuHeadCopy*, StagingSlots*,
# KvHeadCopy*, TpMapping*), then kvferry_tp_kernel_bench on GPU 0 and GPU 1 (both layouts,
# 4,096 tokens, medians of 10). Acceptance: gather -> pinned >= 0.95 of the same-run D2H
# copy, scatter <- pinned >= 0.93 of H2D, every case verified.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -f "$here/gpu_lib.sh" ]]; then source "$here/gpu_lib.sh"; else source "$here/../scripts/gpu_lib.sh"; fi

if [[ "${1:-}" == prepare ]]; then
  root="$(cd "$gpu_lib_dir/.." && pwd)"
  set -e
  gpu_pack "$root/build-tp-device" "kvferry kvferry_tests kvferry_test_peer kvferry_tp_kernel_bench" \
    "tests/kvferry_tests tests/kvferry_test_peer tests/kvferry_tp_kernel_bench" "$root/scripts/gpu_tp_kernels.sh"
  exit 0
fi

gpu_env /tmp/gpu_tp_kernels
{ date -u; nvidia-smi; } >"$out/machine.log" 2>&1
echo "== tests ($(date +%T))"
timeout --kill-after=5 180 "$here/bin/kvferry_tests" --gtest_color=no \
  --gtest_filter='GpuHeadCopy*:StagingSlots*:KvHeadCopy*:TpMapping*:HeadCopyChunks*' >"$out/tests.log" 2>&1
echo "   rc=$? -> $out/tests.log"
for d in $(seq 0 $(( (gpus > 2 ? 2 : gpus) - 1 ))); do
  echo "== bench GPU $d ($(date +%T))"
  timeout --kill-after=5 240 "$here/bin/kvferry_tp_kernel_bench" --device "$d" --tokens 4096 --iters 10 --warmup 2 \
    >"$out/bench_gpu$d.txt" 2>&1
  echo "   rc=$? -> $out/bench_gpu$d.txt"
  timeout --kill-after=5 240 "$here/bin/kvferry_tp_kernel_bench" --device "$d" --tokens 4096 --iters 10 --warmup 2 \
    --json >"$out/bench_gpu$d.json" 2>&1
done
echo
echo "================ summary ($(date -u +%F), $(nvidia-smi -L 2>/dev/null | head -1 | cut -c1-40)) ================"
grep -E "^\[==========\]|^\[  PASSED  \] [0-9]|^\[  (FAILED|SKIPPED) +\] [0-9]+ test|^\[  FAILED  \] [A-Z]" \
  "$out/tests.log" | sed 's/^/tests: /' | head -n 20
for f in "$out"/bench_gpu*.txt; do
  echo "-- $(basename "$f")"
  cat "$f"
done
echo "acceptance: gather -> pinned ratio >= 0.95 (ceil d2h), scatter <- pinned >= 0.93 (ceil h2d), verified yes;"
echo "            rows \"scratch\" reach pinned memory through device scratch + copy engine (device_scratch)"
