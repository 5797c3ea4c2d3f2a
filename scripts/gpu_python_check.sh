#!/usr/bin/env bash
# The Python package on the GPU machine: vram_client.py pulling a 4,096-token prompt
# (Mistral-Small-3.1: 40 layers, 8 KV heads, dim 128, 16 tokens/block, bf16, flashinfer:
# one 64 KiB block per layer = 40 x 256 x 64 KiB = 640 MiB) from vram_server.py over
# cuda_ipc with torch tensors, next to `kvferry bench` on the same shape in the same call.
# Acceptance: client / bench >= 0.9.
#
# Both time the same thing, per step, median over 20 steps after 3 warm-up steps:
#   create a fresh strided request (lanes x block ids, 256 scattered block ids per side)
#   + post + wait until done; no notification; verification is outside the timed part
#   (client: every byte of every step; bench: --verify, one request after timing).
# The client row "with notification" (--notify transfer: the request id rides on the
# transfer, the example's default) is printed beside them for its cost; it is not the
# acceptance row.
#
# Where the client's extra time goes (diagnostic rows, not acceptance): each client row
# splits its median step into create, post, transfer (post until the library noticed the
# end) and wake-up (noticed -> wait() returned). "bench's conditions" runs the client as
# the bench runs: a 512-block pool per layer on both sides (the bench's
# max(2 x 256, 256 + 64)) instead of the 4 GiB pool, and the same block ids every step.
# "pinned" runs one client and one bench on the CPUs local to the initiator's GPU.
#
# GPUs: with two or more, server and bench target on GPU0, client and bench initiator on
# GPU1 (GPU0 -> GPU1, nvidia-h200-x2); with one, everything on GPU0 (two processes on one
# GPU: the rows say "GPU0 -> GPU0").
#
# HERE (no GPU needed; builds a cp312 package for the device machine's Python 3.12):
#   scripts/gpu_python_check.sh prepare        # -> .device-py/ (git-ignored, < 60 MiB)
# THERE (nothing is built or installed; no network):
#   run(carry=[".device-py"], command="bash .device-py/gpu_python_check.sh", kind="nvidia-h200-x2")
#   (or kind="nvidia-h200": the one-GPU rows)
# Logs go to $OUT; a short table is printed last.

set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

