"""What the Python binding costs on the hot path: create + post of one transfer from numpy
arrays, timed from Python and, in the same process and run, the same call made from C++
(kvferry._kvferry._cxx_create_post / _cxx_create_post_lanes). Rounds alternate between the two.

    python -m kvferry.bench                      # 40 layers x K,V x 512 scattered blocks = 40,960 descriptors
    python -m kvferry.bench --form lanes         # the same as a strided transfer: 80 lanes x 512 block ids
    python -m kvferry.bench --form wait --backend shm  # post -> wait returns: the waiter's wake-up
    python -m kvferry.bench --json

Forms: "index" (index arrays of 40,960 descriptor indices per side, index_transfer) and
"lanes" (two arrays of 512 block ids used in every lane: the engines' strided path).

Two agents in this process over tcp (post never waits on the data there); each request
is waited for, untimed, before the next.

Form "wait" times the other half of a request: one request of --wait-bytes (one
descriptor) posted and waited for, again and again, from Python (`post(); wait()`) and from
C++ (kvferry._kvferry._cxx_post_wait), rounds alternating. Per post: the time until wait()
returns, and that minus the request's transfer_ns (post until the backend finished it):
the wake-up of the waiter, which a binding could only add to.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np

import kvferry
from kvferry import _kvferry


def _median_us(samples):
    return statistics.median(samples) / 1e3


def run(layers=40, lanes_per_layer=2, blocks=512, pool_blocks=1024, block_bytes=4096, rounds=7, iterations=10,
        backend="tcp", seed=3, form="index"):
    lanes = layers * lanes_per_layer
    rng = np.random.default_rng(seed)
    with kvferry.Agent("bench-initiator", backends=[backend]) as a, kvferry.Agent("bench-target", backends=[backend]) as b:
        src = np.zeros(lanes * pool_blocks * block_bytes, np.uint8)
        dst = np.zeros_like(src)
        a.register_memory(src)
        b.register_memory(dst)
        a.fetch_remote("127.0.0.1", b.listen())

        def table(base):
            addr = base + np.arange(lanes * pool_blocks, dtype=np.uint64) * block_bytes
            return np.stack([addr, np.full_like(addr, block_bytes)], axis=1)

        ours = a.prepare_local(table(src.ctypes.data))
        theirs = a.prepare_remote("bench-target", table(dst.ctypes.data))
        lane_base = (np.arange(lanes, dtype=np.uint32) * pool_blocks)[:, None]
        li = (lane_base + np.stack([rng.choice(pool_blocks, blocks, replace=False) for _ in range(lanes)])).astype(np.uint32).ravel()
        ri = (lane_base + np.stack([rng.choice(pool_blocks, blocks, replace=False) for _ in range(lanes)])).astype(np.uint32).ravel()
        if form == "lanes":  # lane l: blocks of lane l's pool_blocks, contiguous, in both buffers
            def lanes_of(base):
                return kvferry.BlockLanes("dram", [base + l * pool_blocks * block_bytes for l in range(lanes)],
                                          block_stride=block_bytes, block_bytes=block_bytes, blocks=pool_blocks)

            ours = a.prepare_local_lanes(lanes_of(src.ctypes.data))
            theirs = a.prepare_remote_lanes("bench-target", lanes_of(dst.ctypes.data))
            li = rng.choice(pool_blocks, blocks, replace=False).astype(np.uint32)
            ri = rng.choice(pool_blocks, blocks, replace=False).astype(np.uint32)

            def create(local_ids, remote_ids):
                return a.create_transfer(kvferry.WRITE, ours, theirs, local_ids, remote_ids)

            def cxx(n):
                return _kvferry._cxx_create_post_lanes(a, kvferry.WRITE, ours, theirs, li, ri, n)
        else:
            def create(local_ids, remote_ids):
                return a.create_transfer(kvferry.WRITE, ours, local_ids, theirs, remote_ids)

            def cxx(n):
                return _kvferry._cxx_create_post(a, kvferry.WRITE, ours, li, theirs, ri, n)
        li64, ri64 = li.astype(np.int64), ri.astype(np.int64)

        py_create, py_post, py_cpu, py64, cxx_create, cxx_post, cxx_cpu = [], [], [], [], [], [], []
        merged = 0
        for _ in range(rounds):
            for _ in range(iterations):
                cpu0 = time.thread_time_ns()
                t0 = time.perf_counter_ns()
                request = create(li, ri)
                t1 = time.perf_counter_ns()
                request.post()
                t2 = time.perf_counter_ns()
                cpu = time.thread_time_ns() - cpu0
                request.wait(60.0)
                py_create.append(t1 - t0)
                py_post.append(t2 - t1)
                py_cpu.append(cpu)
                merged = request.telemetry().descriptors_merged
                # Destroyed here, untimed, as the C++ reference destroys its requests: rebinding
                # `request` inside the timed part would add the previous request's teardown.
                del request
            for create_ns, post_ns, cpu_ns in cxx(iterations):
                cxx_create.append(create_ns)
                cxx_post.append(post_ns)
                cxx_cpu.append(cpu_ns)
            for _ in range(max(1, iterations // 2)):  # int64 indices: one conversion each
                cpu0 = time.thread_time_ns()
                request = create(li64, ri64)
                request.post()
                py64.append(time.thread_time_ns() - cpu0)
                request.wait(60.0)
                del request
        a.deregister_memory(src)
        b.deregister_memory(dst)

    py_total = [c + p for c, p in zip(py_create, py_post)]
    cxx_total = [c + p for c, p in zip(cxx_create, cxx_post)]
    return {
        "form": form, "descriptors": int(li.size) * (lanes if form == "lanes" else 1), "merged": int(merged), "block_bytes": block_bytes, "backend": backend,
        "samples": len(py_total),
        "python_create_us": _median_us(py_create), "python_post_us": _median_us(py_post),
        "python_total_us": _median_us(py_total),
        "cxx_create_us": _median_us(cxx_create), "cxx_post_us": _median_us(cxx_post),
        "cxx_total_us": _median_us(cxx_total),
        "python_cpu_us": _median_us(py_cpu), "cxx_cpu_us": _median_us(cxx_cpu),
        "python_int64_cpu_us": _median_us(py64),
        # CPU time of the calling thread is the figure of merit: wall time on a shared
        # machine mostly measures who else holds the CPU.
        "ratio": statistics.median(py_cpu) / statistics.median(cxx_cpu),
        "wall_ratio": statistics.median(py_total) / statistics.median(cxx_total),
    }


def run_wait(sizes=(64, 4 << 20), rounds=5, iterations=200, backend="shm"):
    """Post -> wait() returns, Python against C++, per transfer size; medians in us."""
    results = []
    with kvferry.Agent("wait-initiator", backends=[backend]) as a, kvferry.Agent("wait-target", backends=[backend]) as b:
        src = np.random.default_rng(5).integers(0, 255, max(sizes), dtype=np.uint8)
        dst = np.zeros_like(src)
        a.register_memory(src)
        b.register_memory(dst)
        a.fetch_remote("127.0.0.1", b.listen())
        for size in sizes:
            request = a.create_transfer(kvferry.WRITE, [(src.ctypes.data, size)], "wait-target", [(dst.ctypes.data, size)])
            py_total, py_wake, cxx_total, cxx_wake = [], [], [], []
            for _ in range(rounds):
                for _ in range(iterations):
                    t0 = time.perf_counter_ns()
                    request.post()
                    request.wait(60.0)
                    t1 = time.perf_counter_ns()
                    py_total.append(t1 - t0)
                    py_wake.append(t1 - t0 - request.telemetry().transfer_ns)
                for total, transfer in _kvferry._cxx_post_wait(request, iterations):
                    cxx_total.append(total)
                    cxx_wake.append(total - transfer)
            if not np.array_equal(src[:size], dst[:size]):
                raise RuntimeError(f"{size}-byte transfer: destination differs")
            results.append({"bytes": size, "backend": backend, "samples": len(py_total),
                            "python_us": _median_us(py_total), "python_wake_us": _median_us(py_wake),
                            "cxx_us": _median_us(cxx_total), "cxx_wake_us": _median_us(cxx_wake),
                            "transfer_us": _median_us([t - w for t, w in zip(cxx_total, cxx_wake)])})
            del request
        a.deregister_memory(src)
        b.deregister_memory(dst)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=40)
    p.add_argument("--blocks", type=int, default=512, help="scattered blocks per lane (K or V of a layer)")
    p.add_argument("--pool-blocks", type=int, default=1024)
    p.add_argument("--block-bytes", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--backend", default="tcp")
    p.add_argument("--form", choices=["index", "lanes", "wait"], default="index")
    p.add_argument("--wait-bytes", type=int, nargs="+", default=[64, 4 << 20],
                   help="form wait: transfer sizes (one descriptor each)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.form == "wait":
        rows = run_wait(sizes=args.wait_bytes, rounds=args.rounds, iterations=args.iterations * 20,
                        backend=args.backend)
        if args.json:
            print(json.dumps(rows))
            return 0
        print(f"post -> wait() returns over {args.backend}, {rows[0]['samples']} samples each, medians in us "
              "(wake-up: after the backend finished the request)")
        print(f"  {'bytes':>10}{'transfer':>10}{'C++ total':>11}{'C++ wake-up':>13}{'Python total':>14}"
              f"{'Python wake-up':>16}")
        for r in rows:
            print(f"  {r['bytes']:>10}{r['transfer_us']:>10.1f}{r['cxx_us']:>11.1f}{r['cxx_wake_us']:>13.1f}"
                  f"{r['python_us']:>14.1f}{r['python_wake_us']:>16.1f}")
        return 0
    r = run(layers=args.layers, blocks=args.blocks, pool_blocks=args.pool_blocks, block_bytes=args.block_bytes,
            rounds=args.rounds, iterations=args.iterations, backend=args.backend, form=args.form)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{'strided' if r['form'] == 'lanes' else 'index'} transfer, {r['descriptors']} descriptors ({r['merged']} after merging), {r['backend']}, "
          f"{r['samples']} samples each, medians:")
    print(f"  {'caller':<24}{'wall create us':>15}{'wall post us':>13}{'wall total us':>14}{'CPU us':>9}")
    print(f"  {'C++ (same process)':<24}{r['cxx_create_us']:>15.1f}{r['cxx_post_us']:>13.1f}{r['cxx_total_us']:>14.1f}"
          f"{r['cxx_cpu_us']:>9.1f}")
    print(f"  {'Python, uint32 arrays':<24}{r['python_create_us']:>15.1f}{r['python_post_us']:>13.1f}"
          f"{r['python_total_us']:>14.1f}{r['python_cpu_us']:>9.1f}")
    print(f"  {'Python, int64 arrays':<24}{'':>15}{'':>13}{'':>14}{r['python_int64_cpu_us']:>9.1f}")
    print(f"Python / C++, CPU of the calling thread = {r['ratio']:.3f} (acceptance <= 1.2); "
          f"wall time {r['wall_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
