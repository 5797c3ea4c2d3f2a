#!/usr/bin/env bash
# Two hosts on one machine: two network namespaces joined by a veth pair (10.250.0.1 and
# 10.250.0.2 exist only inside them; nothing leaves them), `kvferry bench --serve` in one
# and the initiator in the other.
#
#   scripts/netns_test.sh [--build-dir DIR] [--backends "tcp ucx"] [--delay-us N] [--rate RATE]
#                         [--layers L --blocks B] [--no-cut]
#
# Checks, per backend: metadata over the control channel and a verified transfer across
# the boundary; shm is refused across it ("another host": the namespaces share the boot
# id, not the network namespace); cutting the link (ip link set down) fails the transfers
# within the peer timeout; after the link is back, a reloaded target serves again. Then a
# short check of the delay line (tests/tools/delay_line.cc, this kernel has no netem) that
# scripts/netns_rtt.sh measures round trips with: its 1 ms round trip is seen by TCP, and a
# verified transfer crosses it. --delay-us needs the kernel's netem qdisc, --rate its tbf
# qdisc. Prints a table last. Skips (exit 0, one line saying why) where namespaces cannot
# be created; the delay line check skips where there is no /dev/net/tun.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${KVFERRY_BUILD_DIR:-$ROOT/build}"
BACKENDS="tcp ucx"
DELAY_US=0
RATE=""
LAYERS=40
BLOCKS=256
CUT=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift ;;
    --backends) BACKENDS="$2"; shift ;;
    --delay-us) DELAY_US="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --layers) LAYERS="$2"; shift ;;
    --blocks) BLOCKS="$2"; shift ;;
    --no-cut) CUT=0 ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "netns_test: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

KVF="$BUILD_DIR/tools/kvferry"
DELAY_LINE="$BUILD_DIR/tests/kvferry_delay_line"
NETNS_NAME=netns_test
[[ -x "$KVF" ]] || { echo "netns_test: $KVF is not built" >&2; exit 2; }
skip() { echo "netns_test: SKIPPED: $*" >&2; exit 0; }
source "$ROOT/scripts/netns_lib.sh"
netns_setup

# Delay on each end is half the round trip; a rate limit on both directions.
if [[ "$DELAY_US" -gt 0 ]]; then
  half=$((DELAY_US / 2))
  for x in "$NS_A $IF_A" "$NS_B $IF_B"; do
    set -- $x
    ip netns exec "$1" tc qdisc add dev "$2" root netem delay "${half}us" 2>"$LOG/err" ||
      skip "--delay-us needs the netem qdisc, which this kernel lacks: $(cat "$LOG/err")"
  done
fi
if [[ -n "$RATE" ]]; then
  for x in "$NS_A $IF_A" "$NS_B $IF_B"; do
    set -- $x
    ip netns exec "$1" tc qdisc add dev "$2" root tbf rate "$RATE" burst 256kb latency 50ms 2>"$LOG/err" ||
      skip "--rate needs the tbf qdisc: $(cat "$LOG/err")"
  done
fi
rtt="$(rtt_us "$ADDR_B")"
echo "netns_test: $NS_A ($ADDR_A) <-> $NS_B ($ADDR_B), tcp rtt ${rtt} us, delay ${DELAY_US} us, rate ${RATE:-none}" >&2

params_a() { echo "--param tcp.bind=$ADDR_A --param ucx.devices=$IF_A"; }
params_b() { echo "--param tcp.bind=$ADDR_B --param ucx.devices=$IF_B"; }

fail=0
results=()
start_target "$ADDR_B" $(params_b) || exit 1
for b in $BACKENDS; do
  out="$LOG/bench-$b.json"
  if in_a timeout 300 "$KVF" bench --peer "$ADDR_B:$PORT" --backend "$b" --op both --layers "$LAYERS" \
      --blocks "$BLOCKS" --iterations 5 --warmup 1 --verify --json --small-round-trips 200 $(params_a) \
      >"$out" 2>"$LOG/bench-$b.err"; then
    while read -r line; do
      results+=("$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print("%-4s %-12s %8.2f GB/s  p50 %9.1f us  verified %s" % (j["backend"], j["op"], j.get("gbps",0), j.get("p50_us",0), j.get("verified","-")))' "$line")")
    done <"$out"
  else
    echo "netns_test: FAIL: bench over $b across namespaces: $(tail -3 "$LOG/bench-$b.err")" >&2
    fail=1
  fi
done

# shm must not be chosen across the boundary (nor would it work: abstract sockets are per
# network namespace).
if in_a timeout 60 "$KVF" bench --peer "$ADDR_B:$PORT" --backend shm --op read --layers 2 --blocks 4 \
    --iterations 1 --warmup 0 --small-round-trips 0 $(params_a) >"$LOG/shm.out" 2>"$LOG/shm.err"; then
  echo "netns_test: FAIL: shm moved data across network namespaces" >&2
  fail=1
