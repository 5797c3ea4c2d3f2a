#!/usr/bin/env bash
# Builds the Python package into a virtual environment and runs its tests (scripts/test.sh
# calls this after the C++ build). The module links the C++ build's libkvferry
# (KVFERRY_PREBUILT_BUILD_DIR), so only the bindings compile here.
#
#   tests/python/run.sh BUILD_DIR [pytest args...]
#
# Build dependencies come from PyPI (scikit-build-core, nanobind, numpy, pytest) into
# BUILD_DIR/pyenv; KVFERRY_PYTHON picks the interpreter (default python3, 3.10+).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD_DIR="$(cd "${1:?usage: run.sh BUILD_DIR [pytest args]}" && pwd)"
shift
VENV="$BUILD_DIR/pyenv"
PY="${KVFERRY_PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "scikit-build-core>=0.10" "nanobind>=2.4" numpy pytest
WERROR=()
[[ "${CI:-}" == "true" || "${KVFERRY_WERROR:-}" == "ON" ]] && WERROR=(--config-settings=cmake.define.KVFERRY_WERROR=ON)
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps "$ROOT" \
  --config-settings=cmake.define.KVFERRY_PREBUILT_BUILD_DIR="$BUILD_DIR" \
  --config-settings=build-dir="$BUILD_DIR/python" "${WERROR[@]}"

cd "$ROOT/tests/python"
rc=0
"$VENV/bin/python" -m pytest -p no:cacheprovider -q "$@" || rc=$?
# pytest: 0 all passed, 1 some failed, 5 none collected (a broken suite here), others: errors.
if [[ $rc -eq 5 ]]; then
  echo "tests/python/run.sh: pytest collected no tests" >&2
fi
exit "$rc"
