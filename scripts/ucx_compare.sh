#!/usr/bin/env bash
# The same shapes as `kvferry bench --backend shm`, through UCX's own benchmark, for
# docs/benchmarks.md: one-sided put/get of 64 KiB messages (10,240 per run = 40 layers x
# 256 blocks) and 8-byte put latency, between two processes over shared memory
# (UCX_TLS=sm: sysv/posix/cma), on heap memory. Needs Debian's ucx-utils.
set -euo pipefail
command -v ucx_perftest >/dev/null || { echo "ucx_perftest missing: apt-get install ucx-utils" >&2; exit 1; }
export UCX_TLS=${UCX_TLS:-sm}
port=${UCX_PORT:-13377}

run() {  # run TEST SIZE ITERS
  ucx_perftest -p "$port" >/dev/null 2>&1 &
  local server=$!
  sleep 0.5
  echo "== UCX_TLS=$UCX_TLS ucx_perftest 127.0.0.1 -p $port -t $1 -s $2 -n $3"
  timeout 120 ucx_perftest 127.0.0.1 -p "$port" -t "$1" -s "$2" -n "$3" -w 100 2>&1 | tail -n 3
  wait "$server" 2>/dev/null || true
}

run ucp_put_bw 65536 10240
run ucp_get 65536 10240
run ucp_put_lat 8 100000
