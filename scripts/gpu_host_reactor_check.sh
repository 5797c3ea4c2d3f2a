#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (nvidia-h200-x2) in one device call, from the repository root,
# with the folder packed by scripts/gpu_prepare.sh carried (BUILD_DIR=build reuses the
# tree scripts/build.sh made, CUDA on):
#   run(carry=[".device"], command="bash scripts/gpu_host_reactor_check.sh", kind="nvidia-h200-x2")
# Builds nothing. Checks cuda_ipc on the agent's reactor (core/host_target.h,
# core/host_sessions.h: no thread of its own, GPU events polled by a 10 us timerfd):
#   1. the cuda_ipc tests (CudaIpcReactor: 8 peers add no thread and the reactor serves
#      them; CudaIpcLink, CudaIpcAuth, multi-process with peer death, revocation), the
#      guarantees suite over every backend, and the staged suites (vram over tcp/shm);
#   2. the acceptance shape (40 layers x 1,000 scattered 64 KiB blocks) GPU0 -> GPU1,
#      fresh requests and re-posts, against the same-run peer copy;
#   3. small-request latency: one 64 KiB block per request, re-posted, 200 times.
# With BEFORE=<folder holding bin/kvferry and lib/> (an older build packed the same way),
# steps 2 and 3 alternate before/after, two pairs.
# Accepts: no test FAILED; every bench row verified and ratio >= 0.93 (as
# scripts/gpu_session_check.sh). Logs in $OUT (or /tmp/gpu_host_reactor); a table last.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dev="$root/.device"
out="${OUT:-/tmp/gpu_host_reactor}"
mkdir -p "$out"
export KVFERRY_TEST_PEER="$dev/bin/kvferry_test_peer"
export KVFERRY_CLI="$dev/bin/kvferry"

filter='*cuda_ipc*:*CudaIpc*:Backends/Guarantees.*:StagedConnection.*:StagedVramRegistration.*:Paths/StagedVram.*'
echo "== tests ($(date +%T), limit 300s): $filter"
LD_LIBRARY_PATH="$dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout --kill-after=5 300 \
  "$dev/bin/kvferry_tests" --gtest_color=no --gtest_filter="$filter" >"$out/tests.log" 2>&1
echo "   rc=$? -> $out/tests.log"

shape=(--device 0 --peer-device 1 --layers 40 --blocks 1000 --block-size 64KiB --pattern scattered --verify --json
       --iterations 10 --warmup 2 --ceiling-reps 3 --param cuda_ipc.copy=kernel --small-round-trips 0)
small=(--device 0 --peer-device 1 --layers 1 --blocks 1 --block-size 64KiB --verify --json --iterations 200
       --warmup 20 --ceiling-reps 3 --repost --small-round-trips 0)
builds=(after)
pairs=1
[[ -n "${BEFORE:-}" ]] && builds=(before after) && pairs=2
for ((p = 1; p <= pairs; p++)); do
  for which in "${builds[@]}"; do
    dir="$dev"
    [[ $which == before ]] && dir="$BEFORE"
    for c in fresh repost small; do
      args=("${shape[@]}")
      [[ $c == repost ]] && args+=(--repost)
      [[ $c == small ]] && args=("${small[@]}")
      echo "== ${which}_${c}_$p ($(date +%T), limit 110s)"
      LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout --kill-after=5 110 \
        "$dir/bin/kvferry" bench --mem vram --backend cuda_ipc "${args[@]}" >"$out/${which}_${c}_$p.log" 2>&1
      echo "   rc=$? -> $out/${which}_${c}_$p.log"
    done
  done
done

echo
echo "================ summary ($(date -u +%F) nvidia-h200-x2, cuda_ipc on the agent's reactor) ================"
grep -E "^\[==========\]|^\[  PASSED  \] [0-9]|^\[  (FAILED|SKIPPED) +\] [0-9]+ test|^\[  FAILED  \] [A-Z]" \
  "$out/tests.log" | head -n 20
grep -E "^\[ +(OK|FAILED|SKIPPED) +\] CudaIpcReactor" "$out/tests.log"
printf "%-7s %-7s %-2s %-6s %10s %10s %12s %8s %9s\n" build case n op median_ms GB/s peer_GB/s ratio verified
for ((p = 1; p <= pairs; p++)); do
  for which in "${builds[@]}"; do
    for c in fresh repost small; do
      W="$which" C="$c" P="$p" python3 -c '
import json, os, sys
rows = 0
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    ok = "PASS" if r["ratio"] >= 0.93 and r["verified"] in (True, "yes") else "FAIL"
    if os.environ["C"] == "small":
        ok = "(latency)"
    rows += 1
    print("%-7s %-7s %-2s %-6s %10.3f %10.1f %12.1f %8.3f %9s  %s" % (os.environ["W"], os.environ["C"], os.environ["P"],
          r["op"], r["median_ms"], r["gbps"], r["ceiling_gbps"], r["ratio"], r["verified"], ok))
sys.exit(0 if rows else 1)' \
        <"$out/${which}_${c}_$p.log" 2>/dev/null || echo "$which $c $p: no result (see $out/${which}_${c}_$p.log)"
    done
  done
done
echo "accepts: no FAILED test (CudaIpcReactor OK, not SKIPPED); fresh/repost rows verified, ratio >= 0.93;"
echo "small: median_ms per 64 KiB request (with BEFORE: after within the before runs' spread)"
