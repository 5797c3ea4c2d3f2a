#!/usr/bin/env bash
# The storage tier on a GPU machine: gds (cuFile) and the staging path for GPU pools, and
# the file backend against the disk's O_DIRECT ceiling. Builds nothing: run it where the
# binaries are (built here, carried there), then record the table it prints last in
# docs/benchmarks.md ("Storage tier").
#
# Usage: scripts/gpu_storage_check.sh --pack BUILD DEST   (here: copy what to carry)
#        scripts/gpu_storage_check.sh [BIN] [OUT]         (there: run and measure)
#   --pack copies kvferry, kvferry_tests, libkvferry and the shared libraries they need
#   that the GPU image lacks (liburing, libxxhash) from the build tree BUILD into DEST,
#   debug info stripped (~6 MiB); DEST should be git-ignored (build-*/ is).
#   BIN  a build tree (BIN/tools/kvferry, BIN/tests/kvferry_tests, BIN/src/libkvferry.so*)
#        or one flat folder holding kvferry, kvferry_tests and the shared libraries they
#        need (libkvferry, liburing, libxxhash: `ldd` says which). Default: build.
#   OUT  where logs go (default: $OUT, else ./gpu-storage-out).
# Environment: KVFERRY_STORAGE_DIR, the directory on the disk to measure (default
# /var/tmp/kvferry-gpu-storage; it is emptied first and removed at the end).
# KVFERRY_GDS_UDEV_STUB=1 (root): cuFile reads the udev properties of the block device
# under a file (ID_FS_USAGE, ID_FS_TYPE) and refuses the file when they are missing, as
# on a VM that runs no udevd (the lent H200 machines: cufile.log says "udev property not
# found: ID_FS_USAGE vda"). This writes the two properties udevd would have recorded into
# /run/udev/data (only when that device has no entry), and says so.
set -uo pipefail

