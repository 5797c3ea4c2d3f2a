#!/usr/bin/env python3
"""KV client: pulls the KV blocks of an N-token prompt from vram_server.py, step after step.

The decode side of disaggregated inference, reduced to its transfer work:
- one registration per layer tensor;
- the server's metadata fetched and its pool checked once (KvLink), and both pools'
  lanes (one per layer, or per layer and K/V) prepared once, not per transfer;
- per step, ALL blocks of ALL layers in ONE asynchronous strided transfer made straight
  from two numpy uint32 block-id arrays (the prefill scheduler's blocks -> ours, used in
  place: the request costs O(layers + blocks), never O(layers x blocks)), posted, then
  waited for;
- the transfer's own notification carries the request id to the server (no second
  message; --notify none leaves it out); every byte of every moved block is checked,
  after poisoning the destination, outside the timed part (on the GPU for torch tensors:
  milliseconds, not the half second of a host-side check that would leave the GPUs idle
  between steps, as `kvferry bench` never does).

What a step times (the same as `kvferry bench --mem vram --fresh-requests`): create the
request from the block ids + post + wait until done. Poisoning the destination, drawing
block ids and verifying are outside it. Each step also prints where its time went: create,
post (inside post()), the transfer as the library saw it (post until its completion was
noticed) and the wake-up (completion noticed -> wait() returned here).

    python3 vram_client.py --mem vram --device 1 --num-tokens 4096 --iterations 10
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np

import kvferry
from kv_example import Pattern, add_geometry_options, agent_backends, allocate_tensors, layout_of, poison
from vram_server import SEED_KEY


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_geometry_options(parser)
    parser.add_argument("--num-tokens", type=int, default=4096, help="prompt length: its blocks move each step")
    parser.add_argument("--iterations", type=int, default=10, help="measured steps")
    parser.add_argument("--warmup", type=int, default=1, help="steps before the measured ones")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a step may take")
    parser.add_argument("--notify", choices=["transfer", "none"], default="transfer",
                        help="transfer: the request id rides on the transfer as its notification (the server "
                             "learns the blocks are free); none: no notification, as `kvferry bench` times it")
    parser.add_argument("--same-blocks", action="store_true",
                        help="draw the block ids once and move the same blocks every step, as `kvferry bench` "
                             "does (default: fresh scattered ids per step, as a scheduler hands them out)")
    parser.add_argument("--verify", choices=["every", "last"], default="every",
                        help="every: poison and check every step (default); last: only the last step, the "
                             "others run back to back as `kvferry bench`'s timed requests do")
    parser.add_argument("--check", choices=["device", "host"], default="device",
                        help="where torch tensors are checked: on their GPU (default) or with numpy on the "
                             "host (slow: the GPUs sit idle for ~0.5 s between steps)")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="idle milliseconds before each step, outside the timed part")
    parser.add_argument("--json", action="store_true", help="a JSON summary as the last line")
    args = parser.parse_args()

    layout = layout_of(args)
    tensors = allocate_tensors(layout, args.mem, args.device)
    sync = (lambda: __import__("torch").cuda.synchronize(args.device)) if args.mem == "vram" else (lambda: None)

    with kvferry.Agent("client", backends=agent_backends(args)) as agent:
        agent.register_memory(tensors)  # one region per layer tensor
        local = kvferry.LocalKvPool.attach(agent, kvferry.KvPool.from_tensors(layout, tensors))
        peer = agent.fetch_remote(args.ip, args.port)  # metadata both ways, once
        link = local.link(agent, peer)  # the pools' geometry checked once; raises on a mismatch
        remote_layout = link.remote_pool.layout
        pattern = Pattern(remote_layout, int(agent.remote_metadata_entry(peer, SEED_KEY)))

        blocks = layout.blocks_for_tokens(args.num_tokens)
        if blocks > min(layout.blocks, remote_layout.blocks):
            raise SystemExit(f"{args.num_tokens} tokens need {blocks} blocks; the pools hold "
                             f"{layout.blocks} (ours) and {remote_layout.blocks} (server)")
        step_bytes = blocks * layout.block_bytes_all_layers()
        print(f"client: {peer} over {args.backend or 'the cheapest backend'}: {args.num_tokens} tokens = "
              f"{blocks} blocks x {layout.geometry.layers} layers = {step_bytes / 2**20:.1f} MiB per step", flush=True)

        # Strided form: our lanes were prepared by attach(), the server's are prepared here once.
        our_lanes = local.lanes
        their_lanes = agent.prepare_remote_lanes(peer, link.remote_pool.block_lanes())
        rng = np.random.default_rng(7)
        step_ms, create_post_us, bad_total, backend, checked = [], [], 0, "", 0
        # gap: the previous step's end -> this step's start (its check, poisoning, a pause): no copy runs.
        split = {"create_us": [], "post_us": [], "after_post_ms": [], "transfer_ms": [], "wake_us": [], "gap_ms": []}
        t2 = None
        theirs = ours = None
        steps = args.warmup + args.iterations
        for step in range(steps):
            # Block ids as schedulers hand them out: scattered over both pools.
            if theirs is None or not args.same_blocks:
                theirs = rng.choice(remote_layout.blocks, blocks, replace=False).astype(np.uint32)
                ours = rng.choice(layout.blocks, blocks, replace=False).astype(np.uint32)
            verify = args.verify == "every" or step == steps - 1
            if verify:
                poison(tensors, layout, ours)
            sync()
            if args.pause_ms > 0:
                time.sleep(args.pause_ms / 1e3)
            note = f"request {step}" if args.notify == "transfer" else None

            t0 = time.perf_counter()
            gap_ms = (t0 - t2) * 1e3 if t2 is not None else None
            # Rebinding `request` releases the previous step's request inside the timed part,
            # as the bench's `req = create_transfer(...)` does.
            request = agent.create_transfer(kvferry.READ, our_lanes, their_lanes, ours, theirs, notification=note,
                                            tag=step, backend=args.backend)
            tc = time.perf_counter()
            request.post()
            t1 = time.perf_counter()
            request.wait(args.timeout)
            t2 = time.perf_counter()
            seconds = t2 - t0

            bad = pattern.check(tensors, ours, theirs, on_host=args.check == "host") if verify else 0
            bad_total += bad
            checked += verify
            t = request.telemetry()
            backend = t.backend
            # post() started about post_ns before t1; transfer_ns runs from there to the moment the
            # library noticed the end; what remains until wait() returned is the wake-up.
            wake_us = ((t2 - t1) - (t.transfer_ns - t.post_ns) / 1e9) * 1e6
            label = "warm-up" if step < args.warmup else f"step {step - args.warmup}"
            print(f"{label}: {step_bytes / seconds / 1e9:8.2f} GB/s  {seconds * 1e3:8.3f} ms  "
                  f"create+post {(t1 - t0) * 1e6:7.1f} us (create {(tc - t0) * 1e6:6.1f}, post {t.post_ns / 1e3:6.1f})  "
                  f"transfer {t.transfer_ns / 1e6:6.3f} ms  wake-up {wake_us:6.1f} us  gap {gap_ms or 0:7.1f} ms  "
                  f"{t.descriptors_requested} -> {t.descriptors_merged} "
                  f"descriptors over {t.backend}  "
                  f"{'not checked' if not verify else 'verified' if bad == 0 else f'{bad} BLOCKS DIFFER'}", flush=True)
            if step >= args.warmup:
                step_ms.append(seconds * 1e3)
                create_post_us.append((t1 - t0) * 1e6)
                split["create_us"].append((tc - t0) * 1e6)
                split["post_us"].append(t.post_ns / 1e3)
                split["after_post_ms"].append((t2 - t1) * 1e3)
                split["transfer_ms"].append(t.transfer_ns / 1e6)
                split["wake_us"].append(wake_us)
                if gap_ms is not None:
                    split["gap_ms"].append(gap_ms)

        agent.deregister_memory(tensors)

    # The bench's statistic: the median step time (upper middle of an even count), as GB/s.
    median_ms = sorted(step_ms)[len(step_ms) // 2] if step_ms else float("inf")
    median = step_bytes / (median_ms / 1e3) / 1e9
    what = "every step" if args.verify == "every" else "the last step"
    print(f"client: median {median:.2f} GB/s ({median_ms:.3f} ms) over {len(step_ms)} steps, create+post "
          f"{statistics.median(create_post_us) if create_post_us else 0:.1f} us (median), "
          f"{f'every byte of {what} verified' if bad_total == 0 else f'{bad_total} blocks differ'}", flush=True)
    if args.json:
        print(json.dumps({"gbps_median": round(median, 3), "median_ms": round(median_ms, 4),
                          "gbps": [round(step_bytes / (ms / 1e3) / 1e9, 3) for ms in step_ms],
                          "create_post_us_median": round(statistics.median(create_post_us), 1) if create_post_us else None,
                          "bytes": step_bytes, "backend": backend, "notify": args.notify,
                          "same_blocks": args.same_blocks, "pool_blocks": layout.blocks,
                          "verify": args.verify, "check": args.check, "pause_ms": args.pause_ms,
                          "steps_checked": checked,
                          **{k + "_median": round(statistics.median(v), 4) for k, v in split.items() if v},
                          "timed": "create (strided, from numpy block ids) + post + wait", "verified": bad_total == 0}))
    return 0 if bad_total == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