elif grep -q "another host" "$LOG/shm.err"; then
  results+=("shm  refused across namespaces: $(grep -o "shm: peer is on another host" "$LOG/shm.err" | head -1)")
else
  echo "netns_test: FAIL: shm failed for another reason: $(tail -2 "$LOG/shm.err")" >&2
  fail=1
fi

if [[ "$CUT" -eq 1 ]]; then
  for b in $BACKENDS; do
    in_a timeout 120 "$KVF" bench --peer "$ADDR_B:$PORT" --backend "$b" --op read --layers "$LAYERS" \
      --blocks "$BLOCKS" --iterations 100000 --warmup 0 --small-round-trips 0 $(params_a) \
      >"$LOG/cut-$b.out" 2>"$LOG/cut-$b.err" &
    init=$!
    # Cut once the timed transfers run: the ceiling stream moves one request's bytes first.
    req_bytes=$((LAYERS * BLOCKS * 65536))
    rx0=$(in_a cat "/sys/class/net/$IF_A/statistics/rx_bytes")
    for _ in $(seq 600); do
      rx=$(in_a cat "/sys/class/net/$IF_A/statistics/rx_bytes")
      (( rx - rx0 > 2 * req_bytes )) && break
      kill -0 "$init" 2>/dev/null || break
      sleep 0.1
    done
    in_a ip link set "$IF_A" down
    cut_at=$(date +%s%N)
    rc=0
    wait "$init" || rc=$?
    took_ms=$(( ($(date +%s%N) - cut_at) / 1000000 ))
    in_a ip link set "$IF_A" up
    if [[ "$rc" -eq 0 ]]; then
      echo "netns_test: FAIL: $b: the initiator did not notice the cut link" >&2; fail=1
    else
      why="$(grep -io "peer lost[^;]*\|timed out[^;]*\|no progress[^;]*" "$LOG/cut-$b.err" | head -1)"
      results+=("$b  link cut: initiator failed after ${took_ms} ms (exit $rc): ${why:-$(tail -1 "$LOG/cut-$b.err")}")
    fi
    # The target of the cut session is reloaded; the link is back.
    stop_target
    start_target "$ADDR_B" $(params_b) || exit 1
    sleep 1
    if in_a timeout 120 "$KVF" bench --peer "$ADDR_B:$PORT" --backend "$b" --op read --layers 4 --blocks 64 \
        --iterations 3 --warmup 1 --verify --small-round-trips 0 $(params_a) >"$LOG/again-$b.out" 2>"$LOG/again-$b.err"; then
      results+=("$b  after the link came back and the target was reloaded: verified transfer OK")
    else
      echo "netns_test: FAIL: $b after recovery: $(tail -2 "$LOG/again-$b.err")" >&2; fail=1
    fi
  done
fi
stop_target

# The delay line: a 1 ms round trip seen by TCP, and a verified tcp transfer across it.
dl_start=$SECONDS
why="$(delay_line_unusable)"
if [[ -n "$why" ]]; then
  results+=("delay line: SKIPPED: $why")
elif ! delay_line_start 1000; then
  fail=1
else
  dl_rtt="$(rtt_us "$DL_ADDR_B")"
  if [[ "$dl_rtt" == "?" ]] || (( dl_rtt < 1000 || dl_rtt > 20000 )); then
    echo "netns_test: FAIL: the delay line's 1 ms round trip measured ${dl_rtt} us" >&2; fail=1
  fi
  start_target "$DL_ADDR_B" --param "tcp.bind=$DL_ADDR_B" || exit 1
  if in_a timeout 120 "$KVF" bench --peer "$DL_ADDR_B:$PORT" --backend tcp --op both --layers 4 --blocks 64 \
      --iterations 2 --warmup 1 --verify --json --small-round-trips 0 --param "tcp.bind=$DL_ADDR_A" \
      >"$LOG/delay_line_bench.json" 2>"$LOG/delay_line_bench.err" &&
      [[ "$(grep -c '"verified":true' "$LOG/delay_line_bench.json")" -eq 2 ]]; then
    results+=("delay line (1 ms set): tcp rtt ${dl_rtt} us; a verified tcp write and read across it OK ($((SECONDS - dl_start)) s)")
  else
    echo "netns_test: FAIL: tcp across the delay line: $(tail -2 "$LOG/delay_line_bench.err")" >&2; fail=1
  fi
  stop_target
  delay_line_stop
fi

echo "---- two namespaces, tcp rtt ${rtt} us (delay ${DELAY_US} us, rate ${RATE:-none}), ${LAYERS} x ${BLOCKS} blocks of 64 KiB"
printf '%s\n' "${results[@]}"
[[ "$fail" -eq 0 ]] && echo "netns_test: OK (logs in $LOG)" || echo "netns_test: FAILED (logs in $LOG)"
exit "$fail"
