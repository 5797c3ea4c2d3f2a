#!/usr/bin/env bash
# Builds the library and its tests with sanitizers and runs the whole suite under them.
#
#   scripts/sanitize.sh asan   # AddressSanitizer + UndefinedBehaviorSanitizer, build-asan/
#   scripts/sanitize.sh tsan   # ThreadSanitizer, build-tsan/
#
# Built to fit CI's budget on two cores: the library, kvferry_tests and its peer process
# only (no CUDA: no GPU in CI; no CLI: the tool's own suites, which drive the `kvferry`
# binary, skip themselves here and run in the main build), the library as a unity build at
# -O1 and the test files at -O0 (half the CPU time of -O1; KVFERRY_SANITIZE_TEST_FLAGS
# overrides), with line tables (-g1: enough for the reports' stack traces), with clang 14
# (installed by scripts/bootstrap.sh for the fuzzers): it compiles a sanitized test file
# in ~60% of the CPU time GCC 12 takes (docs/reliability.md). Warnings are the main
# build's job (GCC, -Werror); here they are not errors. Any sanitizer report, from any
# process, fails the run and is never retried; a test that failed only an assertion (a
# time bound under the slowdown) runs once more, loudly (the retry rule, below).
# KVFERRY_SANITIZE_CXX picks another compiler (g++ works too; then -Wno-subobject-linkage:
# GCC warns when a class uses a type from an anonymous namespace of a file other than the
# main one, which a unity build makes of every source after the first in a batch).
# Extra arguments go to ctest (e.g. -R Failure). KVFERRY_SANITIZE_JOBS sets ctest's -j;
# KVFERRY_SANITIZE_BUILD_ONLY=1 builds and stops (scripts/test.sh builds both trees first).
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
LAUNCHER=()
command -v ccache >/dev/null 2>&1 && LAUNCHER=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
SAN_CXX="${KVFERRY_SANITIZE_CXX:-clang++-14}"
command -v "$SAN_CXX" >/dev/null || { echo "sanitize.sh: $SAN_CXX not found (scripts/bootstrap.sh installs clang-14)" >&2; exit 1; }
CXXFLAGS_EXTRA=""
[[ "$("$SAN_CXX" --version)" == *clang* ]] || CXXFLAGS_EXTRA="-Wno-subobject-linkage"
cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" "${LAUNCHER[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$SAN_CXX" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_UNITY_BUILD=ON -DCMAKE_UNITY_BUILD_BATCH_SIZE=8 \
  -DCMAKE_CXX_FLAGS="$CXXFLAGS_EXTRA" \
  -DKVFERRY_TEST_CXX_FLAGS="${KVFERRY_SANITIZE_TEST_FLAGS--O0}" -DKVFERRY_SANITIZE="$SAN" -DKVFERRY_ENABLE_CUDA=OFF -DKVFERRY_BUILD_CLI=OFF -DKVFERRY_BUILD_TESTS=ON \
  -DKVFERRY_WERROR=OFF >/dev/null
cmake --build "$BUILD" -j"${KVFERRY_SANITIZE_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}" --target kvferry_tests kvferry_test_peer
[[ "${KVFERRY_SANITIZE_BUILD_ONLY:-0}" != 0 ]] && exit 0

# Every process of the suite (the test binary and the peers it starts) writes its reports
# to a file of its own under $REPORTS (report.<pid>): a report from a peer whose output
# no test reads still fails the run.
REPORTS="$BUILD/sanitizer-reports"
rm -rf "$REPORTS"
mkdir -p "$REPORTS"
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:halt_on_error=1:log_path=$REPORTS/report"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$REPORTS/report"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$ROOT/scripts/tsan.supp:log_path=$REPORTS/report"
# UCX's memory hooks (libucm, loaded with the ucx backend) patch madvise/mmap; glibc calls
# madvise as a thread exits, after TSan has torn down that thread's state, and the hook's
# rwlock then crashes inside TSan's interceptor (SIGSEGV in __tsan::MutexPreReadLock under
# ucm_madvise, seen 2026-11-30). The hooks only serve UCX's registration cache; without
# them UCX registers memory per transfer, which changes no behaviour under test.
if [[ "$KIND" == tsan ]]; then
  export UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_MALLOC_HOOKS=no
fi
EXCLUDE='^package'  # the install-tree test builds the library again: the main build runs it
if [[ "$KIND" == tsan ]]; then
  # Left out under TSan's 5-15x slowdown, and only these: benchmark-like cases whose
  # assertions are speed figures; and ShmFailure.*InFlightWhenThePeerIsKilled*, which
  # kill a peer under 24 copies of 64 MiB each and bound the outcome to peer_timeout + 1 s:
  # TSan's memcpy instrumentation makes one copy slice outlast that bound (measured:
  # 5.0 s), and the 24 reads share one destination by design (TSan reports those
  # overlapping writes to the test's own buffer). Both run in the main and ASan builds.
  # The same holds for the failure suite's killed and stopped peers over shm (16 copies
  # of 256 MiB into one destination, bounded the same way).
  EXCLUDE="$EXCLUDE|Bench|Throughput|\\.HandshakeCost$|\\.HandshakeCpuCost$|^ShmFailure\\..*InFlightWhenThePeerIsKilled"
  EXCLUDE="$EXCLUDE|^Backends/Failure\\.PeerKilled.*/shm_|^Backends/Failure\\.PeerStopped.*/shm_"
fi

# Prints every file under $REPORTS; fails if any holds a sanitizer report.
check_reports() {
  local f found=0
  for f in "$REPORTS"/report.*; do
    [[ -e "$f" ]] || continue
    if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|WARNING: ThreadSanitizer|runtime error:' "$f"; then
      found=1
      echo "sanitize.sh: $KIND: SANITIZER REPORT in $f (never retried):" >&2
    else
      echo "sanitize.sh: $KIND: sanitizer output, not a report, in $f:" >&2
    fi
    sed -n '1,120p' "$f" >&2
  done
  return "$found"
}

LOG="$BUILD/ctest.log"
rc=0
ctest --test-dir "$BUILD" --output-on-failure --no-tests=error -j"${KVFERRY_SANITIZE_JOBS:-2}" --timeout 600 \
  -E "$EXCLUDE" "$@" 2>&1 | tee "$LOG" || rc=$?
check_reports || exit 1
[[ $rc -eq 0 ]] && exit 0

# The retry rule. Under a sanitizer's 2-15x slowdown a test may miss one of its time
# bounds; such a test (an assertion failed, ctest's "***Failed", and no sanitizer report
# from any process) runs once more, loudly, with its first failure printed. A report, a
# crash ("***Exception"), a timeout, or more than 3 failed tests fail the run at once.
mapfile -t broken < <(sed -n 's/^ *[0-9]*\/[0-9]* Test *#[0-9]*: \([^ ]*\) .*\*\*\*\([A-Za-z]*\).*/\2 \1/p' "$LOG" |
                      grep -v '^Skipped ')
retry=()
for b in "${broken[@]}"; do
  if [[ "$b" != Failed\ * || ${#broken[@]} -gt 3 ]]; then
    echo "sanitize.sh: $KIND: not retried: ${broken[*]}" >&2
    exit 1
  fi
  retry+=("${b#Failed }")
done
[[ ${#retry[@]} -eq 0 ]] && exit "$rc"
for t in "${retry[@]}"; do
  echo "sanitize.sh: $KIND: RETRIED $t, which failed once (first failure):" >&2
  # ctest prints a failed test's output right after its result line.
  awk -v t="$t" '$0 ~ "Test +#[0-9]+: " t " " {p = 1; next} p && /Test +#[0-9]+: |^ +Start +[0-9]+: / {p = 0} p' \
    "$LOG" >"$LOG.first"
  if grep -q 'Failure' "$LOG.first"; then sed -n '/Failure/,$p' "$LOG.first" | head -40 >&2
  else tail -n 20 "$LOG.first" >&2; fi
done
pattern="^($(IFS='|'; echo "${retry[*]}"))\$"  # gtest names: letters, digits, _ . /
rc=0
ctest --test-dir "$BUILD" --output-on-failure --timeout 600 -R "$pattern" 2>&1 | tee -a "$LOG" || rc=$?
check_reports || exit 1
echo "sanitize.sh: $KIND: RETRIED ${#retry[@]} test(s): ${retry[*]}: $([[ $rc -eq 0 ]] && echo passed || echo failed again)" >&2
exit "$rc"
