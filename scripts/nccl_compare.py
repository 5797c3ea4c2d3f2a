#!/usr/bin/env python3
"""NCCL baseline for the cuda_ipc acceptance: the same scattered KV blocks (layers x blocks
of BLOCK bytes, random block ids in a pool twice the request) sent GPU0 -> GPU1 by
torch.distributed batch_isend_irecv, one P2POp per block, two processes.

  python3 nccl_compare.py [--layers 40] [--blocks 1000] [--block-bytes 65536] [--iters 5]
                          [--mode per-layer|single] [--time-limit 120]

Modes (one iteration moves every block of every layer; the clock stops once all of its
requests are waited and both GPUs are synchronised):
  per-layer  one batch_isend_irecv group per layer (layers groups of blocks ops), all
             issued, then all waited. The default: a single group of 40,000 ops did not
             finish within 140 s on the H200 pair.
  single     one group of layers x blocks ops (the first version of this script).

--time-limit bounds the run (from after the imports): after each iteration the workers
stop early if another one would not fit; 5 s past the limit (room for the receiver's
check) the parent terminates them and prints an "aborted" line (exit code 124), so a
caller's own timeout (set it ~30 s above) never has to fire.

Prints one line, starting "nccl batch_isend_irecv": the mode, blocks, total bytes,
iterations, median ms, GB/s (10^9 bytes/s) and whether the receiver's bytes matched.
"""
import argparse
import os
import queue
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, args, port, result_q, deadline):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=2, device_id=torch.device("cuda", rank))
    pool_blocks = 2 * args.blocks
    elems = args.block_bytes // 2  # bf16 blocks
    g = torch.Generator().manual_seed(1234)
    ids = [torch.randperm(pool_blocks, generator=g)[: args.blocks] for _ in range(2)]
    shape = (args.layers, pool_blocks, elems)

    def reference(device):  # random bits, the same on both ranks (Philox, fixed seed)
        gd = torch.Generator(device=device).manual_seed(99)
        return torch.randint(-32768, 32767, shape, dtype=torch.int16, device=device, generator=gd)

    if rank == 0:
        pool = reference("cuda").view(torch.bfloat16)
    else:
        pool = torch.zeros(shape, dtype=torch.bfloat16, device="cuda")
    mine = (ids[0] if rank == 0 else ids[1]).tolist()
    op = dist.isend if rank == 0 else dist.irecv
    # The P2POps of one iteration, grouped as the mode says; built once.
    if args.mode == "per-layer":
        groups = [[dist.P2POp(op, pool[l, b], 1 - rank) for b in mine] for l in range(args.layers)]
    else:
        groups = [[dist.P2POp(op, pool[l, b], 1 - rank) for l in range(args.layers) for b in mine]]
    times = []
    for it in range(args.iters + 1):  # iteration 0 warms up (connections, buffers)
        torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        requests = []
        for ops in groups:  # every group issued before any is waited
            requests.extend(dist.batch_isend_irecv(ops))
        for r in requests:
            r.wait()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if it > 0:
            times.append(elapsed)
        # Both ranks decide alike (rank 0's view), so neither waits on a missing peer.
        go_on = torch.tensor([1 if time.time() + 1.5 * elapsed < deadline else 0], device="cuda")
        dist.broadcast(go_on, src=0)
        if it > 0 and not go_on.item():
            break
    ok = True
    if rank == 1:  # check against the sender's data, regenerated the same way
        ref = reference("cuda")
        got = pool.view(torch.int16)[:, ids[1].cuda()]
        ok = torch.equal(got, ref[:, ids[0].cuda()])
        result_q.put((times, ok))
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=40)
    p.add_argument("--blocks", type=int, default=1000)
    p.add_argument("--block-bytes", type=int, default=65536)
    p.add_argument("--iters", type=int, default=5, help="measured iterations (after one warm-up)")
    p.add_argument("--mode", choices=["per-layer", "single"], default="per-layer",
                   help="per-layer: one batch_isend_irecv group per layer; single: one group for all")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds for the whole run, then abort")
    p.add_argument("--port", type=int, default=29533)
    args = p.parse_args()
    if args.layers < 1 or args.blocks < 1 or args.block_bytes < 2 or args.block_bytes % 2 or args.iters < 1:
        p.error("layers, blocks and iters must be positive; block-bytes a positive even number")
    start = time.time()
    deadline = start + args.time_limit
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args, args.port, q, deadline)) for r in range(2)]
    for pr in procs:
        pr.start()
    n = args.layers * args.blocks
    total = n * args.block_bytes
    grouping = (f"{args.layers} groups of {args.blocks} ops" if args.mode == "per-layer"
                else f"1 group of {n} ops")
    result = None
    while result is None and time.time() < deadline + 5:  # room for the receiver's check
        try:
            result = q.get(timeout=1.0)
        except queue.Empty:
            if all(not pr.is_alive() for pr in procs):
                break  # both gone without a result: they failed (their errors are above)
    if result is None:
        for pr in procs:  # abort cleanly: ask, then insist
            if pr.is_alive():
                pr.terminate()
        for pr in procs:
            pr.join(5)
            if pr.is_alive():
                pr.kill()
                pr.join()
        why = (f"aborted after {time.time() - start:.0f} s (time limit {args.time_limit:.0f} s)"
               if time.time() >= deadline else "failed (a worker exited without a result)")
        print(f"nccl batch_isend_irecv ({args.mode}, {grouping}): {n} blocks of {args.block_bytes} B, "
              f"{total} bytes: {why}")
        sys.exit(124 if time.time() >= deadline else 1)
    for pr in procs:
        pr.join(30)
    times, ok = result
    median = statistics.median(times)
    print(f"nccl batch_isend_irecv ({args.mode}, {grouping}): {n} blocks of {args.block_bytes} B, "
          f"{total} bytes, {len(times)} iterations, median {median * 1e3:.2f} ms, "
          f"{total / median / 1e9:.2f} GB/s, {'verified' if ok else 'VERIFY FAILED'}")
    sys.exit(0 if ok else 3)


if __name__ == "__main__":
    main()
