#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (nvidia-h200-x2) in one device call, from the repository root,
# with the folder packed by scripts/gpu_prepare.sh carried (BUILD_DIR=build reuses the
# tree scripts/build.sh made, CUDA on):
#   run(carry=[".device"], command="bash scripts/gpu_session_check.sh", kind="nvidia-h200-x2")
# Builds nothing. Checks the cuda_ipc backend on the core session layer (PeerSession:
# health, acknowledged notifications, peer loss; RegionTable: the peer's regions):
#   1. every cuda_ipc test (conformance vram cases, notification delivery, strided,
#      in-process and multi-process copies with peer death, the CLI over cuda_ipc) and
#      the core pieces' unit tests;
#   2. the acceptance shape (40 layers x 1,000 scattered 64 KiB blocks) GPU0 -> GPU1,
#      fresh requests and re-posts, write and read, against the same-run peer copy.
# Accepts: no test FAILED; every bench row verified and ratio >= 0.93 (as
# scripts/gpu_requests_check.sh). Logs in $OUT (or /tmp/gpu_session); a table last.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dev="$root/.device"
out="${OUT:-/tmp/gpu_session}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$dev/bin/kvferry_test_peer"
export KVFERRY_CLI="$dev/bin/kvferry"
kv="$dev/bin/kvferry"

echo "== tests ($(date +%T), limit 300s)"
timeout --kill-after=5 300 "$dev/bin/kvferry_tests" --gtest_color=no \
  --gtest_filter='*cuda_ipc*:*CudaIpc*:PeerSession.*:RegionTable.*' >"$out/tests.log" 2>&1
echo "   rc=$? -> $out/tests.log"

shape=(--device 0 --peer-device 1 --layers 40 --blocks 1000 --block-size 64KiB --pattern scattered --verify --json
       --iterations 10 --warmup 2 --ceiling-reps 3 --param cuda_ipc.copy=kernel)
for c in fresh repost; do
  extra=()
  [[ $c == repost ]] && extra=(--repost)
  echo "== bench_$c ($(date +%T), limit 110s)"
  timeout --kill-after=5 110 "$kv" bench --mem vram --backend cuda_ipc "${shape[@]}" "${extra[@]}" \
    >"$out/bench_$c.log" 2>&1
  echo "   rc=$? -> $out/bench_$c.log"
done

echo
echo "================ summary ($(date -u +%F) nvidia-h200-x2, cuda_ipc on the core session layer) ================"
grep -E "^\[==========\]|^\[  PASSED  \] [0-9]|^\[  (FAILED|SKIPPED) +\] [0-9]+ test|^\[  FAILED  \] [A-Z]" \
  "$out/tests.log" | head -n 20
printf "%-8s %-6s %10s %10s %12s %8s %9s\n" case op median_ms GB/s peer_GB/s ratio verified
for c in fresh repost; do
  CASE="$c" python3 -c '
import json, os, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    ok = "PASS" if r["ratio"] >= 0.93 and r["verified"] in (True, "yes") else "FAIL"
    print("%-8s %-6s %10.3f %10.1f %12.1f %8.3f %9s  %s" % (os.environ["CASE"], r["op"], r["median_ms"], r["gbps"],
          r["ceiling_gbps"], r["ratio"], r["verified"], ok))' <"$out/bench_$c.log" 2>/dev/null ||
    echo "$c: no result (see $out/bench_$c.log)"
done
echo "accepts: no FAILED test; every row verified, ratio >= 0.93"
