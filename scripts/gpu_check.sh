#!/usr/bin/env bash
# Runs ON THE GPU MACHINE (nvidia-h200-x2) in one device call, from the repository root,
# with the folder packed by scripts/gpu_prepare.sh carried:
#   run(carry=[".device"], command="bash .device/gpu_check.sh", kind="nvidia-h200-x2")
# Builds nothing. Logs go to $OUT (or /tmp/gpu_check); a short table is printed last.
# Budget: each step has its own timeout, and a step that could overrun the whole
# budget (GPU_CHECK_BUDGET_S, default 560 s, under the device's 10-minute limit per
# command) is skipped and says so. GPU_CHECK_STEPS="serve demo nccl" runs only the
# steps whose names contain one of those words; GPU_CHECK_NCCL_SINGLE=1 adds NCCL's
# single-group mode (40,000 ops in one group; it did not finish within 140 s once).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export KVFERRY_TEST_PEER="$here/bin/kvferry_test_peer"
export KVFERRY_CLI="$here/bin/kvferry"  # the CLI suites (tests/cli_runner.h) run this one
kv="$here/bin/kvferry"
budget="${GPU_CHECK_BUDGET_S:-560}"
start=$(date +%s)
: >"$out/steps.txt"
wanted() {  # name: selected by GPU_CHECK_STEPS (all when unset)
  [[ -z "${GPU_CHECK_STEPS:-}" ]] && return 0
  local w
  for w in $GPU_CHECK_STEPS; do [[ "$1" == *"$w"* ]] && return 0; done
  return 1
}
fits() {  # name limit: true when the step may start within the budget
  local left=$(( budget - ($(date +%s) - start) ))
  if (( $2 > left )); then
    echo "== $1: skipped, its limit ${2}s exceeds the ${left}s left of the budget"
    echo "$1 skipped (budget)" >>"$out/steps.txt"
    return 1
  fi
}
step() {  # name timeout command...
  local name="$1" limit="$2"
  shift 2
  wanted "$name" || return 0
  fits "$name" "$limit" || return 0
  local t0
  t0=$(date +%s)
  echo "== $name ($(date +%T), limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $(( $(date +%s) - t0 ))s -> $out/$name.log"
  tail -n 15 "$out/$name.log" | sed 's/^/   | /'
  echo "$name rc=$rc" >>"$out/steps.txt"
}

{ date -u; uname -a; nvidia-smi; nvidia-smi topo -m; } >"$out/machine.log" 2>&1
nvidia-smi topo -m 2>&1 | head -n 8
"$kv" info >"$out/info.log" 2>&1; grep -E "cuda_ipc|gds" -A1 "$out/info.log"

# GPU suites: kernels, registration, cuda_ipc, staged vram over tcp/shm, the conformance
# suite's vram cases, the CLI with --mem vram. (Gds* need the udev stub of
# scripts/gpu_storage_check.sh and run there.)
step gpu_tests 180 "$here/bin/kvferry_tests" --gtest_filter='Gpu*:*Vram*:*vram*:*CudaIpc*:*Staged*:-Gds*' \
  --gtest_color=no
# The acceptance shape: 40 layers x 1,000 scattered 64 KiB blocks (2.62 GB) per request.
shape=(--device 0 --layers 40 --blocks 1000 --block-size 64KiB --pattern scattered --verify --json)
common=(bench --mem vram --backend cuda_ipc --peer-device 1 "${shape[@]}" --iterations 10 --warmup 2 --ceiling-reps 3)
step bench_kernel 100 "$kv" "${common[@]}" --param cuda_ipc.copy=kernel --repost
step bench_kernel_fresh 100 "$kv" "${common[@]}" --param cuda_ipc.copy=kernel --fresh-requests
step bench_batch 100 "$kv" "${common[@]}" --param cuda_ipc.copy=batch --repost
# vram over the host paths, staged through pinned memory: GPU0 -> another process's
# host memory over shm (ceiling: pinned copy), GPU0 -> GPU1 of another process over tcp
# (ceiling: plain TCP stream between the same processes).
step bench_shm_staged 120 "$kv" bench --mem vram --backend shm --peer-mem dram "${shape[@]}" --iterations 5 \
  --warmup 1 --ceiling-reps 3
step bench_tcp_staged 150 "$kv" bench --mem vram --backend tcp --peer-mem vram --peer-device 1 "${shape[@]}" \
  --iterations 3 --warmup 1 --ceiling-reps 2
# Where the time goes: the copy kernel alone vs the copy engines vs host work (one process).
step gpu_probe 90 "$here/bin/kvferry_gpu_probe"

