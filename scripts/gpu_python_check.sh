#!/usr/bin/env bash
# The Python package on the GPU machine: vram_client.py pulling a 4,096-token prompt
# (Mistral-Small-3.1: 40 layers, 8 KV heads, dim 128, 16 tokens/block, bf16, flashinfer:
# one 64 KiB block per layer = 40 x 256 x 64 KiB = 640 MiB) from vram_server.py over
# cuda_ipc with torch tensors, next to `kvferry bench` on the same shape in the same call.
# Acceptance: client / bench >= 0.9, against the bench with one allocation per layer on
# each side (--layer-tensors: the client's shape, an engine's per-layer tensors); the ratio
# to the bench's single-allocation pool is printed beside it.
#
# Both time the same thing, per step, median over 20 steps after 3 warm-up steps:
#   create a fresh strided request (lanes x block ids, 256 scattered block ids per side)
#   + post + wait until done; no notification; verification is outside the timed part
#   (client: every byte of every step, checked on the GPU; bench: --verify, one request
#   after timing).
# Every row splits its median step: create + post, after post (post() returned ->
# wait() returned) and wake-up (the library saw the end -> wait() returned).
#
# Diagnostic rows (not acceptance), to locate what separates client and bench:
#   client, host-side check: the check as it was before (numpy expectations uploaded
#     layer by layer, ~0.5 s per step during which both GPUs sit idle);
#   client, last step checked: the steps back to back, as the bench's timed requests;
#   client, last step checked + 500 ms pause: idle GPUs between steps, no check;
#   bench per-layer + 500 ms pause: the bench with the same idle time;
#   client with the transfer's notification (the example's default);
#   client and server agents with every usable backend (the examples' default; the rows
#   above start cuda_ipc alone on both sides, as the bench does).
#
# GPUs: with two or more, server and bench target on GPU0, client and bench initiator on
# GPU1 (GPU0 -> GPU1, nvidia-h200-x2); with one, everything on GPU0 (two processes on one
# GPU: the rows say "GPU0 -> GPU0").
#
# HERE (no GPU needed; builds a cp312 package for the device machine's Python 3.12):
#   scripts/gpu_python_check.sh prepare        # -> .device-py/ (git-ignored, < 60 MiB)
# THERE (nothing is built or installed; no network; ~4 minutes):
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
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "scikit-build-core>=0.10" "nanobind>=2.4" numpy
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
# Both agents start cuda_ipc alone, as the bench's two processes do (--backend).
start_server "$out/server.log" --agent-backends cuda_ipc

client=(timeout 120 "$py" "$here/examples/vram_client.py" --mem vram --device "$dst" --port "$port" "${shape[@]}"
        --num-tokens 4096 --iterations 20 --warmup 3 --backend cuda_ipc --json)
only_ipc=(--agent-backends cuda_ipc)
bench=(timeout 120 "$here/bin/kvferry" bench --mem vram --backend cuda_ipc --device "$dst" --peer-device "$src" --op read
       --layers 40 --blocks 256 --block-size 64KiB --pattern scattered --fresh-requests --iterations 20 --warmup 3
       --verify --json)
# run NAME KIND COMMAND...: one row's log ($out/NAME.log) and a line of progress.
run() {
  local name="$1" kind="$2"
  shift 2
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  if [[ "$kind" == client ]]; then
    echo "$name: rc=$rc $(grep -m1 'median' "$out/$name.log")"
  else
    echo "$name: rc=$rc $(grep -m1 '^read' "$out/$name.log")"
  fi
}
# Alternating rounds on the same GPUs in the same call: client, bench, bench per-layer.
for round in 1 2; do
  run "client_$round" client "${client[@]}" "${only_ipc[@]}" --notify none
  run "bench_$round" bench "${bench[@]}"
  run "bench_layers_$round" bench "${bench[@]}" --layer-tensors
done
run client_host_check client "${client[@]}" "${only_ipc[@]}" --notify none --check host
run client_back_to_back client "${client[@]}" "${only_ipc[@]}" --notify none --verify last
run client_pause client "${client[@]}" "${only_ipc[@]}" --notify none --verify last --pause-ms 500
run bench_layers_pause bench "${bench[@]}" --layer-tensors --pause-ms 500
run client_notify client "${client[@]}" "${only_ipc[@]}" --notify transfer
kill -TERM "$server" 2>/dev/null
wait "$server" 2>/dev/null
# Both agents with every usable backend (the examples' default; the previous runs).
start_server "$out/server_all.log"
run client_all_backends client "${client[@]}" --port "$port" --notify none
kill -TERM "$server" 2>/dev/null
wait "$server" 2>/dev/null

