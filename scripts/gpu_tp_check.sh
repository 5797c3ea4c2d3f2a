#!/usr/bin/env bash
# Heterogeneous tensor parallelism on the GPU machine (nvidia-h200-x2), in ONE device call.
#
# Here (no GPU needed): build and pack into the git-ignored build-tp-gpu/ (< 64 MiB):
#   scripts/gpu_tp_check.sh prepare
# There (builds nothing; logs under $OUT; a short table last):
#   run(carry=["build-tp-gpu"], command="bash build-tp-gpu/gpu_tp_check.sh", kind="nvidia-h200-x2")
#
# Steps (Mistral-Small-3.1 geometry: 40 layers, 8 KV heads, dim 128, bf16, 16 tokens/block;
# a 4,096-token prompt; GPU pools, one GPU per process, round robin):
#  1. the GPU suites of the TP pieces (head kernels, staging slots, mapping);
#  2. the head kernels' own bench (gather -> pinned vs D2H, scatter <- pinned vs H2D);
#  3. tp-demo --mem vram 2->1 and 1->2 over device staging (cuda_ipc), host staging (tcp)
#     and direct, every element verified;
#  4. bench --tp 2:1 and 1:2 --mem vram: every path and the naive per-head plan against the
#     same-run peer copy (device staging, direct) and pinned D2H copy (host staging).
# Acceptance: device staging >= 0.8 of the same-run peer copy; speed-up over naive reported;
# kernels: gather >= 0.95 of D2H, scatter >= 0.93 of H2D; verified everywhere.
# TP_CHECK_BUDGET_S (default 560) bounds the whole call; steps that would overrun it are skipped.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [[ "${1:-}" == prepare ]]; then
  root="$(cd "$here/.." && pwd)"
  build="${BUILD_DIR:-$root/build-gpu}"
  pack="$root/build-tp-gpu"
  set -e
  cmake -S "$root" -B "$build" -G Ninja -DKVFERRY_WERROR=ON -DKVFERRY_ENABLE_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
  targets=(kvferry kvferry_cli kvferry_tests kvferry_test_peer)
  ninja -C "$build" -t targets all | grep -q '^kvferry_tp_kernel_bench:' && targets+=(kvferry_tp_kernel_bench)
  ninja -C "$build" -j"${JOBS:-2}" "${targets[@]}"
  rm -rf "$pack"
  mkdir -p "$pack/bin" "$pack/lib"
  for b in tools/kvferry tests/kvferry_tests tests/kvferry_test_peer tests/kvferry_tp_kernel_bench; do
    [[ -f "$build/$b" ]] && strip --strip-debug -o "$pack/bin/$(basename "$b")" "$build/$b"
  done
  for f in "$build"/src/libkvferry.so*; do
    strip --strip-debug -o "$pack/lib/$(basename "$f")" "$(readlink -f "$f")"
  done
  for lib in liburing.so.2 libxxhash.so.0; do
    path="$(ldd "$build/tools/kvferry" | awk -v l="$lib" '$1 == l { print $3 }')"
    [[ -n "$path" ]] && cp -L "$path" "$pack/lib/$lib"
  done
  cp "$root/scripts/gpu_tp_check.sh" "$root/scripts/gpu_tp_check_x4.sh" "$pack/"
  missing="$(LD_LIBRARY_PATH="$pack/lib" ldd "$pack/bin/kvferry" | grep 'not found' || true)"
  [[ -z "$missing" ]] || { echo "unresolved libraries: $missing" >&2; exit 1; }
  du -sh "$pack"
  exit 0
fi

out="${OUT:-/tmp/gpu_tp_check}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$here/bin/kvferry_test_peer"
export KVFERRY_CLI="$here/bin/kvferry"
kv="$here/bin/kvferry"
budget="${TP_CHECK_BUDGET_S:-560}"
start=$(date +%s)
step() {  # name limit command...: runs when it fits the budget; log in $OUT/name.log
  local name="$1" limit="$2"
  shift 2
  local left=$(( budget - ($(date +%s) - start) ))
  if (( limit > left )); then echo "== $name: skipped (needs ${limit}s, ${left}s left)"; return 0; fi
  echo "== $name ($(date +%T), limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" >"$out/$name.log" 2>&1
  echo "   rc=$? -> $out/$name.log"
}

{ date -u; uname -a; nvidia-smi; nvidia-smi topo -m; } >"$out/machine.log" 2>&1
model=(--model mistral-small-3.1 --tokens 4096 --mem vram --json)

step tests 150 "$here/bin/kvferry_tests" --gtest_color=no \
  --gtest_filter='GpuHeadCopy*:StagingSlots*:KvHeadCopy*:TpMapping*:TpWire*:TpReceiveProgress*:TpHeadSlices*'
if [[ -x "$here/bin/kvferry_tp_kernel_bench" ]]; then
  step kernels 120 "$here/bin/kvferry_tp_kernel_bench" --device 0 --tokens 4096 --iters 10 --warmup 2
fi
for pd in "2 1" "1 2"; do
  set -- $pd
  for path in device host direct; do
    step "demo_${1}to${2}_$path" 60 "$kv" tp-demo --prefill-tp "$1" --decode-tp "$2" --path "$path" "${model[@]}"
  done
done
for tp in 2:1 1:2; do
  step "bench_tp_${tp/:/to}" 150 "$kv" bench --tp "$tp" --tp-tokens 4096 --mem vram --iterations 5 --warmup 2 \
    --ceiling-reps 3 --json
done

echo
echo "================ summary ($(date -u +%F), $(nvidia-smi -L 2>/dev/null | head -1 | cut -c1-40)) ================"
grep -hE "^\[  PASSED  \] [0-9]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]" "$out/tests.log" 2>/dev/null | head -n 12 |
  sed 's/^/tests: /'
[[ -f "$out/kernels.log" ]] && { echo "-- head kernels"; tail -n 12 "$out/kernels.log"; }
echo "-- tp-demo (one row per decode rank)"
for f in "$out"/demo_*.log; do
  [[ -f "$f" ]] || continue
  python3 - "$f" <<'EOF'
import json, sys, os
name = os.path.basename(sys.argv[1])[5:-4]
for line in open(sys.argv[1]):
    try: j = json.loads(line)
    except Exception: continue
    if "decode_rank" in j:
        print(f"{name:16} d{j['decode_rank']} sources {j['sources']} {j['bytes']/1e6:8.1f} MB {j['ms']:8.2f} ms "
              f"{j['gbps']:7.1f} GB/s path {j['path']:6} verified {j['verified']} {j.get('error', '')[:80]}")
EOF
done
echo "-- bench --tp (all decode ranks together; ratio to the path's same-run ceiling)"
for f in "$out"/bench_tp_*.log; do
  [[ -f "$f" ]] || continue
  python3 - "$f" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try: j = json.loads(line)
    except Exception: continue
    if "case" in j:
        print(f"{j['tp']:5} {j['case']:7} {j['gbps']:8.1f} GB/s  {j['ms']:8.2f} ms  vs {j['ceiling_name']} "
              f"{j['ceiling_gbps']:7.1f}: ratio {j['ratio']:.3f}  x{j['speedup_over_naive']:.2f} over naive  "
              f"verified {j['verified']} {j.get('error', '')[:60]}")
EOF
done
echo "acceptance: device ratio >= 0.8 (peer copy); kernels: gather >= 0.95 of D2H, scatter >= 0.93 of H2D"
