#!/usr/bin/env bash
# Builds the library and its tests with sanitizers and runs the suite under them.
#
#   scripts/sanitize.sh asan   # AddressSanitizer + UndefinedBehaviorSanitizer, build-asan/
#   scripts/sanitize.sh tsan   # ThreadSanitizer, build-tsan/
#
# CUDA and the CLI are left out (no GPU in CI; the tool's own suite runs in the main
# build). Any report fails the run. Extra arguments go to ctest (e.g. -R Failure).
# TSan runs the suites that exercise our threads (core, backends, failure, multi-process);
# the KV-layer and file suites, single-threaded over the same engines, run under ASan only
# (TSAN_SUBSET below), to keep CI within its budget.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIND="${1:?usage: scripts/sanitize.sh asan|tsan [ctest args]}"
shift
case "$KIND" in
  asan) SAN="address,undefined" ;;
  tsan) SAN="thread" ;;
  *) echo "sanitize.sh: unknown kind '$KIND' (asan or tsan)" >&2; exit 2 ;;
esac
BUILD="$ROOT/build-$KIND"
GENERATOR=(-G Ninja)
[[ -f "$BUILD/CMakeCache.txt" ]] && GENERATOR=()
cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVFERRY_SANITIZE="$SAN" \
  -DKVFERRY_ENABLE_CUDA=OFF -DKVFERRY_BUILD_CLI=OFF -DKVFERRY_BUILD_TESTS=ON -DKVFERRY_WERROR=ON >/dev/null
cmake --build "$BUILD" -j"$(nproc 2>/dev/null || echo 2)" --target kvferry_tests kvferry_test_peer

export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/scripts/tsan.supp"
FILTER=()
if [[ "$KIND" == tsan ]]; then
  TSAN_SUBSET='^(StagedConnection|SideChannel|MemoryRegistry|Metadata|Conformance|Failure|MultiProcess|ShmMultiProcess|ShmFailure|ShmSelection|Identity|ConnectionLimits|Cancel|Fault|SelfTransfer|AgentMetadata)'
  FILTER=(-R "$TSAN_SUBSET")
fi
ctest --test-dir "$BUILD" --output-on-failure --no-tests=error -j2 --timeout 600 -E '^package' "${FILTER[@]}" "$@"
