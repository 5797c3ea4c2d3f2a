#!/usr/bin/env bash
# One command from a fresh clone to a tested build: installs what is missing, builds with
# warnings as errors, and runs every test (unit, conformance, multi-process, package),
# then the suite under ASan+UBSan and TSan, and every fuzz target briefly.
# Exits non-zero on any failure. This is exactly what CI runs (.ci/run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${KVFERRY_BUILD_DIR:-$ROOT/build}"

start=$SECONDS
bash "$ROOT/scripts/bootstrap.sh"
bash "$ROOT/scripts/build.sh" --werror --build-dir "$BUILD_DIR"
built=$SECONDS
rc=0
ctest --test-dir "$BUILD_DIR" --output-on-failure --no-tests=error -j2 --timeout 300 || rc=$?
# The multi-process suite and the failure cases verified so far again over the ucx backend
# (peer killed / stopped over ucx is covered by scripts/netns_test.sh's link cut), on UCX's tcp (loopback
# only) and shared-memory transports (cma for the bytes, tcp for control and peer failure);
# then two hosts in two network namespaces (skips itself where namespaces cannot be made).
if "$BUILD_DIR/tools/kvferry" info 2>/dev/null | grep -q "^ *ucx .*usable"; then
  for tls in tcp sm,tcp; do
    echo "test.sh: multi-process and failure suites over ucx (UCX_TLS=$tls)" >&2
    KVFERRY_TEST_BACKEND=ucx UCX_TLS="$tls" UCX_NET_DEVICES=lo \
      timeout 600 "$BUILD_DIR/tests/kvferry_tests" --gtest_brief=1 \
        --gtest_filter='MultiProcess.*:Failure.FetchFromClosedPortFailsFast' \
        || rc=1
  done
fi
timeout 600 bash "$ROOT/scripts/netns_test.sh" --build-dir "$BUILD_DIR" || rc=1
tested=$SECONDS
# The Python package (pip install into BUILD_DIR/pyenv, reusing this build's library) and pytest.
py_rc=0
bash "$ROOT/tests/python/run.sh" "$BUILD_DIR" || py_rc=$?
echo "test.sh: build $((built - start)) s, tests $((tested - built)) s, python $((SECONDS - tested)) s," \
  "ctest exit $rc, pytest exit $py_rc" >&2
# Sanitizers and fuzzing (KVFERRY_SANITIZERS=0 skips them, e.g. for a quick local run):
# ASan+UBSan and TSan builds of the library and tests, each running the whole suite
# (scripts/sanitize.sh), then every fuzz target for a few seconds (scripts/fuzz.sh).
# CI's time split is measured in docs/reliability.md.
if [[ "${KVFERRY_SANITIZERS:-1}" != 0 ]]; then
  for kind in asan tsan; do
    t=$SECONDS
    bash "$ROOT/scripts/sanitize.sh" "$kind" || rc=1
    echo "test.sh: $kind $((SECONDS - t)) s" >&2
  done
  t=$SECONDS
  bash "$ROOT/scripts/fuzz.sh" "${KVFERRY_FUZZ_SECONDS:-5}" || rc=1
  echo "test.sh: fuzz $((SECONDS - t)) s" >&2
fi
echo "test.sh: total $((SECONDS - start)) s" >&2
[[ $rc -ne 0 ]] && exit "$rc"
exit "$py_rc"
