#!/usr/bin/env bash
# Builds the GPU binaries HERE (no GPU needed) and packs what the device machine needs
# into the git-ignored folder .device/ (carried by the device tool; < 60 MiB):
#   .device/bin/{kvferry,kvferry_tests,kvferry_test_peer,kvferry_gpu_probe}   stripped
#   .device/lib/{libkvferry.so*,liburing.so.2,libxxhash.so.0}
#   .device/gpu_check.sh, .device/gpu_requests_check.sh, .device/nccl_compare.py,
#   .device/gpu_ucx_killed_read.sh
# Then, on the device:  run(carry=[".device"], command="bash .device/gpu_check.sh",
#                           kind="nvidia-h200-x2")
# The packing is scripts/gpu_lib.sh's gpu_pack (BUILD_DIR picks the build tree).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/gpu_lib.sh"
gpu_pack "$root/.device" \
  "kvferry kvferry_cli kvferry_tests kvferry_test_peer kvferry_gpu_probe" \
  "tools/kvferry tests/kvferry_tests tests/kvferry_test_peer tests/kvferry_gpu_probe" \
  "$root/scripts/gpu_check.sh" "$root/scripts/gpu_requests_check.sh" "$root/scripts/nccl_compare.py" \
  "$root/scripts/gpu_ucx_killed_read.sh"
