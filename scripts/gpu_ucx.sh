#!/usr/bin/env bash
# The ucx backend with CUDA memory, ON THE GPU MACHINE (one GPU or more), from the
# repository root, with the binaries packed here by scripts/gpu_prepare.sh (.device/):
#   prepare here:  bash scripts/gpu_prepare.sh
#   on the device: run(carry=[".device"], command="bash scripts/gpu_ucx.sh", kind="nvidia-h200")
# Builds nothing. Uses that machine's own UCX (libucp is not carried) and says:
#   - which libucp the binaries loaded, and whether that UCX reports CUDA memory support
#     (its CUDA transport modules, and UCX's own memory-type query through kvferry);
#   - tests/gpu_ucx_test.cc, each case in its own process: GPU0 vram to the peer's host
#     memory and to the peer's vram (GPU1 where there are two), write and read, poisoned
#     destination, byte comparison, and the route taken: "ucx" (UCX moved CUDA memory
#     itself) or "ucx+staging" (the core's pinned staging), for ucx.data=auto and rma;
#   - the ucx conformance cases (tcp and sm,tcp; vram staged) and UcxLinks.*, 3 rounds
#     (the first failure's status is printed); `kvferry bench --backend ucx --mem vram` across two
#     processes (--peer-mem dram and vram), verified.
# Logs under $OUT; a short table last. Exit 0 when every verified case matched. Every step
# is bounded (600 s at most in all; a few minutes when it works).
set -uo pipefail
dev="$(pwd)/.device"
out="${OUT:-/tmp/gpu_ucx}"
mkdir -p "$out"
[[ -x "$dev/bin/kvferry_tests" ]] || { echo "gpu_ucx: $dev/bin is missing: run scripts/gpu_prepare.sh here first" >&2; exit 2; }
export LD_LIBRARY_PATH="$dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$dev/bin/kvferry_test_peer"
kv="$dev/bin/kvferry"
tests="$dev/bin/kvferry_tests"
rc=0

nvidia-smi -L >"$out/gpus.txt" 2>&1
ldd "$dev/lib/libkvferry.so"* 2>/dev/null | grep -E "libucp|libuct|libucs" | sort -u >"$out/ucx_libs.txt"
ucp="$(awk '/libucp/ {print $3; exit}' "$out/ucx_libs.txt")"
moddir="$(dirname "${ucp:-/nonexistent}")/ucx"
ls "$moddir" >"$out/ucx_modules.txt" 2>&1
(command -v ucx_info >/dev/null && ucx_info -v && ucx_info -d | grep -E "Transport|Memory domain") >"$out/ucx_info.txt" 2>&1
timeout 20 "$kv" info >"$out/info.txt" 2>&1

# Each GPU case in its own process: a crash in one (UCX and CUDA memory) leaves the others.
gpu_lines=()
for c in auto_dram auto_vram rma_dram rma_vram; do
  timeout 75 "$tests" --gtest_filter="Cases/GpuUcx.*/$c" >"$out/gpu_ucx_$c.txt" 2>&1
  r=$?
  [[ $r -ne 0 ]] && rc=1
  while IFS= read -r line; do gpu_lines+=("$line"); done < <(grep "^gpu_ucx: ucx.data" "$out/gpu_ucx_$c.txt")
  grep -q "^gpu_ucx: ucx.data" "$out/gpu_ucx_$c.txt" ||
    gpu_lines+=("gpu_ucx: $c: exit $r, $(grep -E 'SKIPPED|FAILED|Failure|error|Skipped' "$out/gpu_ucx_$c.txt" | head -2 | tr '\n' ' ')")
done
ucx_says="$(grep -m1 "^gpu_ucx: UCX transports" "$out"/gpu_ucx_auto_dram.txt)"

# Three times: the concurrent cases race on the first connects to a peer (UcxLinks.*).
timeout 240 "$tests" --gtest_brief=1 --gtest_repeat=3 --gtest_filter='Backends/Conformance.*ucx*:UcxLinks.*' \
  >"$out/conformance.txt" 2>&1
conf_rc=$?
[[ $conf_rc -ne 0 ]] && rc=1

bench_lines=()
for peer_mem in dram vram; do
  timeout 80 "$kv" bench --backend ucx --mem vram --peer-mem "$peer_mem" --layers 40 --blocks 256 --iterations 5 \
    --warmup 1 --verify >"$out/bench_vram_$peer_mem.txt" 2>&1
  r=$?
  if [[ $r -eq 0 ]]; then
    while IFS= read -r line; do bench_lines+=("peer $peer_mem: $line"); done < <(grep -E "^(write|read) " "$out/bench_vram_$peer_mem.txt")
  else
    bench_lines+=("peer $peer_mem: exit $r: $(tail -1 "$out/bench_vram_$peer_mem.txt")")
    # A peer's vram is reachable over ucx only where UCX moves CUDA memory with put/get.
    [[ "$peer_mem" == dram || "$ucx_says" == *"CUDA memory support: yes; RDMA: yes"* ]] && rc=1
  fi
done

echo "---- ucx on the GPU machine ($(grep -c '^GPU' "$out/gpus.txt") GPU(s))"
echo "libucp loaded: ${ucp:-none}; $(grep -m1 Version "$out/ucx_info.txt" 2>/dev/null || echo 'no ucx_info')"
echo "UCX CUDA modules: $(grep -E 'cuda|gdr' "$out/ucx_modules.txt" | tr '\n' ' ')"
echo "${ucx_says:-gpu_ucx: no answer from UCX (see $out/gpu_ucx_auto_dram.txt)}"
echo "kvferry info: $(grep -E '^ *ucx ' "$out/info.txt")"
printf '%s\n' "${gpu_lines[@]}"
echo "conformance over ucx, tcp and sm,tcp, vram cases staged, and UcxLinks, 3 rounds (exit $conf_rc):"
grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/conformance.txt" | sort | uniq -c | sed 's/^/  /'
grep -E 'first failure|^\[  FAILED  \] [A-Z]' "$out/conformance.txt" | sort -u | head -6 | sed 's/^/  /'
echo "kvferry bench --backend ucx --mem vram (40 x 256 x 64 KiB, verified):"
printf '  %s\n' "${bench_lines[@]}"
echo "gpu_ucx: $([[ $rc -eq 0 ]] && echo OK || echo FAILED) (logs in $out)"
exit "$rc"
