#!/usr/bin/env bash
# The failure guarantees over cuda_ipc, ON THE GPU MACHINE, from the repository root, with
# the binaries packed here by scripts/gpu_prepare.sh (.device/):
#   prepare here:  BUILD_DIR=build bash scripts/gpu_prepare.sh
#   on the device: run(carry=[".device"], command="bash scripts/gpu_guarantees.sh")
# Runs tests/guarantees_test.cc's cuda_ipc cases (GPU memory on both sides; the peer on
# GPU 1 where there are two) with fault injection off and on, ROUNDS times (default 3):
# memory untouched after cancel() or an error returns, done means exact bytes, a peer
# killed mid-read turns every request in flight into kPeerLost within the bound, a
# restarted peer is loaded without disturbing another; the failure suite over cuda_ipc
# (tests/failure_*_test.cc: peer killed, stopped mid-read and mid-write, corrupt metadata,
# garbage on its ports, a request outside registered memory); then the cuda_ipc and staging
# suites once. Builds nothing; logs under $OUT; exit 0 when every case passed.
set -uo pipefail
dev="$(pwd)/.device"
out="${OUT:-/tmp/gpu_guarantees}"
rounds="${ROUNDS:-3}"
mkdir -p "$out"
[[ -x "$dev/bin/kvferry_tests" ]] || { echo "gpu_guarantees: run scripts/gpu_prepare.sh here first" >&2; exit 2; }
export LD_LIBRARY_PATH="$dev/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$dev/bin/kvferry_test_peer"
export KVFERRY_CLI="$dev/bin/kvferry"
tests="$dev/bin/kvferry_tests"
nvidia-smi -L | tee "$out/gpus.txt"
rc=0
for ((r = 1; r <= rounds; ++r)); do
  timeout 300 "$tests" --gtest_brief=1 --gtest_filter='Backends/Guarantees.*cuda_ipc*' >"$out/guarantees_$r.log" 2>&1
  x=$?
  [[ $x -ne 0 ]] && rc=1
  echo "guarantees over cuda_ipc, round $r: exit $x; $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/guarantees_$r.log" | tr '\n' ' ')"
  grep -E "Failure|FAILED  \]|error" "$out/guarantees_$r.log" | head -12
  timeout 400 "$tests" --gtest_brief=1 --gtest_filter='Backends/Failure.*cuda_ipc*' >"$out/failure_$r.log" 2>&1
  x=$?
  [[ $x -ne 0 ]] && rc=1
  echo "failure suite over cuda_ipc, round $r: exit $x; $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/failure_$r.log" | tr '\n' ' ')"
  grep -E "Failure$|FAILED  \]|error|Expected|Which is|actual" "$out/failure_$r.log" | head -20
done
timeout 240 "$tests" --gtest_brief=1 --gtest_filter='*CudaIpc*:*StagedVram*:FaultInjection.*' >"$out/cuda_ipc_suites.log" 2>&1
x=$?
[[ $x -ne 0 ]] && rc=1
echo "cuda_ipc, staging and fault-injection suites: exit $x; $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/cuda_ipc_suites.log" | tr '\n' ' ')"
grep -E "Failure|FAILED  \]" "$out/cuda_ipc_suites.log" | head -12
echo "gpu_guarantees: $([[ $rc -eq 0 ]] && echo OK || echo FAILED)"
exit $rc
