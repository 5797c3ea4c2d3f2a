# scripts/gpu_lib.sh — what the GPU scripts share (sourced, never run). The device machine
# builds nothing: the binaries are built here, packed into a git-ignored folder that the
# device tool carries, and run there by a script packed with them.
#
# Here (no GPU needed):
#   gpu_pack PACK "TARGETS" "BINARIES" FILE...
#     configures $BUILD_DIR (default build-gpu/ at the root; an existing tree keeps its
#     generator, e.g. BUILD_DIR=build) with CUDA, builds the ninja TARGETS (a name ending
#     in '?' only where the tree has it), copies the BINARIES (paths in the tree; '?' as
#     above) stripped into PACK/bin, libkvferry and the libraries a bare machine lacks
#     into PACK/lib, and FILE... (and this file) into PACK; fails on unresolved libraries
#     or a folder over the carry limit (60 MiB).
# There (the device machine):
#   gpu_env OUT_DEFAULT      LD_LIBRARY_PATH, KVFERRY_TEST_PEER, KVFERRY_CLI for the packed
#                            binaries; sets $out (logs: $OUT or OUT_DEFAULT), $kv, $gpus
#   gpu_step NAME LIMIT CMD  runs CMD under `timeout LIMIT` when it fits the budget left
#                            (GPU_BUDGET_S, default 560 s from gpu_env), log $out/NAME.log;
#                            else says it was skipped. Never fails the script.

gpu_lib_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

gpu_pack() {
  local pack="$1" targets="$2" binaries="$3"
  shift 3
  local root
  root="$(cd "$gpu_lib_dir/.." && pwd)"
  local build="${BUILD_DIR:-$root/build-gpu}"
  local generator=(-G Ninja)
  [[ -f "$build/CMakeCache.txt" ]] && generator=()
  cmake -S "$root" -B "$build" "${generator[@]}" -DKVFERRY_WERROR=ON -DKVFERRY_ENABLE_CUDA=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo || return 1
  local all t wanted=()
  all="$(ninja -C "$build" -t targets all)"
  for t in $targets; do
    if [[ "$t" == *'?' ]]; then
      if grep -q "^${t%\?}:" <<<"$all"; then wanted+=("${t%\?}"); fi
    else
      wanted+=("$t")
    fi
  done
  ninja -C "$build" -j"${JOBS:-2}" "${wanted[@]}" || return 1
  rm -rf "$pack"
  mkdir -p "$pack/bin" "$pack/lib"
  local b
  for b in $binaries; do
    if [[ "$b" == *'?' ]]; then
      b="${b%\?}"
      [[ -f "$build/$b" ]] || continue
    fi
    strip --strip-debug -o "$pack/bin/$(basename "$b")" "$build/$b" || return 1
  done
  # Plain files under every name (links may not travel with the carried folder).
  local f lib path
  for f in "$build"/src/libkvferry.so*; do
    strip --strip-debug -o "$pack/lib/$(basename "$f")" "$(readlink -f "$f")" || return 1
  done
  for lib in liburing.so.2 libxxhash.so.0; do
    path="$(ldd "$pack/bin/"* 2>/dev/null | awk -v l="$lib" '$1 == l { p = $3 } END { print p }')"
    if [[ -n "$path" ]]; then cp -L "$path" "$pack/lib/$lib" || return 1; fi
  done
  cp "$gpu_lib_dir/gpu_lib.sh" "$@" "$pack/"
  local missing
  missing="$(LD_LIBRARY_PATH="$pack/lib" ldd "$pack/bin/"* | grep 'not found' || true)"
  if [[ -n "$missing" ]]; then
    echo "unresolved libraries: $missing" >&2
    return 1
  fi
  local size_kib
  size_kib="$(du -sk "$pack" | cut -f1)"
  echo "packed $pack: ${size_kib} KiB"
  ls -la "$pack/bin"
  if (( size_kib > 60 * 1024 )); then
    echo "too large to carry (limit 60 MiB)" >&2
    return 1
  fi
}

gpu_env() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
  out="${OUT:-$1}"
  mkdir -p "$out"
  export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export KVFERRY_TEST_PEER="$here/bin/kvferry_test_peer"
  export KVFERRY_CLI="$here/bin/kvferry"  # the CLI suites (tests/cli_runner.h) run this one
  kv="$here/bin/kvferry"
  gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"
  gpu_budget="${GPU_BUDGET_S:-560}"
  gpu_start=$(date +%s)
}

gpu_step() {
  local name="$1" limit="$2"
  shift 2
  local left=$(( gpu_budget - ($(date +%s) - gpu_start) ))
  if (( limit > left )); then
    echo "== $name: skipped (needs ${limit}s, ${left}s left of the budget)"
    return 0
  fi
  echo "== $name ($(date +%T), limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" >"$out/$name.log" 2>&1
  echo "   rc=$? -> $out/$name.log"
}

# One row per decode rank of every tp-demo log given (files named demo_<case>.log).
gpu_tp_demo_rows() {
  local f
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    python3 - "$f" <<'PY'
import json, sys, os
name = os.path.basename(sys.argv[1])[len("demo_"):-len(".log")]
for line in open(sys.argv[1]):
    try: j = json.loads(line)
    except Exception: continue
    if "decode_rank" in j:
        print(f"{name:18} d{j['decode_rank']} sources {j['sources']} {j['bytes']/1e6:9.1f} MB {j['ms']:9.2f} ms "
              f"{j['gbps']:7.1f} GB/s path {j['path']:6} verified {j['verified']} {j.get('error', '')[:80]}")
PY
  done
}
