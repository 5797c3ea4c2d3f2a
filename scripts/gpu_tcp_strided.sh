#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (nvidia-h200-x2) in one device call, from the repository root,
# with the folder packed by scripts/gpu_prepare.sh carried (BUILD_DIR=build, CUDA on):
#   run(carry=[".device"], command="bash scripts/gpu_tcp_strided.sh", kind="nvidia-h200-x2")
# Builds nothing. Checks the tcp backend's strided segment tables (tcp_wire.h, protocol 2)
# where a peer's memory is on a GPU (tcp_vram.cc stages a strided entry's units through
# pinned memory, one copy item per unit):
#   1. the tcp vram tests: the conformance suite's tcp vram cases, the staged vram paths
#      over tcp, the strided suite, the segment table suites;
#   2. `kvferry bench --mem vram --peer-mem vram` over tcp (GPU0 -> GPU1, both sides staged)
#      with 512 B and 64 KiB scattered blocks, verified.
# Accepts: no test FAILED; every bench row "verified" yes. Logs in $OUT (or /tmp/gpu_tcp7).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dev="$root/.device"
out="${OUT:-/tmp/gpu_tcp7}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$dev/bin/kvferry_test_peer"
export KVFERRY_CLI="$dev/bin/kvferry"
kv="$dev/bin/kvferry"

echo "== tests ($(date +%T), limit 240s)"
timeout --kill-after=5 240 "$dev/bin/kvferry_tests" --gtest_color=no \
  --gtest_filter='*tcp_vram*:*tcp_dram_vram*:Paths/StagedVram.*tcp*:*Strided*:Tcp*' >"$out/tests.log" 2>&1
echo "   rc=$? -> $out/tests.log"
grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$out/tests.log" | sort | uniq -c | head -20

for block in 512 64KiB; do
  blocks=256
  [[ $block == 512 ]] && blocks=8192
  echo "== bench $block into a GPU pool ($(date +%T), limit 150s)"
  timeout --kill-after=5 150 "$kv" bench --backend tcp --mem vram --device 0 --peer-mem vram --peer-device 1 --op both \
    --block-size "$block" --blocks "$blocks" --layers 8 --iterations 3 --warmup 1 --small-round-trips 0 --verify \
    >"$out/bench_$block.log" 2>&1
  echo "   rc=$? -> $out/bench_$block.log"
  grep -E "^tcp " "$out/bench_$block.log"
done
