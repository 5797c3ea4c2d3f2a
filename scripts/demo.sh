#!/usr/bin/env bash
# One command from a fresh clone to a running demo: installs what is missing, builds,
# and runs `kvferry demo` (two agents on this host move KV blocks and check every byte).
# Extra arguments go to `kvferry demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${KVFERRY_BUILD_DIR:-$ROOT/build}"

bash "$ROOT/scripts/bootstrap.sh"
bash "$ROOT/scripts/build.sh" --build-dir "$BUILD_DIR"
exec "$BUILD_DIR/tools/kvferry" demo "$@"
