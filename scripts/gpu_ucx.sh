#!/usr/bin/env bash
# Runs ON THE GPU MACHINE, from the repository root, with .device/ (scripts/gpu_prepare.sh)
# carried:  run(carry=[".device"], command="bash scripts/gpu_ucx.sh", kind="nvidia-h200")
# Builds nothing. Uses that machine's own libucp (not carried): says whether it moves CUDA
# memory (then the ucx backend claims vram itself), runs the ucx conformance cases and a
# vram bench over ucx. Logs under $OUT; a short table last.
set -uo pipefail
dev="$(pwd)/.device"
out="${OUT:-/tmp/gpu_ucx}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$dev/bin/kvferry_test_peer"
kv="$dev/bin/kvferry"
ldd "$kv" | grep -E "libucp|libuct|libucs" >"$out/ucx_libs.txt"
(command -v ucx_info >/dev/null && ucx_info -v && ucx_info -d | grep -E "Transport|Memory domain") >"$out/ucx_info.txt" 2>&1
timeout 60 "$kv" info >"$out/info.txt" 2>&1
UCX_TLS=tcp,cuda_copy,cuda_ipc timeout 300 "$dev/bin/kvferry_tests" --gtest_filter='Backends/Conformance.*ucx*' \
  >"$out/conformance.txt" 2>&1
conf_rc=$?
UCX_TLS=tcp,cuda_copy,cuda_ipc timeout 200 "$kv" bench --backend ucx --mem vram --peer-mem dram --layers 40 \
  --blocks 256 --iterations 5 --verify >"$out/bench_vram.txt" 2>&1
bench_rc=$?
echo "---- ucx on the GPU machine"
echo "libucp: $(awk '{print $3}' "$out/ucx_libs.txt" | head -1); version: $(grep -m1 Version "$out/ucx_info.txt")"
echo "cuda transports: $(grep -cE 'cuda_copy|cuda_ipc|gdr_copy' "$out/ucx_info.txt")"
echo "kvferry info: $(grep -E '^ *ucx ' "$out/info.txt")"
echo "conformance (rc $conf_rc): $(grep -E 'PASSED|FAILED  \]|SKIPPED  \]' "$out/conformance.txt" | tr '\n' ' ' | cut -c1-400)"
echo "bench --mem vram --backend ucx (rc $bench_rc):"
tail -4 "$out/bench_vram.txt"
