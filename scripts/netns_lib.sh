# Two hosts on one machine, for scripts/netns_test.sh and scripts/netns_rtt.sh (sourced,
# not run): two network namespaces joined by a veth pair (10.250.0.1 <-> 10.250.0.2) and,
# on request, by a delay line (10.251.0.1 <-> 10.251.0.2): tests/tools/delay_line.cc, one
# TUN device in each namespace and a user-space process holding every packet for half the
# round trip (this kernel has no netem). Nothing leaves the namespaces.
#
# The caller sets KVF (the kvferry tool), DELAY_LINE (the delay line tool) and NETNS_NAME
# (a word for messages), defines skip() (print why, exit 0), and calls netns_setup.

TAG="$$"
NS_A="kvfA$TAG"; NS_B="kvfB$TAG"; IF_A="kvfa$TAG"; IF_B="kvfb$TAG"
TUN_A="kvfta$TAG"; TUN_B="kvftb$TAG"
ADDR_A=10.250.0.1; ADDR_B=10.250.0.2      # the veth pair
DL_ADDR_A=10.251.0.1; DL_ADDR_B=10.251.0.2  # the delay line
PORT=7500
LOG="$(mktemp -d /tmp/kvferry-netns.XXXXXX)"
TARGET_PID=""
DL_PID=""

in_a() { ip netns exec "$NS_A" "$@"; }
in_b() { ip netns exec "$NS_B" "$@"; }

netns_cleanup() {
  stop_target
  delay_line_stop
  ip netns del "$NS_A" 2>/dev/null
  ip netns del "$NS_B" 2>/dev/null
  ip link del "$IF_A" 2>/dev/null
  true
}

netns_setup() {
  [[ "$(id -u)" -eq 0 ]] || skip "needs root to create network namespaces"
  command -v ip >/dev/null || skip "no 'ip' command (iproute2)"
  trap netns_cleanup EXIT
  ip netns add "$NS_A" 2>"$LOG/err" || skip "cannot create a network namespace: $(cat "$LOG/err")"
  ip netns add "$NS_B" || skip "cannot create a second network namespace"
  ip link add "$IF_A" type veth peer name "$IF_B" 2>"$LOG/err" || skip "cannot create a veth pair: $(cat "$LOG/err")"
  ip link set "$IF_A" netns "$NS_A" && ip link set "$IF_B" netns "$NS_B" || skip "cannot move the veth ends"
  in_a ip addr add "$ADDR_A/24" dev "$IF_A"; in_b ip addr add "$ADDR_B/24" dev "$IF_B"
  for ns in "$NS_A" "$NS_B"; do ip netns exec "$ns" ip link set lo up; done
  in_a ip link set "$IF_A" up; in_b ip link set "$IF_B" up
}

# Why the delay line cannot run here ("" : it can).
delay_line_unusable() {
  [[ -c /dev/net/tun ]] || { echo "no /dev/net/tun (the kernel's TUN driver is missing)"; return; }
  [[ -x "$DELAY_LINE" ]] || { echo "$DELAY_LINE is not built"; return; }
  echo ""
}

# delay_line_start RTT_US: a fresh delay line between the namespaces with that round trip.
delay_line_start() {
  delay_line_stop
  "$DELAY_LINE" --netns-a "/run/netns/$NS_A" --netns-b "/run/netns/$NS_B" --dev-a "$TUN_A" --dev-b "$TUN_B" \
    --rtt-us "$1" >"$LOG/delay_line.out" 2>>"$LOG/delay_line.err" &
  DL_PID=$!
  for _ in $(seq 50); do
    grep -q "^ready" "$LOG/delay_line.out" 2>/dev/null && break
    kill -0 "$DL_PID" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q "^ready" "$LOG/delay_line.out" 2>/dev/null; then
    echo "$NETNS_NAME: the delay line did not start: $(tail -2 "$LOG/delay_line.err")" >&2
    DL_PID=""
    return 1
  fi
  in_a ip addr add "$DL_ADDR_A" peer "$DL_ADDR_B" dev "$TUN_A" && in_a ip link set "$TUN_A" up &&
    in_b ip addr add "$DL_ADDR_B" peer "$DL_ADDR_A" dev "$TUN_B" && in_b ip link set "$TUN_B" up
}

# Stops the delay line (its devices vanish with it); its counters go to $LOG/delay_line.err.
delay_line_stop() {
  [[ -z "$DL_PID" ]] && return 0
  kill -TERM "$DL_PID" 2>/dev/null
  wait "$DL_PID" 2>/dev/null
  DL_PID=""
}

# rtt_us ADDR: median TCP round trip (us) of 1-byte messages from namespace A to ADDR in
# namespace B, or "?".
rtt_us() {
  local port=$((PORT + 500))
  ip netns exec "$NS_B" python3 "$ROOT/scripts/netns_rtt_probe.py" serve "$1" "$port" >/dev/null 2>&1 &
  local srv=$!
  local r=""
  for _ in $(seq 20); do
    r="$(in_a python3 "$ROOT/scripts/netns_rtt_probe.py" ping "$1" "$port" 50 2>/dev/null)" && break
    sleep 0.1
  done
  kill "$srv" 2>/dev/null
  wait "$srv" 2>/dev/null
  echo "${r:-?}"
}

# start_target ADDR [PARAMS...]: `kvferry bench --serve` in namespace B on a fresh port.
start_target() {
  local addr="$1"
  shift
  PORT=$((PORT + 1))
  # Not through in_b: $! must be the target itself (ip netns exec execs it), not a subshell.
  ip netns exec "$NS_B" "$KVF" bench --serve --listen "$addr:$PORT" "$@" >"$LOG/target.out" 2>"$LOG/target.err" &
  TARGET_PID=$!
  for _ in $(seq 100); do
    grep -q "listening" "$LOG/target.err" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$NETNS_NAME: the target did not start: $(cat "$LOG/target.err")" >&2
  return 1
}
# SIGTERM, then SIGKILL after 3 s (a target that served sessions can be slow to stop).
stop_target() {
  [[ -z "$TARGET_PID" ]] && return 0
  kill "$TARGET_PID" 2>/dev/null
  for _ in $(seq 30); do
    kill -0 "$TARGET_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$TARGET_PID" 2>/dev/null
  wait "$TARGET_PID" 2>/dev/null
  TARGET_PID=""
}