"$py" - "$out" "$route" <<'PY'
import json, sys
out, route = sys.argv[1], sys.argv[2]
def last_json(name, key):
    try:
        lines = open(f"{out}/{name}.log").read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("{") and key in line:
            return json.loads(line)
    return None
def client(name):
    return last_json(name, "gbps_median")
def bench(name):
    return last_json(name, '"gbps"')
nan = float("nan")
def gbps(r):
    return nan if r is None else r.get("gbps_median", r.get("gbps"))
def ratio(a, b):
    return gbps(a) / gbps(b) if a and b else nan
print(f"\n{route}, cuda_ipc, 4,096 tokens = 640 MiB per request; timed: fresh strided request + post + wait")
print("after post: post() returned -> wait() returned; wake-up: the library saw the end -> wait() returned;")
print("gap: the previous request's end -> this one's start, no copy running (client: its check, poisoning, "
      "pause; bench: its pause)")
print("create+post us: the client's wall time, the bench's thread CPU time; ratios: GB/s over the bench "
      "per-layer row of the same round, and over the single-allocation bench row")
head = (f"{'row':<40}{'GB/s':>8}{'med ms':>8}{'c+p us':>8}{'after ms':>9}{'wake us':>8}{'gap ms':>8}{'verified':>10}"
        f"{'/layers':>9}{'/single':>9}")
print(head)
def row(name, r, against_layers=None, against_single=None, note=""):
    if r is None:
        print(f"{name:<40}  no result (see the log)")
        return
    is_client = "gbps_median" in r
    cp = r["create_post_us_median"] if is_client else r["create_post_cpu_us"]
    ver = (f"{r.get('steps_checked', '?')} steps" if r["verified"] else "FAILED") if is_client else r["verified"]
    gap = r.get("gap_ms_median", nan) if is_client else r.get("pause_ms", nan)
    print(f"{name:<40}{gbps(r):>8.1f}{r['median_ms']:>8.3f}{cp:>8.1f}{r.get('after_post_ms_median', r.get('after_post_ms', nan)):>9.3f}"
          f"{r.get('wake_us_median', r.get('wake_us', nan)):>8.1f}{gap:>8.1f}{ver:>10}{ratio(r, against_layers):>9.3f}"
          f"{ratio(r, against_single):>9.3f}{note}")
accept, accept_single = [], []
for k in (1, 2):
    c, b, bl = client(f"client_{k}"), bench(f"bench_{k}"), bench(f"bench_layers_{k}")
    row(f"vram_client.py round {k}", c, bl, b)
    row(f"kvferry bench per-layer round {k}", bl, None, b,
        f"   (peer copy {bl['ceiling_gbps']:.1f} GB/s, ratio {bl['ratio']:.3f})" if bl else "")
    row(f"kvferry bench single round {k}", b, None, None,
        f"   (peer copy {b['ceiling_gbps']:.1f} GB/s, ratio {b['ratio']:.3f})" if b else "")
    accept.append(ratio(c, bl))
    accept_single.append(ratio(c, b))
bl2, b2 = bench("bench_layers_2"), bench("bench_2")
print("diagnostic rows (not acceptance):")
row("client, host-side check (as before)", client("client_host_check"), bl2, b2)
row("client, last step checked (back to back)", client("client_back_to_back"), bl2, b2)
row("client, last step checked, 500 ms pause", client("client_pause"), bl2, b2)
row("bench per-layer, 500 ms pause", bench("bench_layers_pause"), bl2, b2)
row("client with the transfer's notification", client("client_notify"), bl2, b2)
row("client + server with every backend", client("client_all_backends"), bl2, b2)
ok = all(x == x and x >= 0.9 for x in accept)
print(f"vram_client.py / kvferry bench --layer-tensors ({route}): {', '.join(f'{x:.3f}' for x in accept)}  "
      f"acceptance >= 0.9: {'PASS' if ok else 'FAIL'}   (over the single-allocation bench: "
      f"{', '.join(f'{x:.3f}' for x in accept_single)})")
PY
