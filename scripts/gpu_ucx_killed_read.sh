#!/usr/bin/env bash
# The ucx backend's bound on a lost peer, ON THE GPU MACHINE (its libucp is newer than
# Debian's 1.13). Packed with the binaries by scripts/gpu_prepare.sh (.device/):
#   prepare here:  bash scripts/gpu_prepare.sh
#   on the device: run(carry=[".device"], command="bash .device/gpu_ucx_killed_read.sh", kind="nvidia-h200")
# Builds nothing; uses that machine's own UCX. Runs the guarantees and failure suites over
# ucx (a peer process SIGKILLed or SIGSTOPped mid-transfer: every request must end within
# peer_timeout + 1 s, as kPeerLost or done with the right bytes) with UCX's default
# transports and with UCX_TLS=tcp, 3 rounds each, every round its own process. There a
# read in flight at the kill used to never end; the engine now ends what a closed link left
# unfinished 250 ms after the close whether or not UCX completes it (a request it ended so
# says "ended by the link's close; UCX had not completed it"). Says which libucp was loaded.
# Logs under $OUT; a short table last. Exit 0 when every round passed. At most ~560 s.
set -uo pipefail
source "$(dirname "$0")/gpu_lib.sh"
gpu_env /tmp/gpu_ucx_killed_read
tests="$(dirname "$kv")/kvferry_tests"
filter='Backends/Guarantees.*/ucx_*:Backends/Failure.*/ucx_*'
ucp="$(ldd "$(dirname "$kv")/../lib/libkvferry.so"* 2>/dev/null | awk '/libucp/ {print $3; exit}')"
(command -v ucx_info >/dev/null && ucx_info -v) >"$out/ucx_info.txt" 2>&1
rc=0
rows=()
for tls in default tcp; do
  for round in 1 2 3; do
    name="${tls}_$round"
    rm -f "$out/$name.log"
    if [[ $tls == tcp ]]; then
      gpu_step "$name" 90 env UCX_TLS=tcp "$tests" --gtest_filter="$filter"
    else
      gpu_step "$name" 90 "$tests" --gtest_filter="$filter"
    fi
    log="$out/$name.log"
    if [[ ! -f $log ]]; then
      rows+=("$name: skipped (budget)")
      continue
    fi
    ok=$(grep -c '^\[       OK \]' "$log")
    failed=$(grep -c '^\[  FAILED  \] B' "$log")
    grep -q '^\[  PASSED  \]' "$log" && [[ $failed -eq 0 ]] || rc=1
    first="$(grep -m1 -A2 ': Failure$' "$log" | tail -n +2 | tr '\n' ' ' | cut -c1-160)"
    rows+=("$name: $ok ok, $failed failed${first:+; first: $first}")
  done
done
echo "---- ucx: a lost peer's requests end within the bound ($(basename "${ucp:-no libucp}"); $(grep -m1 -i version "$out/ucx_info.txt" 2>/dev/null || echo 'no ucx_info'))"
printf '  %s\n' "${rows[@]}"
grep -h -E '^\[  FAILED  \] B' "$out"/*.log 2>/dev/null | sort | uniq -c | sed 's/^/  /'
echo "gpu_ucx_killed_read: $([[ $rc -eq 0 ]] && echo OK || echo FAILED) (logs in $out)"
exit "$rc"
