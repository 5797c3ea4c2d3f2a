#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/, clang 14 with ASan and UBSan) and runs each for
# SECONDS (default 10), one after another, then prints executions per target and in
# total. Exits non-zero if any target finds a crash (its reproducer is kept under
# build-fuzz/crashes/). Corpora grow in build-fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH="${1:-10}"
BUILD="${KVFERRY_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
CXX_FUZZ="${KVFERRY_FUZZ_CXX:-clang++-14}"
command -v "$CXX_FUZZ" >/dev/null || { echo "fuzz.sh: $CXX_FUZZ not found (scripts/bootstrap.sh installs it)" >&2; exit 1; }

GENERATOR=(-G Ninja)
[[ -f "$BUILD/CMakeCache.txt" ]] && GENERATOR=()
cmake -S "$ROOT/fuzz" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_CXX_COMPILER="$CXX_FUZZ" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc 2>/dev/null || echo 2)"
[[ "${KVFERRY_FUZZ_BUILD_ONLY:-0}" != 0 ]] && exit 0  # scripts/test.sh builds ahead of the runs

TARGETS=(fuzz_metadata fuzz_side_frames fuzz_tcp_frames fuzz_shm_ring fuzz_store_index fuzz_kv_pool)
mkdir -p "$BUILD/crashes"
total=0
failed=()
printf '%-18s %14s %8s\n' target executions crashes
for t in "${TARGETS[@]}"; do
  mkdir -p "$BUILD/corpus/$t"
  log="$BUILD/$t.log"
  rc=0
  "$BUILD/$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="$BUILD/crashes/$t-" "$BUILD/corpus/$t" >"$log" 2>&1 || rc=$?
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  runs="${runs:-0}"
  total=$((total + runs))
  crashes=0
  if [[ $rc -ne 0 ]]; then crashes=1; failed+=("$t"); fi
  printf '%-18s %14s %8s\n' "$t" "$runs" "$crashes"
done
printf '%-18s %14s %8s\n' total "$total" "${#failed[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: crashes in ${failed[*]} (logs: $BUILD/<target>.log, inputs: $BUILD/crashes/)" >&2
  exit 1
fi
