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
echo "test.sh: build $((built - start)) s, tests $((SECONDS - built)) s, ctest exit $rc" >&2
exit "$rc"
