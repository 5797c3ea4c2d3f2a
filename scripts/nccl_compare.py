#!/usr/bin/env python3
"""NCCL baseline for the cuda_ipc acceptance: the same scattered KV blocks (layers x blocks
of BLOCK bytes, random block ids in a pool twice the request) sent GPU0 -> GPU1 by
torch.distributed batch_isend_irecv, one P2POp per block, two processes.

  python3 nccl_compare.py [--layers 40] [--blocks 1000] [--block-bytes 65536] [--iters 5]

Prints one line: "nccl batch_isend_irecv: N blocks of B bytes, median X ms, Y GB/s, verified".
"""
import argparse, os, statistics, time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, args, port, result_q):
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
    mine = ids[0] if rank == 0 else ids[1]
    views = [pool[l, b] for l in range(args.layers) for b in mine.tolist()]
    times = []
    for it in range(args.iters + 1):
        ops = [dist.P2POp(dist.isend if rank == 0 else dist.irecv, v, 1 - rank) for v in views]
        torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        for r in dist.batch_isend_irecv(ops):
            r.wait()
        torch.cuda.synchronize()
        if it > 0:
            times.append(time.perf_counter() - t0)
    ok = True
    if rank == 1:  # check against the sender's data, regenerated the same way
        ref = reference("cuda")
        got = pool.view(torch.int16)[:, ids[1].cuda()]
        ok = torch.equal(got, ref[:, ids[0].cuda()])
    if rank == 1:
        result_q.put((statistics.median(times), ok))
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=40)
    p.add_argument("--blocks", type=int, default=1000)
    p.add_argument("--block-bytes", type=int, default=65536)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--port", type=int, default=29533)
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args, args.port, q)) for r in range(2)]
    for pr in procs:
        pr.start()
    median, ok = q.get(timeout=600)
    for pr in procs:
        pr.join()
    n = args.layers * args.blocks
    total = n * args.block_bytes
    print(f"nccl batch_isend_irecv: {n} blocks of {args.block_bytes} B, median {median * 1e3:.2f} ms, "
          f"{total / median / 1e9:.2f} GB/s, {'verified' if ok else 'VERIFY FAILED'}")


if __name__ == "__main__":
    main()
