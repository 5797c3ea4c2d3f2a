#!/usr/bin/env python3
"""An engine's KV connector: a prefill worker and a decode worker, requests arriving over time.

What an inference engine (vLLM, SGLang) does around kvferry, in one file:
- the prefill worker (a child process) prefills requests as they arrive, taking blocks
  from its block manager's free list, and tells the decode worker which of its blocks
  hold each request (in an engine the router carries this in the request's
  kv_transfer_params; here a kvferry notification does);
- the decode worker keeps a request table; for each prefilled request it takes blocks
  from its own free list and pulls ALL blocks of ALL layers in one asynchronous strided
  transfer tagged with the request id; the transfer's notification carries that tag back
  to the prefill worker, which frees that request's blocks when it arrives (after the
  last byte was read);
- the decode worker never blocks on one request: every pull completes into one
  CompletionQueue (tag = request id) that each scheduler tick drains, verifying and
  freeing what finished (an event loop would sleep on the queue's fileno());
- finally the prefill worker dies (SIGKILL) with a request announced: the decode worker
  sees kvferry.PeerLost for it within the peer timeout, marks it for local recompute, and
  refuses further pulls from that peer quickly.

    python3 connector.py --requests 24
"""

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

import kvferry

GEOMETRY = dict(layers=8, kv_heads=4, head_dim=64, block_tokens=16, dtype="bf16")


def make_pool(agent: kvferry.Agent, blocks: int):
    layout = kvferry.KvLayout.create(kvferry.KvGeometry(**GEOMETRY), "vllm-nhd", blocks)
    g = layout.geometry
    tensors = [np.zeros((2, blocks, g.block_tokens, g.kv_heads, g.head_dim), dtype=np.uint16) for _ in range(g.layers)]
    agent.register_memory(tensors)  # one region per layer tensor
    return tensors, kvferry.LocalKvPool.attach(agent, kvferry.KvPool.from_tensors(layout, tensors))


def words(tensor, blocks_total):
    return tensor.view(np.uint64).reshape(2, blocks_total, -1)  # [K/V, block, words]


def request_data(rid: int, layer: int, count: int, width: int) -> np.ndarray:
    """What prefill writes for request `rid`: [2, count, width] words naming request, layer, position."""
    pos = np.arange(count, dtype=np.uint64)[None, :, None]
    part = np.arange(2, dtype=np.uint64)[:, None, None]
    word = np.arange(width, dtype=np.uint64)[None, None, :]
    return (np.uint64(rid) << np.uint64(40)) | (np.uint64(layer) << np.uint64(32)) | (part << np.uint64(31)) \
        | (pos << np.uint64(16)) | word


