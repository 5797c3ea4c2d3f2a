#!/usr/bin/env bash
# Configures kvferry with Ninja into build/ (RelWithDebInfo) and builds it on every core.
#
#   scripts/build.sh [--werror|--no-werror] [--build-dir DIR] [-- extra cmake configure args]
#
# Warnings are errors (-DKVFERRY_WERROR=ON) with --werror, when CI=true, or with
# KVFERRY_WERROR=ON in the environment; --no-werror turns that off. Without any of these a
# new tree builds without -Werror and an existing tree keeps its setting (no rebuild). Run
# scripts/bootstrap.sh first on a fresh machine (scripts/demo.sh and scripts/test.sh do).
# The library, the tool and the tests are all built (also in a build/ configured
# otherwise before); KVFERRY_BUILD_DIR or --build-dir picks another tree.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${KVFERRY_BUILD_DIR:-$ROOT/build}"
WERROR="${KVFERRY_WERROR:-}"
[[ "${CI:-}" == "true" ]] && WERROR=ON
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --werror) WERROR=ON ;;
    --no-werror) WERROR=OFF ;;
    --build-dir) BUILD_DIR="$2"; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

JOBS="$(nproc 2>/dev/null || echo 2)"

SETTINGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVFERRY_BUILD_TESTS=ON -DKVFERRY_BUILD_CLI=ON)
[[ -n "$WERROR" ]] && SETTINGS+=(-DKVFERRY_WERROR="$WERROR")

GENERATOR=(-G Ninja)
# An existing build tree keeps its generator (CMake refuses to switch it).
[[ -f "$BUILD_DIR/CMakeCache.txt" ]] && GENERATOR=()

cmake -S "$ROOT" -B "$BUILD_DIR" "${GENERATOR[@]}" "${SETTINGS[@]}" "${EXTRA[@]}"
cmake --build "$BUILD_DIR" --parallel "$JOBS"
