#!/usr/bin/env bash
# Builds the GPU binaries HERE (no GPU needed) and packs what the device machine needs
# into the git-ignored folder .device/ (carried by the device tool; < 60 MiB):
#   .device/bin/{kvferry,kvferry_tests,kvferry_test_peer,kvferry_gpu_probe}   stripped
#   .device/lib/{libkvferry.so*,liburing.so.2,libxxhash.so.0}
#   .device/gpu_check.sh, .device/nccl_compare.py
# Then, on the device:  run(carry=[".device"], command="bash .device/gpu_check.sh",
#                           kind="nvidia-h200-x2")
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-gpu}"
out="$root/.device"
cmake -S "$root" -B "$build" -G Ninja -DKVFERRY_WERROR=ON -DKVFERRY_ENABLE_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
ninja -C "$build" -j"${JOBS:-2}" kvferry kvferry_cli kvferry_tests kvferry_test_peer kvferry_gpu_probe
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
for b in tools/kvferry tests/kvferry_tests tests/kvferry_test_peer tests/kvferry_gpu_probe; do
  strip --strip-debug -o "$out/bin/$(basename "$b")" "$build/$b"
done
# Plain files under every name (links may not travel with the carried folder).
for f in "$build"/src/libkvferry.so*; do
  strip --strip-debug -o "$out/lib/$(basename "$f")" "$(readlink -f "$f")"
done
for lib in liburing.so.2 libxxhash.so.0; do
  path="$(ldd "$build/tools/kvferry" | awk -v l="$lib" '$1 == l { print $3 }')"
  [[ -n "$path" ]] && cp -L "$path" "$out/lib/$lib"
done
cp "$root/scripts/gpu_check.sh" "$root/scripts/gpu_requests_check.sh" "$root/scripts/nccl_compare.py" "$out/"
# Anything else the binaries need that a bare Ubuntu 24.04 may lack?
missing="$(LD_LIBRARY_PATH="$out/lib" ldd "$out/bin/kvferry" "$out/bin/kvferry_tests" | grep 'not found' || true)"
[[ -z "$missing" ]] || { echo "unresolved libraries: $missing" >&2; exit 1; }
size_kib="$(du -sk "$out" | cut -f1)"
echo "packed $out: ${size_kib} KiB"
ls -la "$out" "$out/bin" "$out/lib"
if (( size_kib > 60 * 1024 )); then
  echo "too large to carry (limit 60 MiB)" >&2
  exit 1
fi
