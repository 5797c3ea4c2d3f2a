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
echo "test.sh: build $((built - start)) s, tests $((SECONDS - built)) s, ctest exit $rc" >&2
# Sanitizers and fuzzing (KVFERRY_SANITIZERS=0 skips them, e.g. for a quick local run):
# ASan+UBSan and TSan builds of the library and tests (scripts/sanitize.sh), then every
# fuzz target for a few seconds (scripts/fuzz.sh).
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
echo "test.sh: total $((SECONDS - start)) s, exit $rc" >&2
exit "$rc"
