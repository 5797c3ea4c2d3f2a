#!/usr/bin/env bash
# One command from a fresh clone to a tested build: installs what is missing, builds with
# warnings as errors, and runs every test (unit, conformance, multi-process, package).
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
tested=$SECONDS
# The Python package (pip install into BUILD_DIR/pyenv, reusing this build's library) and pytest.
py_rc=0
bash "$ROOT/tests/python/run.sh" "$BUILD_DIR" || py_rc=$?
echo "test.sh: build $((built - start)) s, tests $((tested - built)) s, python $((SECONDS - tested)) s," \
  "ctest exit $rc, pytest exit $py_rc" >&2
[[ $rc -ne 0 ]] && exit "$rc"
exit "$py_rc"