prepare() {
  set -e
  local root py build venv out
  root="$(cd "$here/.." && pwd)"
  py="${PY312:-/root/.pyenv/versions/3.12.1/bin/python}"
  build="${BUILD_DIR:-$root/build}"          # a C++ build with CUDA (scripts/build.sh finds nvcc)
  venv="$build/py312env"
  out="$root/.device-py"
  [[ -f "$build/src/libkvferry.so.0.1.0" && -x "$build/tools/kvferry" ]] ||
    { echo "build the C++ tree first: scripts/build.sh --build-dir $build" >&2; exit 1; }
  [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "scikit-build-core>=0.10" "nanobind>=2.4"
  rm -rf "$out" "$build/py312wheel"
  "$venv/bin/python" -m pip wheel -q --no-build-isolation --no-deps "$root" -w "$build/py312wheel" \
    --config-settings=cmake.define.KVFERRY_PREBUILT_BUILD_DIR="$build" --config-settings=build-dir="$build/py312"
  mkdir -p "$out/site" "$out/bin" "$out/lib" "$out/examples" "$out/tests"
  "$venv/bin/python" -m zipfile -e "$build"/py312wheel/kvferry-*.whl "$out/site"
  for so in "$out"/site/kvferry/*.so*; do strip --strip-debug "$so"; done
  strip --strip-debug -o "$out/bin/kvferry" "$build/tools/kvferry"
  for lib in liburing.so.2 libxxhash.so.0; do
    cp -L "$(ldd "$build/tools/kvferry" | awk -v l="$lib" '$1 == l { print $3 }')" "$out/lib/$lib"
  done
  cp "$root"/examples/python/*.py "$out/examples/"
  cp "$root"/tests/python/test_torch.py "$out/tests/"
  cp "$root/scripts/gpu_python_check.sh" "$out/"
  LD_LIBRARY_PATH="$out/lib:$out/site/kvferry" ldd "$out/site/kvferry/"_kvferry*.so "$out/bin/kvferry" | grep "not found" &&
    { echo "unresolved libraries" >&2; exit 1; }
  du -sh "$out"
}

if [[ "${1:-}" == "prepare" ]]; then
  prepare
  exit $?
fi

out="${OUT:-/tmp/gpu_python_check}"
mkdir -p "$out"
export PYTHONPATH="$here/site${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$here/lib:$here/site/kvferry${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
py="${PYTHON:-python3}"
{ date -u; nvidia-smi -L; "$py" -c "import sys, torch, numpy; print(sys.version, torch.__version__, numpy.__version__)"; } \
  >"$out/machine.log" 2>&1
cat "$out/machine.log"
"$py" -c "import kvferry; print('kvferry', kvferry.__version__, [(b.name, b.usable) for b in kvferry.compiled_backends()])" \
  2>&1 | tee "$out/import.log"

# torch tests of the package (CUDA tensors as vram regions), when pytest is there.
if "$py" -c "import pytest" 2>/dev/null; then
  (cd "$here/tests" && timeout 120 "$py" -m pytest -q -p no:cacheprovider test_torch.py) >"$out/pytest_torch.log" 2>&1
  echo "pytest test_torch.py: rc=$? ($(tail -n 1 "$out/pytest_torch.log"))"
fi

gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')"
if [[ "$gpus" -ge 2 ]]; then src=0; dst=1; else src=0; dst=0; fi
route="GPU$src -> GPU$dst"
echo "GPUs: $gpus; server and bench target on GPU$src, client and bench initiator on GPU$dst ($route)"

shape=(--layers 40 --heads 8 --head-dim 128 --tokens-per-block 16 --layout flashinfer)
# start_server LOG [options]: a vram_server.py in the background; sets server (pid) and port.
start_server() {
  local log="$1"
  shift
  timeout 500 "$py" "$here/examples/vram_server.py" --mem vram --device "$src" --port 0 "${shape[@]}" "$@" >"$log" 2>&1 &
  server=$!
  port=""
  for _ in $(seq 1 240); do  # it fills its pool first
    port="$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -n 1)"
    [[ -n "$port" ]] || ! kill -0 "$server" 2>/dev/null && break
    sleep 0.5
  done
  [[ -n "$port" ]] || { echo "vram_server.py did not listen:"; tail -n 20 "$log"; exit 1; }
}
start_server "$out/server.log"

client=(timeout 240 "$py" "$here/examples/vram_client.py" --mem vram --device "$dst" --port "$port" "${shape[@]}"
        --num-tokens 4096 --iterations 20 --warmup 3 --backend cuda_ipc --json)
bench=(timeout 120 "$here/bin/kvferry" bench --mem vram --backend cuda_ipc --device "$dst" --peer-device "$src" --op read
       --layers 40 --blocks 256 --block-size 64KiB --pattern scattered --fresh-requests --iterations 20 --warmup 3
       --verify --json)
# Alternating rounds on the same GPUs in the same call: client, bench, client, bench.
for round in 1 2; do
  "${client[@]}" --notify none >"$out/client_$round.log" 2>&1
  echo "client round $round (no notification): rc=$? $(grep -m1 'median' "$out/client_$round.log")"
  "${bench[@]}" >"$out/bench_$round.log" 2>&1
  echo "bench round $round: rc=$? $(grep -m1 'create + post' "$out/bench_$round.log")"
done
"${client[@]}" --notify transfer >"$out/client_notify.log" 2>&1
echo "client with notification: rc=$? $(grep -m1 'median' "$out/client_notify.log")"
# Pinned: client and bench on the CPUs of the initiator GPU's NUMA node.
bus="$(nvidia-smi -i "$dst" --query-gpu=pci.bus_id --format=csv,noheader 2>/dev/null | tr 'A-F' 'a-f' | sed 's/^0000//')"
cpus="$(cat "/sys/bus/pci/devices/$bus/local_cpulist" 2>/dev/null)"
if [[ -n "$cpus" ]]; then
  taskset -c "$cpus" "${client[@]}" --notify none >"$out/client_pinned.log" 2>&1
  echo "client pinned to CPUs $cpus: rc=$? $(grep -m1 'median' "$out/client_pinned.log")"
  taskset -c "$cpus" "${bench[@]}" >"$out/bench_pinned.log" 2>&1
  echo "bench pinned to CPUs $cpus: rc=$? $(grep -m1 'create + post' "$out/bench_pinned.log")"
else
  echo "no CPU list for GPU$dst ($bus): pinned rows skipped"
fi
kill -TERM "$server" 2>/dev/null
wait "$server" 2>/dev/null
# The bench's conditions: its pool size on both sides and the same block ids every step.
start_server "$out/server_512.log" --pool-blocks 512
"${client[@]}" --port "$port" --notify none --pool-blocks 512 --same-blocks >"$out/client_bench_conditions.log" 2>&1
echo "client in the bench's conditions: rc=$? $(grep -m1 'median' "$out/client_bench_conditions.log")"
kill -TERM "$server" 2>/dev/null
wait "$server" 2>/dev/null

"$py" - "$out" "$route" <<'PY'
import json, sys
out, route = sys.argv[1], sys.argv[2]
def last_json(path, key):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("{") and key in line:
            return json.loads(line)
    return None
nan = float("nan")
print(f"\n{route}, cuda_ipc, 4,096 tokens = 640 MiB per request; timed: fresh strided request + post + wait")
print(f"{'row':<34}{'GB/s':>9}{'median ms':>11}{'create+post us':>16}{'verified':>10}{'ratio':>8}")
ratios = []
for r in (1, 2):
    c = last_json(f"{out}/client_{r}.log", "gbps_median")
    b = last_json(f"{out}/bench_{r}.log", '"gbps"')
    ratio = c["gbps_median"] / b["gbps"] if c and b else nan
    ratios.append(ratio)
    if c:
        print(f"{'vram_client.py round %d' % r:<34}{c['gbps_median']:>9.1f}{c['median_ms']:>11.3f}"
              f"{c['create_post_us_median']:>16.1f}{str(c['verified']):>10}{ratio:>8.3f}")
    else:
        print(f"vram_client.py round {r}: no result (see client_{r}.log)")
    if b:
        print(f"{'kvferry bench round %d' % r:<34}{b['gbps']:>9.1f}{b['median_ms']:>11.3f}"
              f"{b['create_post_cpu_us']:>16.1f}{b['verified']:>10}{'':>8}"
              f"   (its ceiling: {b['ceiling']} {b['ceiling_gbps']:.1f} GB/s, ratio {b['ratio']:.3f})")
    else:
        print(f"kvferry bench round {r}: no result (see bench_{r}.log)")
n = last_json(f"{out}/client_notify.log", "gbps_median")
if n:
    b = last_json(f"{out}/bench_2.log", '"gbps"')
    print(f"{'vram_client.py with notification':<34}{n['gbps_median']:>9.1f}{n['median_ms']:>11.3f}"
          f"{n['create_post_us_median']:>16.1f}{str(n['verified']):>10}"
          f"{(n['gbps_median'] / b['gbps'] if b else nan):>8.3f}   (not the acceptance row)")
# Diagnostic rows (not acceptance): the client pinned, the bench pinned, the client in the bench's conditions.
bp = last_json(f"{out}/bench_pinned.log", '"gbps"')
for name, log, against in (("vram_client.py pinned", "client_pinned", bp),
                           ("vram_client.py bench's conditions", "client_bench_conditions",
                            last_json(f"{out}/bench_2.log", '"gbps"'))):
    c = last_json(f"{out}/{log}.log", "gbps_median")
    if c:
        print(f"{name:<34}{c['gbps_median']:>9.1f}{c['median_ms']:>11.3f}{c['create_post_us_median']:>16.1f}"
              f"{str(c['verified']):>10}{(c['gbps_median'] / against['gbps'] if against else nan):>8.3f}")
if bp:
    print(f"{'kvferry bench pinned':<34}{bp['gbps']:>9.1f}{bp['median_ms']:>11.3f}{bp['create_post_cpu_us']:>16.1f}"
          f"{bp['verified']:>10}")
print("\nwhere a step's median time goes (medians of each part): after post = post() returned -> wait() returned;")
print("wake-up = the library noticed the end -> wait() returned (client only; inside 'after post')")
print(f"{'row':<34}{'create us':>10}{'post us':>9}{'after post ms':>15}{'wake-up us':>12}{'pool':>6}{'ids':>7}")
for name, log in (("client round 1", "client_1"), ("client round 2", "client_2"),
                  ("client with notification", "client_notify"), ("client pinned", "client_pinned"),
                  ("client, bench's conditions", "client_bench_conditions")):
    c = last_json(f"{out}/{log}.log", "gbps_median")
    if c and "after_post_ms_median" in c:
        print(f"{name:<34}{c['create_us_median']:>10.1f}{c['post_us_median']:>9.1f}{c['after_post_ms_median']:>15.3f}"
              f"{c['wake_us_median']:>12.1f}{c['pool_blocks']:>6}{'same' if c['same_blocks'] else 'fresh':>7}")
for name, log in (("bench round 1", "bench_1"), ("bench round 2", "bench_2"), ("bench pinned", "bench_pinned")):
    b = last_json(f"{out}/{log}.log", '"gbps"')
    if b:  # the bench prints the median request and the median post: their difference ~ create + after post
        print(f"{name:<34}{'':>10}{b['post_ms'] * 1e3:>9.1f}{b['median_ms'] - b['post_ms']:>15.3f}"
              f"{'':>12}{512:>6}{'same':>7}")
print("create+post us: the client's wall time (Python, GIL released inside), the bench's thread CPU time")
ok = all(x == x and x >= 0.9 for x in ratios)
print(f"vram_client.py / kvferry bench ({route}): {', '.join(f'{x:.3f}' for x in ratios)}  "
      f"acceptance >= 0.9: {'PASS' if ok else 'FAIL'}")
PY