def prefill_worker(args) -> int:
    rng = np.random.default_rng(11)
    blocks_total = 256
    with kvferry.Agent("prefill-0", peer_timeout=args.peer_timeout) as agent:
        tensors, _ = make_pool(agent, blocks_total)
        print(json.dumps({"port": agent.listen("127.0.0.1", 0)}), flush=True)
        while not agent.wait_for_notifications(0.1) or not any(
                n.message == b"hello" for n in agent.take_notifications()):
            pass  # the decode worker connected and pushed its metadata
        free = collections.deque(range(blocks_total))
        table = {}  # request id -> our blocks, until decode's transfer notification frees them

        def drain(timeout: float) -> None:
            if agent.wait_for_notifications(timeout):
                for note in agent.take_notifications():
                    free.extend(table.pop(note.tag))  # the pull's tag is the request id

        for rid in range(args.requests + 1):
            drain(rng.uniform(0.0, 0.02))  # requests arrive over time
            tokens = int(rng.integers(16, 600))
            count = -(-tokens // GEOMETRY["block_tokens"])
            deadline = time.monotonic() + 10
            while len(free) < count and time.monotonic() < deadline:
                drain(0.05)  # wait for decode to finish pulling older requests
            blocks = np.array([free.popleft() for _ in range(count)], dtype=np.uint32)
            for layer, t in enumerate(tensors):  # "prefill": the request's KV lands in its blocks
                w = words(t, blocks_total)
                w[:, blocks] = request_data(rid, layer, count, w.shape[2])
            table[rid] = blocks
            agent.notify("decode-0", json.dumps({"request": rid, "tokens": tokens, "blocks": blocks.tolist()}), tag=rid)
        # The last request is announced; the crash happens before decode can pull it.
        time.sleep(3600)
    return 0


def decode_worker(args) -> int:
    prefill = subprocess.Popen([sys.executable, __file__, "--role", "prefill", "--requests", str(args.requests),
                                "--peer-timeout", str(args.peer_timeout)], stdout=subprocess.PIPE, text=True)
    port = json.loads(prefill.stdout.readline())["port"]
    blocks_total = 512
    done = failed = 0
    with kvferry.Agent("decode-0", peer_timeout=args.peer_timeout) as agent:
        tensors, local = make_pool(agent, blocks_total)
        peer = agent.fetch_remote("127.0.0.1", port)
        link = local.link(agent, peer)  # geometry checked once
        agent.notify(peer, "hello")
        free = collections.deque(range(blocks_total))
        inflight = {}  # request id -> (TransferRequest, our blocks, started)
        completions = kvferry.CompletionQueue()  # every pull ends here, tagged with its request id
        waiting = collections.deque()  # announced, not yet pulled
        t_end = time.monotonic() + 60
        while (done + failed < args.requests + 1) and time.monotonic() < t_end:
            # Scheduler tick 1: new requests from the prefill worker.
            if agent.wait_for_notifications(0.01):
                for note in agent.take_notifications():
                    waiting.append(json.loads(note.message))
            # The prefill worker crashes with the last request announced, not yet pulled.
            if waiting and waiting[0]["request"] == args.requests and not inflight and prefill.poll() is None:
                prefill.send_signal(signal.SIGKILL)
                prefill.wait()
                print(f"decode: prefill-0 killed with request {args.requests} announced", flush=True)
            # Tick 2: start pulls for requests we have room for.
            while waiting and len(free) >= len(waiting[0]["blocks"]):
                if waiting[0]["request"] == args.requests and prefill.poll() is None:
                    break  # the crash: this one is pulled only once its prefill worker is gone
                req = waiting.popleft()
                theirs = np.asarray(req["blocks"], dtype=np.uint32)
                ours = np.array([free.popleft() for _ in range(len(theirs))], dtype=np.uint32)
                try:
                    plan = link.plan(kvferry.READ, theirs, ours)
                    transfer = link.create_transfer(agent, plan, notification=f"done {req['request']}",
                                                    tag=req["request"])
                    transfer.post(completions)
                    inflight[req["request"]] = (transfer, ours, time.perf_counter())
                except kvferry.PeerLost as e:
                    failed += 1
                    free.extend(ours)
                    print(f"decode: request {req['request']}: prefill lost ({type(e).__name__}: {e}); "
                          f"recomputing locally", flush=True)
            # Tick 3: what finished since the last tick (never blocks).
            for c in completions.drain():
                rid = c.tag
                transfer, ours, started = inflight.pop(rid)
                if c.ok:
                    for layer, t in enumerate(tensors):
                        got = words(t, blocks_total)[:, ours]
                        if not np.array_equal(got, request_data(rid, layer, len(ours), got.shape[2])):
                            raise SystemExit(f"decode: request {rid}: layer {layer} differs")
                    ms = (time.perf_counter() - started) * 1e3
                    print(f"decode: request {rid}: {len(ours)} blocks x {GEOMETRY['layers']} layers in {ms:.2f} ms, "
                          f"verified", flush=True)
                    done += 1
                else:
                    err = c.error()
                    print(f"decode: request {rid}: {type(err).__name__}: {err}; recomputing locally", flush=True)
                    failed += 1
                free.extend(ours)  # decode would run here; the blocks return to our free list
        agent.deregister_memory(tensors)
    if prefill.poll() is None:
        prefill.kill()
        prefill.wait()
    print(f"decode: {done} requests pulled and verified, {failed} lost with their prefill worker", flush=True)
    return 0 if done == args.requests and failed == 1 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", choices=["decode", "prefill"], default="decode")
    parser.add_argument("--requests", type=int, default=24, help="requests that complete before the crash")
    parser.add_argument("--peer-timeout", type=float, default=2.0, help="seconds of silence before a peer is lost")
    args = parser.parse_args()
    return prefill_worker(args) if args.role == "prefill" else decode_worker(args)


if __name__ == "__main__":
    sys.exit(main())
