#!/usr/bin/env bash
# One command from a fresh clone to a tested build: installs what is missing, builds with
# warnings as errors, and runs every test (unit, conformance, multi-process, package),
# then the suite under ASan+UBSan and TSan, and every fuzz target briefly
# (KVFERRY_SANITIZERS=0 leaves those out, for a quicker local run).
# Exits non-zero on any failure. This is exactly what CI runs (.ci/run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${KVFERRY_BUILD_DIR:-$ROOT/build}"

start=$SECONDS
SANITIZERS="${KVFERRY_SANITIZERS:-1}"
bash "$ROOT/scripts/bootstrap.sh"
# CI builds this tree once, from scratch, with no compiler cache: without debug info, and
# with gtest's header precompiled for the test binary (docs/reliability.md, "CI time").
# Elsewhere the tree keeps scripts/build.sh's settings, and its compiler-cache hits.
CI_BUILD=()
if [[ "${CI:-}" == true ]]; then
  CI_BUILD=(-- -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG" -DCMAKE_CUDA_FLAGS_RELWITHDEBINFO="-O2 -DNDEBUG"
            -DKVFERRY_PRECOMPILE_TEST_HEADER=ON)
fi
bash "$ROOT/scripts/build.sh" --werror --build-dir "$BUILD_DIR" "${CI_BUILD[@]}"
built=$SECONDS
# The sanitizer and fuzz trees build meanwhile, at the lowest CPU priority: the suites
# below mostly wait on peers and timeouts, and take the CPU first when they need it.
if [[ "$SANITIZERS" != 0 ]]; then
  nice -n 19 bash -c 'r=0
    KVFERRY_SANITIZE_BUILD_ONLY=1 bash "$0/scripts/sanitize.sh" asan & a=$!
    KVFERRY_SANITIZE_BUILD_ONLY=1 bash "$0/scripts/sanitize.sh" tsan & t=$!
    wait $a || r=1; wait $t || r=1
    KVFERRY_FUZZ_BUILD_ONLY=1 bash "$0/scripts/fuzz.sh" || r=1
    exit $r' "$ROOT" >"$BUILD_DIR/sanitizer_build.log" 2>&1 &
  san_build_pid=$!
fi
rc=0
ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error -j2 --timeout 300 || rc=$?
# The multi-process suite, the failure suite and the failure guarantees again over the ucx
# backend, on UCX's tcp (loopback only) and shared-memory transports (cma for the bytes, tcp
# for control and peer failure); the two runs wait mostly on timeouts, so they run side by
# side. (The conformance suite covers both in ctest; a cut link is scripts/netns_test.sh's.)
# Then two hosts in two network namespaces (skips itself where namespaces cannot be made).
if "$BUILD_DIR/tools/kvferry" info 2>/dev/null | grep -q "^ *ucx .*usable"; then
  t=$SECONDS
  ucx_filter='MultiProcess.*:Failure.*:Backends/Guarantees.*/ucx_*'
  ucx_filter+='-Failure.CorruptAndTruncatedMetadataAreErrors:Failure.ResealedMetadataMutationsNeverCrash'
  declare -A ucx_pid
  for tls in tcp sm,tcp; do
    KVFERRY_TEST_BACKEND=ucx UCX_TLS="$tls" UCX_NET_DEVICES=lo \
      timeout 600 "$BUILD_DIR/tests/kvferry_tests" --gtest_brief=1 --gtest_filter="$ucx_filter" \
      >"$BUILD_DIR/ucx_suites_${tls/,/_}.log" 2>&1 &
    ucx_pid[$tls]=$!
  done
  for tls in tcp sm,tcp; do
    ucx_rc=0
    wait "${ucx_pid[$tls]}" || ucx_rc=$?
    echo "test.sh: suites over ucx (UCX_TLS=$tls): exit $ucx_rc" >&2
    if [[ $ucx_rc -ne 0 ]]; then
      cat "$BUILD_DIR/ucx_suites_${tls/,/_}.log" >&2
      rc=1
    fi
  done
  echo "test.sh: ucx suites $((SECONDS - t)) s" >&2
fi
timeout 600 bash "$ROOT/scripts/netns_test.sh" --build-dir "$BUILD_DIR" || rc=1
tested=$SECONDS
# The Python package (pip install into BUILD_DIR/pyenv, reusing this build's library) and pytest.
py_rc=0
bash "$ROOT/tests/python/run.sh" "$BUILD_DIR" || py_rc=$?
echo "test.sh: build $((built - start)) s, tests $((tested - built)) s, python $((SECONDS - tested)) s," \
  "ctest exit $rc, pytest exit $py_rc" >&2
# Sanitizers and fuzzing: ASan+UBSan and TSan builds of the library and tests (clang),
# each running the whole suite (scripts/sanitize.sh, which re-runs a test that failed
# only an assertion, once and loudly, and never one with a sanitizer report), side by
# side (the suites wait mostly on timeouts and peers); then every fuzz target for a few
# seconds (scripts/fuzz.sh).
if [[ "$SANITIZERS" != 0 ]]; then
  t=$SECONDS
  san_rc=0
  wait "$san_build_pid" || san_rc=$?
  echo "test.sh: sanitizer and fuzz trees built (exit $san_rc); waited $((SECONDS - t)) s for them" >&2
  if [[ $san_rc -ne 0 ]]; then
    tail -n 100 "$BUILD_DIR/sanitizer_build.log" >&2
    rc=1
  fi
  t=$SECONDS
  declare -A san_pid
  for kind in asan tsan; do
    (TIMEFORMAT="test.sh: $kind cpu user %U s, sys %S s, wall %R s"
     time bash "$ROOT/scripts/sanitize.sh" "$kind") >"$BUILD_DIR/sanitize_$kind.log" 2>&1 &
    san_pid[$kind]=$!
  done
  for kind in asan tsan; do
    san_rc=0
    wait "${san_pid[$kind]}" || san_rc=$?
    grep -h 'RETRIED\|not retried' "$BUILD_DIR/sanitize_$kind.log" >&2 || true
    tail -n 1 "$BUILD_DIR/sanitize_$kind.log" >&2
    echo "test.sh: $kind suite exit $san_rc (log: $BUILD_DIR/sanitize_$kind.log)" >&2
    if [[ $san_rc -ne 0 ]]; then
      tail -n 300 "$BUILD_DIR/sanitize_$kind.log" >&2
      rc=1
    fi
  done
  echo "test.sh: sanitizers $((SECONDS - t)) s" >&2
  t=$SECONDS
  bash "$ROOT/scripts/fuzz.sh" "${KVFERRY_FUZZ_SECONDS:-5}" || rc=1
  echo "test.sh: fuzz $((SECONDS - t)) s" >&2
fi
echo "test.sh: total $((SECONDS - start)) s" >&2
[[ $rc -ne 0 ]] && exit "$rc"
exit "$py_rc"
