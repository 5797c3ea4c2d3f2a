#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (nvidia-h200-x2) in one device call, from the repository root,
# with the folder packed by scripts/gpu_prepare.sh carried:
#   run(carry=[".device"], command="bash .device/gpu_requests_check.sh", kind="nvidia-h200-x2")
# Builds nothing. Fresh requests (a new strided request per transfer, as an engine makes
# them) against re-posts of one request, cuda_ipc, 40 layers x 1,000 scattered 64 KiB
# blocks, write and read, GPU0 -> GPU1 and GPU1 -> GPU0; each against the same-run peer
# copy. Acceptance: every ratio >= 0.93. Then the GPU test suites of strided transfers,
# notifications and completion queues. Logs in $OUT (or /tmp/gpu_requests); a table last.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-/tmp/gpu_requests}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$here/bin/kvferry_test_peer"
kv="$here/bin/kvferry"
shape=(--layers 40 --blocks 1000 --block-size 64KiB --pattern scattered --verify --json --iterations 20 --warmup 2
       --ceiling-reps 3 --param cuda_ipc.copy=kernel)
run() {  # name limit args...
  local name="$1" limit="$2"
  shift 2
  echo "== $name ($(date +%T), limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$kv" bench --mem vram --backend cuda_ipc "$@" "${shape[@]}" >"$out/$name.log" 2>&1
  echo "   rc=$? -> $out/$name.log"
}
{ date -u; nvidia-smi; nvidia-smi topo -m; } >"$out/machine.log" 2>&1
run fresh_0to1 110 --device 0 --peer-device 1
run repost_0to1 110 --device 0 --peer-device 1 --repost
run fresh_1to0 110 --device 1 --peer-device 0
run repost_1to0 110 --device 1 --peer-device 0 --repost
# Two requests in flight (the next created and posted while one copies), as an engine
# moving several prompts keeps them; more iterations so the one-deep start weighs little.
run fresh2_0to1 110 --device 0 --peer-device 1 --inflight 2
run repost2_0to1 110 --device 0 --peer-device 1 --repost --inflight 2
run fresh2_1to0 110 --device 1 --peer-device 0 --inflight 2
run repost2_1to0 110 --device 1 --peer-device 0 --repost --inflight 2
echo "== tests"
timeout --kill-after=5 120 "$here/bin/kvferry_tests" --gtest_color=no \
  --gtest_filter='Backends/Strided.*:Backends/NotificationDelivery.*:PieceList.*' >"$out/tests.log" 2>&1
echo "   rc=$?"
grep -E "^\[  (PASSED|FAILED|SKIPPED) +\]" "$out/tests.log" | head -n 20

echo
echo "================ summary ($(date -u +%F) nvidia-h200-x2, cuda_ipc, 40 x 1,000 x 64 KiB scattered) ================"
printf "%-14s %-6s %10s %10s %12s %8s %14s %9s\n" case op median_ms GB/s peer_GB/s ratio create+post_us verified
for c in fresh_0to1 repost_0to1 fresh_1to0 repost_1to0 fresh2_0to1 repost2_0to1 fresh2_1to0 repost2_1to0; do
  CASE="$c" python3 -c '
import json, os, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    ok = "PASS" if r["ratio"] >= 0.93 else "below 0.93"
    print("%-14s %-6s %10.3f %10.1f %12.1f %7.3f %14.1f %9s  %s" % (os.environ["CASE"], r["op"], r["median_ms"],
          r["gbps"], r["ceiling_gbps"], r["ratio"], r.get("create_post_cpu_us", -1), r["verified"], ok))' \
    <"$out/$c.log" 2>/dev/null || echo "$c: no result (see $out/$c.log)"
done
