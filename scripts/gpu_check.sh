#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (nvidia-h200-x2) in one device call, from the repository root,
# with the folder packed by scripts/gpu_prepare.sh carried:
#   run(carry=[".device"], command="bash .device/gpu_check.sh", kind="nvidia-h200-x2")
# Builds nothing. Logs go to $OUT (or /tmp/gpu_check); a short table is printed last.
# Budget: under 9 minutes in all (each step has its own timeout).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$here/bin/kvferry_test_peer"
kv="$here/bin/kvferry"
start=$(date +%s)
step() {  # name timeout command...
  local name="$1" limit="$2"
  shift 2
  local t0=$(date +%s)
  echo "== $name ($(date +%T), limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $(( $(date +%s) - t0 ))s -> $out/$name.log"
  tail -n 15 "$out/$name.log" | sed 's/^/   | /'
  echo "$name rc=$rc" >>"$out/steps.txt"
}

{ date -u; uname -a; nvidia-smi; nvidia-smi topo -m; } >"$out/machine.log" 2>&1
nvidia-smi topo -m 2>&1 | head -n 8
"$kv" info >"$out/info.log" 2>&1; grep -E "cuda_ipc|gds" -A1 "$out/info.log"

step gpu_tests 120 "$here/bin/kvferry_tests" --gtest_filter='Gpu*:*Vram*:*CudaIpc*' --gtest_color=no
common=(bench --mem vram --backend cuda_ipc --device 0 --peer-device 1 --layers 40 --blocks 1000
        --block-size 64KiB --pattern scattered --iterations 8 --warmup 2 --ceiling-reps 3 --verify --json)
step bench_kernel 100 "$kv" "${common[@]}" --param cuda_ipc.copy=kernel
step bench_batch 100 "$kv" "${common[@]}" --param cuda_ipc.copy=batch
step nccl 120 python3 "$here/nccl_compare.py" --layers 40 --blocks 1000 --block-bytes 65536 --iters 1

echo
echo "================ summary ($(( $(date +%s) - start ))s, $(date -u +%F) nvidia-h200-x2) ================"
grep -E "^\[==========\]|^\[  PASSED  \] [0-9]|^\[  (FAILED|SKIPPED) +\] [0-9]+ test|^\[  FAILED  \] [A-Z]" "$out/gpu_tests.log" | sed 's/^/tests: /' | head -n 20
printf "%-14s %-6s %10s %10s %12s %8s %9s\n" case op median_ms GB/s ceiling ratio verified
for c in kernel batch; do
  grep -h '^{' "$out/bench_$c.log" 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print("%-14s %-6s %10.3f %10.1f %12.1f %7.1f%% %9s" % ("cuda_ipc/" + r["copy"], r["op"], r["median_ms"],
          r["gbps"], r["ceiling_gbps"], 100 * r["ratio"], r["verified"]))'
done
grep -h "nccl batch_isend_irecv" "$out/nccl.log" || echo "nccl: no result (see $out/nccl.log)"
cat "$out/steps.txt"
echo "acceptance: cuda_ipc write and read >= 90% of the ceiling (ratio column), verified yes"