if [[ ${1:-} == --pack ]]; then
  build=${2:?--pack BUILD DEST}
  dest=${3:?--pack BUILD DEST}
  rm -rf "$dest" && mkdir -p "$dest" || exit 1
  cp "$build/tools/kvferry" "$build/tests/kvferry_tests" "$dest/" || exit 1
  cp -L "$build"/src/libkvferry.so.*.* "$dest/" || exit 1
  for lib in liburing.so.2 libxxhash.so.0; do
    path=$(ldd "$build/tools/kvferry" "$build/src"/libkvferry.so.*.* | awk -v l="$lib" '$1 == l {print $3; exit}')
    [[ -n $path ]] && cp -L "$path" "$dest/"
  done
  strip --strip-debug "$dest"/* 2>/dev/null
  du -sh "$dest"
  exit 0
fi

BIN=${1:-build}
LOGS=${2:-${OUT:-gpu-storage-out}}
WORK=${KVFERRY_STORAGE_DIR:-/var/tmp/kvferry-gpu-storage}
mkdir -p "$LOGS"
rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
trap 'rm -rf "$WORK"' EXIT

find_bin() {  # first existing of BIN/sub/name, BIN/name
  for p in "$BIN/$2/$1" "$BIN/$1"; do [[ -x $p ]] && { echo "$p"; return 0; }; done
  echo "gpu_storage_check: $1 not found under $BIN" >&2
  return 1
}
KVFERRY=$(find_bin kvferry tools) || exit 1
TESTS=$(find_bin kvferry_tests tests) || exit 1

# Libraries: ours beside the binaries; cuFile from the CUDA toolkit or from the Python
# wheel nvidia-cufile (PyTorch's dependency); libcuda comes with the driver.
libs="$BIN:$BIN/src:$BIN/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -e $d/libcufile.so.0 ]] && libs="$libs:$d"
done
wheel=$(python3 -c 'import nvidia.cufile as m, os; print(os.path.join(list(m.__path__)[0], "lib"))' 2>/dev/null)
[[ -n $wheel && -e $wheel/libcufile.so.0 ]] && libs="$libs:$wheel"
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export TMPDIR=$WORK

if [[ ${KVFERRY_GDS_UDEV_STUB:-0} == 1 ]]; then
  majmin=$(findmnt -no MAJ:MIN -T "$WORK" | head -1 | tr -d ' ')
  fstype=$(findmnt -no FSTYPE -T "$WORK" | head -1)
  entry=/run/udev/data/b$majmin
  if [[ -n $majmin && ! -e $entry ]]; then
    mkdir -p /run/udev/data && printf 'E:ID_FS_USAGE=filesystem\nE:ID_FS_TYPE=%s\n' "$fstype" >"$entry" &&
      echo "gpu_storage_check: wrote $entry (ID_FS_USAGE=filesystem, ID_FS_TYPE=$fstype) for cuFile" | tee "$LOGS/udev_stub.log"
  fi
fi

{
  echo "== machine"
  date -u
  uname -r
  nvidia-smi -L 2>&1 | head -8
  nproc
  df -hT "$WORK"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo "== libraries kvferry lacks (empty: none)"
  ldd "$KVFERRY" "$TESTS" | grep "not found"
  echo "== kvferry info"
  "$KVFERRY" info
} 2>&1 | tee "$LOGS/machine.log"

echo "== GPU pools: offload / onboard of 40 layers x 256 scattered 64 KiB blocks, gds vs staging"
rm -f "$LOGS/gpu_bench.jsonl"
KVFERRY_GPU_BENCH=1 KVFERRY_GPU_BENCH_OUT="$LOGS/gpu_bench.jsonl" timeout 300 "$TESTS" --gtest_color=no \
  --gtest_filter='GdsBench.*' 2>&1 | tee "$LOGS/gpu_bench.log"
bench_rc=${PIPESTATUS[0]}

echo "== tests (GPU tests skip with the reason where no GPU or cuFile is usable)"
timeout 240 "$TESTS" --gtest_color=no \
  --gtest_filter='GdsProbe.*:Engines/Gds.*:GdsStore.*:Engines/FileBackend.*:Engines/FileFaults.*:EveryArrangement/OffloadStore.*:StoreFaults.*:StoreCrash.*:Planner.*' \
  --gtest_output="xml:$LOGS/gtest.xml" 2>&1 | tee "$LOGS/tests.log" | grep -E '^\[ +(OK|FAILED|SKIPPED) +\]|Skipped|PASSED|FAILED TEST|Failure' 
tests_rc=${PIPESTATUS[0]}

echo "== host pool: kvferry bench --backend file (same shape) against the disk's O_DIRECT ceiling"
timeout 100 "$KVFERRY" bench --backend file --file "$WORK/bench.dat" --block-size 64KiB --layers 40 --blocks 256 \
  --pattern scattered --iterations 10 --warmup 2 --verify 2>&1 | tee "$LOGS/file_bench.log"
file_rc=${PIPESTATUS[0]}

echo "== host pool through the KV store: kvferry offload / onboard (Mistral-Small-3.1 shape, 256 blocks)"
{ timeout 100 "$KVFERRY" offload --store "$WORK/store" --pool-blocks 512 --blocks 256 &&
  timeout 100 "$KVFERRY" onboard --store "$WORK/store" --pool-blocks 512; } 2>&1 | tee "$LOGS/store.log"
store_rc=${PIPESTATUS[0]}

echo
echo "== summary ($(date -u +%F), $(nvidia-smi -L 2>/dev/null | head -1 | cut -d'(' -f1))"
grep -E '^(gds|staging)|FAILED' "$LOGS/gpu_bench.log" || echo "(no GPU measurement: see gpu_bench.log)"
grep -E '^file ' "$LOGS/file_bench.log" || echo "(no file bench: see file_bench.log)"
grep -E '^(offload|onboard|  ceiling|  data)' "$LOGS/store.log" || echo "(no store run: see store.log)"
[[ -e cufile.log ]] && cp cufile.log "$LOGS/" 2>/dev/null
echo "tests exit $tests_rc, gpu bench exit $bench_rc, file bench exit $file_rc, store exit $store_rc (logs in $LOGS)"
[[ $tests_rc -eq 0 && $bench_rc -eq 0 && $file_rc -eq 0 && $store_rc -eq 0 ]]
