#!/usr/bin/env bash
# The heterogeneous-TP acceptance runs on a host: `kvferry bench --tp` for 4->2 and 2->4,
# vllm-hnd and vllm-nhd, over shm and tcp (dram pools, Mistral-Small-3.1, 4,096 tokens).
# Each run prints the path chosen by auto, each path's ratio to the contiguous ceiling and
# 'vs plain' (the same prompt moved 1 -> 1 as one plain transfer, same run).
#
#   scripts/tp_host_bench.sh [KVFERRY_BINARY] [extra bench args...]
#
# Run it on a quiet machine: every figure is a same-run ratio, but the ranks share the cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KVF="${1:-$ROOT/build/tools/kvferry}"
shift || true
for backend in shm tcp; do
  for groups in 4:2 2:4; do
    for layout in vllm-hnd vllm-nhd; do
      echo "== $backend $groups $layout $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
      "$KVF" bench --tp "$groups" --backend "$backend" --tp-src-layout "$layout" --tp-dst-layout "$layout" \
        --tp-tokens 4096 --iterations 3 --warmup 1 "$@" || echo "FAILED: $backend $groups $layout"
    done
  done
done
