"""A second process for the Python tests: an agent that holds `--bytes` of seeded random
host memory and answers notifications: "checksum" -> "sha256 <hex>" (with the ask's tag), "quit" -> exits, any
other message M with tag T -> "got M" with tag T (so a test sees what arrived, tag included).

Prints one JSON line {"port", "address", "name"} once it listens. Exits by itself after
`--lifetime` seconds, so a failed test never leaves it behind.
"""

import argparse
import hashlib
import json
import sys
import time

import numpy as np

import kvferry


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backend", required=True)
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--name", default="peer")
    p.add_argument("--lifetime", type=float, default=60.0)
    args = p.parse_args()
    data = np.random.default_rng(args.seed).integers(0, 256, args.bytes, dtype=np.uint8)
    with kvferry.Agent(args.name, backends=[args.backend]) as agent:
        agent.register_memory(data)
        port = agent.listen("127.0.0.1", 0)
        print(json.dumps({"port": port, "address": int(data.ctypes.data), "name": agent.name}), flush=True)
        end = time.monotonic() + args.lifetime
        while time.monotonic() < end:
            if not agent.wait_for_notifications(0.2):
                continue
            for note in agent.take_notifications():
                if note.message == b"quit":
                    return 0
                if note.message == b"checksum":
                    agent.notify(note.from_, "sha256 " + hashlib.sha256(data.tobytes()).hexdigest(), note.tag)
                else:
                    agent.notify(note.from_, b"got " + note.message, note.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
