"""A prefill rank for the Python TP tests, in its own process: a TpSender over a vllm-nhd
pool of its heads filled from `--seed` (tp_data() below), sending each request of
`--requests` in two chunks, then serving until "quit" or `--lifetime` seconds.

Prints one JSON line {"port", "name"} once it listens, and "sent <request>" per request
delivered."""

import argparse
import json
import sys
import time

import numpy as np

import kvferry

LAYERS, HEAD_DIM, BLOCK_TOKENS, BLOCKS = 2, 64, 16, 16


def tp_layout(heads: int, arrangement: str) -> kvferry.KvLayout:
    geometry = kvferry.KvGeometry(layers=LAYERS, kv_heads=heads, head_dim=HEAD_DIM, block_tokens=BLOCK_TOKENS)
    return kvferry.KvLayout.create(geometry, arrangement, BLOCKS)


def tp_data(seed: int, rank: int, heads: int):
    """The prefill rank's tensors: [2, blocks, tokens, heads, dim] of uint16, one per layer."""
    rng = np.random.default_rng(seed * 100 + rank)
    return [rng.integers(0, 2**16, (2, BLOCKS, BLOCK_TOKENS, heads, HEAD_DIM), dtype=np.uint16) for _ in range(LAYERS)]


PREFILL_TABLE = np.arange(BLOCKS, dtype=np.uint32)[::-1].copy()  # scattered: the pool's blocks backwards


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rank", type=int, required=True)
    p.add_argument("--prefill-tp", type=int, required=True)
    p.add_argument("--decode-tp", type=int, required=True)
    p.add_argument("--kv-heads", type=int, required=True)
    p.add_argument("--tokens", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--backend", default="tcp")
    p.add_argument("--requests", default="r1")
    p.add_argument("--lifetime", type=float, default=60.0)
    args = p.parse_args()
    heads = kvferry.tp_rank_heads(args.kv_heads, args.prefill_tp, args.rank).count
    tensors = tp_data(args.seed, args.rank, heads)
    with kvferry.Agent(f"tp-prefill-{args.rank}", backends=[args.backend]) as agent:
        agent.register_memory(tensors)
        pool = kvferry.KvPool.from_tensors(tp_layout(heads, "vllm-nhd"), tensors)
        sender = kvferry.TpSender(agent, pool, kvferry.TpGroups(args.kv_heads, args.prefill_tp, args.decode_tp),
                                  args.rank, staging=kvferry.TpStagingOptions(slot_bytes=1 << 20, host_slots=4,
                                                                              device_slots=0))
        port = agent.listen("127.0.0.1", 0)
        print(json.dumps({"port": port, "name": agent.name}), flush=True)
        requests = args.requests.split(",")
        cut = args.tokens // 2
        for r in requests:  # two prefill chunks
            sender.send(r, PREFILL_TABLE, 0, cut, False)
            sender.send(r, PREFILL_TABLE, cut, args.tokens - cut, True)
        for r in requests:
            sender.wait(r, args.lifetime)
            print(f"sent {r}", flush=True)
        end = time.monotonic() + args.lifetime
        while time.monotonic() < end:
            sender.progress()
            if any(n.message == b"quit" for n in sender.take_other_notifications()):
                return 0
            agent.wait_for_notifications(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