# kvferry serve / pull with GPU pools (issue 5): Mistral-Small-3.1, 4 GiB pools, a
# 4096-token prompt (256 blocks x 40 layers = 640 MiB per step). The server holds its
# pool on GPU 0 and offers every backend it can; the clients choose their own memory:
# GPU 1 over cuda_ipc (with interleaved bench-equivalent steps), and host memory over
# tcp (staged through pinned memory on the server), and GPU 1 over tcp (staged on both sides).
if wanted serve_vram && fits serve_vram 200; then
  echo "== serve_vram ($(date +%T), limit 200s, in the background)"
  timeout --kill-after=5 200 "$kv" serve --mem vram --device 0 --listen 127.0.0.1:0 --json \
    >"$out/serve_vram.log" 2>&1 &
  serve_pid=$!
  port=""
  for _ in $(seq 1 120); do  # it fills its 4 GiB first
    port="$(grep -m1 '"listening"' "$out/serve_vram.log" 2>/dev/null |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["port"])' 2>/dev/null)"
    [[ -n "$port" ]] || ! kill -0 "$serve_pid" 2>/dev/null && break
    sleep 0.5
  done
  if [[ -n "$port" ]]; then
    pull=(pull --peer "127.0.0.1:$port" --tokens 4096 --json)
    step serve_vram_pull_vram 60 "$kv" "${pull[@]}" --mem vram --device 1 --backend cuda_ipc --steps 10 --baseline
    step serve_vram_pull_vram_t8 60 "$kv" "${pull[@]}" --mem vram --device 1 --backend cuda_ipc --steps 10 \
      --transfers 8
    step serve_vram_pull_dram 45 "$kv" "${pull[@]}" --mem dram --backend tcp --steps 3
    step serve_vram_pull_vram_tcp 60 "$kv" "${pull[@]}" --mem vram --device 1 --backend tcp --steps 3
  else
    echo "   serve_vram did not start listening; see $out/serve_vram.log"
  fi
  kill -TERM "$serve_pid" 2>/dev/null
  wait "$serve_pid"
  echo "serve_vram rc=$?" >>"$out/steps.txt"
  tail -n 8 "$out/serve_vram.log" | sed 's/^/   | /'
fi

# The prefill -> decode demo on GPUs: prefill on GPU 0, decode on GPU 1, a 4096-token
# prompt; cuda_ipc by name, then every backend (those that cannot take vram skip).
step demo_vram 60 "$kv" demo --mem vram --device 0 --peer-device 1 --backend cuda_ipc --json
step demo_vram_all 90 "$kv" demo --mem vram --device 0 --peer-device 1 --json

# NCCL on the same 40 layers x 1,000 scattered 64 KiB blocks, one group per layer.
nccl=(python3 "$here/nccl_compare.py" --layers 40 --blocks 1000 --block-bytes 65536)
step nccl_per_layer 140 "${nccl[@]}" --mode per-layer --iters 3 --time-limit 110
if [[ "${GPU_CHECK_NCCL_SINGLE:-0}" == 1 ]]; then
  step nccl_single 140 "${nccl[@]}" --mode single --iters 1 --time-limit 110
fi

echo
echo "================ summary ($(( $(date +%s) - start ))s, $(date -u +%F) nvidia-h200-x2) ================"
if [[ -f "$out/gpu_tests.log" ]]; then
  grep -E "^\[==========\]|^\[  PASSED  \] [0-9]|^\[  (FAILED|SKIPPED) +\] [0-9]+ test|^\[  FAILED  \] [A-Z]" \
    "$out/gpu_tests.log" | sed 's/^/tests: /' | head -n 20
fi
printf "%-22s %-6s %10s %8s %10s %-12s %10s %8s %9s\n" case op median_ms post_ms GB/s ceiling "GB/s" ratio verified
for c in kernel kernel_fresh batch shm_staged tcp_staged; do
  CASE="$c" python3 -c '
import json, os, sys
for line in sys.stdin:
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    name = r["backend"] + "/" + r["copy"] + ("/fresh" if r.get("fresh_requests") else "") + "->" + r.get("peer_mem", "vram")
    print("%-22s %-6s %10.3f %8.3f %10.1f %-12s %10.1f %7.1f%% %9s" % (name, r["op"], r["median_ms"], r.get("post_ms", 0),
          r["gbps"], r.get("ceiling", "peer copy"), r["ceiling_gbps"], 100 * r["ratio"], r["verified"]))' \
    <"$out/bench_$c.log" 2>/dev/null
done
grep -h -E "^(ceiling|kernel, grid 528|batch|split 5% engines, grid 528|host:)" "$out/gpu_probe.log" 2>/dev/null |
  sed 's/^/  probe: /'
echo
printf "%-26s %-9s %-10s %10s %10s %9s %12s %9s\n" "kv step" backend "mem s->c" bytes median_ms GB/s baseline_GB/s verified
for name in serve_vram_pull_vram serve_vram_pull_vram_t8 serve_vram_pull_dram serve_vram_pull_vram_tcp demo_vram \
  demo_vram_all; do
  [[ -f "$out/$name.log" ]] || continue
  NAME="$name" python3 -c '
import json, os, sys
name, rows = os.environ["NAME"], []
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
for r in rows:
    if "server_mem" in r:  # a pull
        mem, ms, base = r["server_mem"] + "->" + r["mem"], r["median_ms"], r.get("baseline", {}).get("gbps")
    else:  # a demo row
        mem, ms, base = r.get("mem", "?") + "->" + r.get("mem", "?"), r["time_ms"], None
    print("%-26s %-9s %-10s %10d %10.2f %9.2f %12s %9s" % (name, r["backend"], mem, r["bytes"], ms, r["gbps"],
          "-" if base is None else "%.2f" % base, "yes" if r["verified"] else "NO"))
if not rows:
    print("%-26s no result (see its log)" % name)' <"$out/$name.log"
done
grep -h "skipped" "$out/demo_vram_all.log" 2>/dev/null | sed 's/^/  /'
grep -h -E "no backend can move|no started backend supports" "$out/serve_vram_pull_dram.log" 2>/dev/null |
  head -n 1 | cut -c1-200 | sed 's/^/  vram server -> dram client: /'
echo
for name in nccl_per_layer nccl_single; do
  [[ -f "$out/$name.log" ]] || continue
  grep -h "nccl batch_isend_irecv" "$out/$name.log" || echo "$name: no result (see $out/$name.log)"
done
cat "$out/steps.txt"
echo "acceptance: cuda_ipc write and read >= 90% of the peer-copy ceiling; shm staged >= 85% of the pinned"
echo "            copy; tcp staged: its ratio to the plain stream; all verified yes; kv steps verified yes"
