#!/usr/bin/env bash
# How round-trip time changes cross-host transfers: two network namespaces (scripts/netns_lib.sh),
# `kvferry bench --serve` in one, the initiator in the other, over the veth pair and through
# the delay line (tests/tools/delay_line.cc: a user-space TUN delay line, since this kernel
# has no netem) at several round trips. Per path: the TCP round trip measured, then tcp with
# its default streams, tcp with one stream and ucx, write and read, verified. The delay line's
# own ceiling is measured in the same run: tcp with many streams through it at 0 added delay
# against the same over the veth pair. Not part of CI (minutes; scripts/netns_test.sh checks
# the delay line briefly).
#
#   scripts/netns_rtt.sh [--build-dir DIR] [--rtts "0 100 1000"] [--layers L --blocks B]
#                        [--iterations N] [--many-streams N]
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${KVFERRY_BUILD_DIR:-$ROOT/build}"
RTTS="0 100 1000"
LAYERS=40
BLOCKS=256
ITERATIONS=3
MANY=16
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift ;;
    --rtts) RTTS="$2"; shift ;;
    --layers) LAYERS="$2"; shift ;;
    --blocks) BLOCKS="$2"; shift ;;
    --iterations) ITERATIONS="$2"; shift ;;
    --many-streams) MANY="$2"; shift ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "netns_rtt: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

KVF="$BUILD_DIR/tools/kvferry"
DELAY_LINE="$BUILD_DIR/tests/kvferry_delay_line"
NETNS_NAME=netns_rtt
[[ -x "$KVF" ]] || { echo "netns_rtt: $KVF is not built" >&2; exit 2; }
skip() { echo "netns_rtt: SKIPPED: $*" >&2; exit 0; }
source "$ROOT/scripts/netns_lib.sh"
why="$(delay_line_unusable)"
[[ -n "$why" ]] && skip "$why"
netns_setup

fail=0
rows=()
# bench PATH RTT CASE BACKEND DEV_A ADDR_A [ARGS...]: one verified write+read case, one table row.
bench() {
  local path="$1" rtt="$2" case_name="$3" backend="$4" dev_a="$5" addr_a="$6"
  shift 6
  local out="$LOG/bench-${path// /_}-${case_name// /_}.json"
  if ! in_a timeout 600 "$KVF" bench --peer "$TARGET_ADDR:$PORT" --backend "$backend" --op both --layers "$LAYERS" \
      --blocks "$BLOCKS" --iterations "$ITERATIONS" --warmup 1 --verify --json --small-round-trips 0 \
      --param "tcp.bind=$addr_a" --param "ucx.devices=$dev_a" "$@" >"$out" 2>"${out%.json}.err"; then
    echo "netns_rtt: FAIL: $path $case_name: $(tail -2 "${out%.json}.err")" >&2
    fail=1
    rows+=("$(printf '%-13s %7s  %-17s  FAILED' "$path" "$rtt" "$case_name")")
    return
  fi
  rows+=("$(python3 - "$out" "$path" "$rtt" "$case_name" <<'EOF'
import json, sys
cases = {j["op"]: j for j in map(json.loads, open(sys.argv[1]))}
w, r = cases.get("write", {}), cases.get("read", {})
ok = w.get("verified") is True and r.get("verified") is True
print("%-13s %7s  %-17s %6.2f %6.2f   %6.2f %6.2f   %s" % (sys.argv[2], sys.argv[3], sys.argv[4],
      w.get("gbps", 0), r.get("gbps", 0), w.get("ceiling_gbps", 0), r.get("ceiling_gbps", 0),
      "yes" if ok else "NO"))
EOF
)")
  grep -c '"verified":true' "$out" | grep -qx 2 || fail=1
}

# path NAME RTT DEV_A DEV_B ADDR_A ADDR_B: every case over one path.
path() {
  local name="$1" rtt_set="$2" dev_a="$3" dev_b="$4" addr_a="$5" addr_b="$6"
  local rtt
  rtt="$(rtt_us "$addr_b")"
  echo "netns_rtt: $name: tcp round trip ${rtt} us" >&2
  TARGET_ADDR="$addr_b"
  start_target "$addr_b" --param "tcp.bind=$addr_b" --param "ucx.devices=$dev_b" || { fail=1; return; }
  if [[ "$rtt_set" == "0" ]]; then
    bench "$name" "$rtt" "tcp $MANY streams" tcp "$dev_a" "$addr_a" --streams "$MANY"
  fi
  bench "$name" "$rtt" "tcp (4 streams)" tcp "$dev_a" "$addr_a"
  bench "$name" "$rtt" "tcp 1 stream" tcp "$dev_a" "$addr_a" --streams 1
  bench "$name" "$rtt" "ucx" ucx "$dev_a" "$addr_a"
  stop_target
}

echo "netns_rtt: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
path "veth" 0 "$IF_A" "$IF_B" "$ADDR_A" "$ADDR_B"
for r in $RTTS; do
  delay_line_start "$r" || { fail=1; continue; }
  path "delay $r us" "$r" "$TUN_A" "$TUN_B" "$DL_ADDR_A" "$DL_ADDR_B"
  delay_line_stop
  echo "netns_rtt: delay line at $r us: $(grep -o 'dropped [0-9]*' "$LOG/delay_line.err" | tail -2 | tr '\n' ' ')" >&2
done

echo "---- two namespaces: ${LAYERS} x ${BLOCKS} scattered blocks of 64 KiB, ${ITERATIONS} timed requests per op," \
  "GB/s; 'rtt us' is the TCP round trip measured (1-byte echo, median of 50); the delay line" \
  "is a user-space TUN forwarder, not netem; 'stream' is the bench's ceiling (one raw TCP stream, same path, same run)"
printf '%-13s %7s  %-17s %6s %6s   %6s %6s   %s\n' path "rtt us" case write read "stream" "" verified
printf '%-13s %7s  %-17s %6s %6s   %6s %6s   %s\n' "" "" "" "" "" write read ""
printf '%s\n' "${rows[@]}"
echo "delay line counters: $(grep -c . "$LOG/delay_line.err") lines in $LOG/delay_line.err;" \
  "drops: $(grep -o 'dropped [0-9]*' "$LOG/delay_line.err" | awk '{s+=$2} END {print s+0}')"
[[ "$fail" -eq 0 ]] && echo "netns_rtt: OK (logs in $LOG)" || echo "netns_rtt: FAILED (logs in $LOG)"
exit "$fail"
