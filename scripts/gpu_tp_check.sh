#!/usr/bin/env bash
# Heterogeneous tensor parallelism on the GPU machine, in ONE device call.
#
# Here (no GPU needed): build and pack into the git-ignored build-tp-gpu/ (< 60 MiB);
# BUILD_DIR=build reuses a tree configured with CUDA instead of making build-gpu/:
#   scripts/gpu_tp_check.sh prepare
# There (builds nothing; logs under $OUT; a short table last):
#   run(carry=["build-tp-gpu"], command="bash build-tp-gpu/gpu_tp_check.sh", kind="nvidia-h200-x2")
# It also runs on one GPU (kind nvidia-h200): every rank then sits on GPU 0, cuda_ipc copies
# inside that GPU and the device paths' ceiling is a GPU0 -> GPU0 copy; the rows say so.
#
# Steps (Mistral-Small-3.1 geometry: 40 layers, 8 KV heads, dim 128, bf16, 16 tokens/block;
# a 4,096-token prompt; GPU pools, one GPU per process, round robin):
#  1. bench --tp 2:1 and 1:2 --mem vram: device staging (cuda_ipc), host staging (tcp),
#     direct and the naive per-head plan, each against its same-run ceiling (peer copy for
#     device / direct, pinned D2H for host), the speed-up over naive, every rank verified;
#  2. the GPU and TP suites of the test binary (Gpu*, Tp*, *Gpu*, staging, head copies);
#  3. the head kernels' own bench (gather -> pinned vs D2H, scatter <- pinned vs H2D);
#  4. tp-demo --mem vram 2->1 and 1->2 over device, host and direct, every element verified.
# Acceptance (two GPUs): device staging >= 0.8 of the same-run peer copy for 2->1 and 1->2;
# kernels: gather >= 0.95 of D2H, scatter >= 0.93 of H2D; verified everywhere.
# GPU_BUDGET_S (default 560) bounds the whole call; steps that would overrun it are skipped.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -f "$here/gpu_lib.sh" ]]; then source "$here/gpu_lib.sh"; else source "$here/../scripts/gpu_lib.sh"; fi

if [[ "${1:-}" == prepare ]]; then
  root="$(cd "$gpu_lib_dir/.." && pwd)"
  set -e
  gpu_pack "$root/build-tp-gpu" \
    "kvferry kvferry_cli kvferry_tests kvferry_test_peer kvferry_tp_kernel_bench?" \
    "tools/kvferry tests/kvferry_tests tests/kvferry_test_peer tests/kvferry_tp_kernel_bench?" \
    "$root/scripts/gpu_tp_check.sh" "$root/scripts/gpu_tp_check_x4.sh"
  exit 0
fi

gpu_env /tmp/gpu_tp_check
{ date -u; uname -a; nvidia-smi; nvidia-smi topo -m; } >"$out/machine.log" 2>&1
case "$gpus" in
  0) where="no GPU found: the GPU steps fail or skip" ;;
  1) where="ONE GPU: every rank on GPU 0, cuda_ipc inside it, device ceilings are GPU0->GPU0 copies (not NVLink)" ;;
  *) where="$gpus GPUs: ranks round robin (2->1: p0,d0 on GPU0, p1 on GPU1; 1->2: p0,d0 on GPU0, d1 on GPU1)" ;;
esac
echo "== $where"

for tp in 2:1 1:2; do
  gpu_step "bench_tp_${tp/:/to}" 150 "$kv" bench --tp "$tp" --tp-tokens 4096 --mem vram --iterations 5 --warmup 2 \
    --ceiling-reps 3 --json
done
gpu_step tests 170 "$here/bin/kvferry_tests" --gtest_color=no \
  --gtest_filter='Gpu*:Tp*:*Gpu*:StagingSlots*:KvHeadCopy*:HeadCopyChunks*'
if [[ -x "$here/bin/kvferry_tp_kernel_bench" ]]; then
  gpu_step kernels 90 "$here/bin/kvferry_tp_kernel_bench" --device 0 --tokens 4096 --iters 10 --warmup 2
fi
for pd in "2 1" "1 2"; do
  set -- $pd
  for path in device host direct; do
    gpu_step "demo_${1}to${2}_$path" 45 "$kv" tp-demo --prefill-tp "$1" --decode-tp "$2" --path "$path" \
      --model mistral-small-3.1 --tokens 4096 --mem vram --json
  done
done

echo
echo "================ summary ($(date -u +%F), $(nvidia-smi -L 2>/dev/null | head -1 | cut -c1-40)) ================"
echo "machine: $where"
echo "-- bench --tp (all decode ranks together; ratio to the path's same-run ceiling)"
for f in "$out"/bench_tp_*.log; do
  [[ -f "$f" ]] || continue
  python3 - "$f" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try: j = json.loads(line)
    except Exception: continue
    if "ceilings" in j:
        c = j["ceilings"]
        print(f"ceilings: peer copy {c['peer_copy_gbps']:.1f} GB/s{' (GPU0->GPU0, 1 GPU)' if c.get('single_gpu') else ''}, "
              f"pinned D2H {c['device_to_host_gbps']:.1f} GB/s")
    if "case" in j:
        print(f"{j['tp']:5} {j['case']:7} path {j['path']:6} {j['gbps']:8.1f} GB/s {j['ms']:8.2f} ms  vs {j['ceiling_name']} "
              f"{j['ceiling_gbps']:7.1f}: ratio {j['ratio']:.3f}  x{j['speedup_over_naive']:.2f} over naive  "
              f"verified {j['verified']} {j.get('error', '')[:80]}")
PY
done
echo "-- tests"
grep -hE "^\[  PASSED  \] [0-9]|^\[  FAILED  \]|^\[  SKIPPED \] [0-9]|^\[==========\] [0-9]+ tests" "$out/tests.log" 2>/dev/null |
  head -n 30 | sed 's/^/tests: /'
[[ -f "$out/kernels.log" ]] && { echo "-- head kernels"; tail -n 12 "$out/kernels.log"; }
echo "-- tp-demo (one row per decode rank)"
gpu_tp_demo_rows "$out"/demo_*.log
echo "acceptance (2 GPUs): device ratio >= 0.8 of the peer copy, 2:1 and 1:2; kernels: gather >= 0.95 of D2H,"
echo "scatter >= 0.93 of H2D. On 1 GPU the ratios are against a copy inside GPU 0 and are not the acceptance."
