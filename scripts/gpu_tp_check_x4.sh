#!/usr/bin/env bash
# Heterogeneous tensor parallelism with 4 GPUs (nvidia-h200-x4), in ONE device call.
# Prepared, not yet run. Pack with `scripts/gpu_tp_check.sh prepare` (it copies this
# script into build-tp-gpu/), then:
#   run(carry=["build-tp-gpu"], command="bash build-tp-gpu/gpu_tp_check_x4.sh", kind="nvidia-h200-x4")
# Cases (Mistral-Small-3.1 geometry unless said; GPU pools, one GPU per process, round robin
# over the 4 GPUs, so some processes share a GPU when P + D > 4):
#   4->2, 2->4; 3->1 with 6 KV heads; kv_heads 2 replicated 4->2; at 4,096 and 32,768 tokens.
# Each: tp-demo over device staging (every element verified), then bench --tp with every
# path against the same-run peer copy, the naive plan, and the multi-sender ingress ceiling
# (GPUs 1..P writing into GPU 0 at once: what a decode rank fed by several prefill ranks
# can take at most). Logs under $OUT; a table last.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [[ -f "$here/gpu_lib.sh" ]]; then source "$here/gpu_lib.sh"; else source "$here/../scripts/gpu_lib.sh"; fi
GPU_BUDGET_S="${GPU_BUDGET_S:-570}"
gpu_env /tmp/gpu_tp_check_x4
{ date -u; nvidia-smi; nvidia-smi topo -m; } >"$out/machine.log" 2>&1

cases=("4 2 8" "2 4 8" "3 1 6" "4 2 2")  # P D kv_heads
for tokens in 4096 32768; do
  for c in "${cases[@]}"; do
    set -- $c
    name="${1}to${2}_h${3}_t${tokens}"
    staging=()
    (( tokens > 4096 )) && staging=(--staging-mib 8192)
    gpu_step "demo_$name" 90 "$kv" tp-demo --prefill-tp "$1" --decode-tp "$2" --kv-heads "$3" --tokens "$tokens" \
      --mem vram --path device --json "${staging[@]}"
    iters=(--iterations 3 --warmup 1)
    (( tokens > 4096 )) && iters=(--iterations 2 --warmup 1)
    gpu_step "bench_$name" 150 "$kv" bench --tp "$1:$2" --tp-kv-heads "$3" --tp-tokens "$tokens" --mem vram \
      "${iters[@]}" --ceiling-reps 3 --tp-ingress --tp-path device --tp-path direct --tp-path naive --json
  done
done

echo
echo "================ summary ($(date -u +%F), $(nvidia-smi -L 2>/dev/null | wc -l) GPUs) ================"
gpu_tp_demo_rows "$out"/demo_*.log
for f in "$out"/bench_*.log; do
  python3 - "$f" <<'PY'
import json, sys, os
name = os.path.basename(sys.argv[1])[6:-4]
for line in open(sys.argv[1]):
    try: j = json.loads(line)
    except Exception: continue
    if "case" in j:
        print(f"{name:18} {j['case']:7} {j['gbps']:8.1f} GB/s vs {j['ceiling_name']} {j['ceiling_gbps']:7.1f}: "
              f"{j['ratio']:.3f}  x{j['speedup_over_naive']:.2f} over naive  verified {j['verified']} {j.get('error', '')[:50]}")
PY
done
grep -h "ingress_gbps" "$out"/bench_*.log 2>/dev/null | head -n 8
