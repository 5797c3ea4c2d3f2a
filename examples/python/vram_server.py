#!/usr/bin/env python3
"""KV server: holds an engine's KV cache (one tensor per layer) and lets clients pull blocks.

The prefill side of disaggregated inference, reduced to its transfer work:
- one registration per layer tensor (the engine's own tensors, never per block);
- the pool's geometry published once in the agent's metadata, so a client checks it once
  (kvferry.LocalKvPool / KvLink) and a mismatch is refused naming the differing fields;
- no per-request messages of its own: each client transfer carries its request id as
  the transfer's own notification, delivered here after the client has read every byte,
  which is when a real engine may free or reuse those blocks.

    python3 vram_server.py --mem vram --device 0          # GPU pool (torch)
    python3 vram_server.py --port 0                       # host pool (numpy), any free port
"""

import argparse
import signal
import sys
import time

import kvferry
from kv_example import Pattern, add_geometry_options, agent_backends, allocate_tensors, layout_of

SEED_KEY = "example.seed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_geometry_options(parser)
    parser.add_argument("--seed", type=int, default=1, help="seed of the pool's contents")
    parser.add_argument("--max-requests", type=int, default=0, help="exit after this many requests (0: run until Ctrl-C)")
    args = parser.parse_args()

    layout = layout_of(args)
    tensors = allocate_tensors(layout, args.mem, args.device)
    t0 = time.perf_counter()
    Pattern(layout, args.seed).fill(tensors)
    if args.mem == "vram":
        import torch
        torch.cuda.synchronize(args.device)
    print(f"server: {layout.describe()}, {layout.pool_bytes() / 2**30:.2f} GiB on {args.mem}, "
          f"filled in {time.perf_counter() - t0:.1f} s", flush=True)

    with kvferry.Agent("server", backends=agent_backends(args)) as agent:
        agent.register_memory(tensors)  # one region per layer tensor
        pool = kvferry.KvPool.from_tensors(layout, tensors)
        kvferry.LocalKvPool.attach(agent, pool)  # publishes "kv.pool" in our metadata
        agent.set_metadata_entry(SEED_KEY, str(args.seed).encode())
        port = agent.listen(args.ip, args.port)
        print(f"server: listening on {args.ip}:{port} (backends {', '.join(agent.backends())})", flush=True)

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        served = 0
        try:
            while args.max_requests == 0 or served < args.max_requests:
                if not agent.wait_for_notifications(1.0):
                    continue
                for note in agent.take_notifications():
                    # The client's transfer finished reading these blocks: a real engine
                    # would release them to its block manager now.
                    print(f"server: {note.from_} done with {note.message.decode(errors='replace')}", flush=True)
                    served += 1
        except KeyboardInterrupt:
            pass
        agent.deregister_memory(tensors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
