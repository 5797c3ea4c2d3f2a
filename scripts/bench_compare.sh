#!/usr/bin/env bash
# scripts/bench_compare.sh BEFORE AFTER [PAIRS] [BACKENDS]
# Runs the standard host-memory bench (40 layers x 256 scattered 64 KiB blocks, verified,
# fixed seed) with two builds of kvferry alternately -- before, after, before, after -- so
# that both see the same machine state, and prints each run's write/read GB/s, the ratio to
# its same-run ceiling, the load average, and the CPU seconds of the whole bench (both
# processes). BEFORE and AFTER are folders holding bin/kvferry (and lib/ with its libkvferry,
# when packed). Used for "no regression" checks of shared code; builds nothing.
# MEM=vram (a GPU machine with two GPUs): the GPU acceptance shape instead, 40 layers x
# 1,000 scattered 64 KiB blocks GPU0 -> GPU1, one request at a time (BACKENDS: cuda_ipc).
set -uo pipefail
before="$1" after="$2" pairs="${3:-5}" backends="${4:-tcp shm}"
shape=(--block-size 64KiB --layers 40 --blocks 256 --pattern scattered --verify --iterations 20 --seed 7
       --small-round-trips 0)
if [[ "${MEM:-dram}" == vram ]]; then
  shape=(--mem vram --device 0 --peer-device 1 --layers 40 --blocks 1000 --block-size 64KiB --pattern scattered
         --verify --iterations 10 --warmup 2 --ceiling-reps 3 --seed 7)
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
printf '%-6s %-4s %-7s %-5s %9s %7s %9s %7s %7s %s\n' which pair backend load write_GBs w_ratio \
  read_GBs r_ratio cpu_s verified
for ((i = 1; i <= pairs; i++)); do
  for backend in $backends; do
    for which in before after; do
      dir="$before"; [[ $which == after ]] && dir="$after"
      load="$(cut -d' ' -f1 /proc/loadavg)"
      TIMEFORMAT='cpu %U %S'
      { time LD_LIBRARY_PATH="$dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        timeout 300 "$dir/bin/kvferry" bench --backend "$backend" "${shape[@]}" --json >"$log" 2>&1; } 2>>"$log"
      python3 - "$log" "$which" "$i" "$backend" "$load" <<'PY'
import json, re, sys
path, which, pair, backend, load = sys.argv[1:]
text = open(path).read()
rows = {}
for line in text.splitlines():
    if line.startswith("{"):
        try:
            o = json.loads(line)
            rows[o.get("op")] = o
        except ValueError:
            pass
m = re.search(r"cpu ([0-9.]+) ([0-9.]+)", text)
cpu = float(m.group(1)) + float(m.group(2)) if m else float("nan")
g = lambda op, k: float(rows.get(op, {}).get(k, float("nan")))
ok = bool(rows) and all(o.get("verified", False) for o in rows.values())
print(f"{which:<6} {pair:<4} {backend:<7} {load:<5} {g('write','gbps'):9.3f} {g('write','ratio'):7.3f} "
      f"{g('read','gbps'):9.3f} {g('read','ratio'):7.3f} {cpu:7.1f} {ok}")
if not rows:
    print(text[-1500:])
PY
    done
  done
done
