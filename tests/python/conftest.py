"""Shared helpers of the Python tests: a peer agent in a second process."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kvferry

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLES = os.path.join(ROOT, "examples", "python")


def usable_backends():
    return {b.name for b in kvferry.compiled_backends() if b.usable}


def seeded_bytes(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


class Peer:
    """tests/python/peer_process.py running in its own process."""

    def __init__(self, backend: str, nbytes: int, seed: int = 5, name: str = "peer"):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "peer_process.py"), "--backend", backend, "--bytes", str(nbytes),
             "--seed", str(seed), "--name", name],
            stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"peer process exited with {self.proc.returncode} before listening")
        info = json.loads(line)
        self.port, self.address, self.name, self.nbytes, self.seed = info["port"], info["address"], info["name"], nbytes, seed

    def checksum(self, agent: kvferry.Agent) -> str:
        self.asks = getattr(self, "asks", 0) + 1
        tag = (0xC5 << 56) + self.asks  # the answer carries it: other notifications stay
        agent.notify(self.name, "checksum", tag=tag)
        (note,) = agent.wait_for_notifications([(self.name, tag)], 10.0)
        return note.message.decode().split()[1]

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def peer_factory():
    peers = []

    def make(backend, nbytes=1 << 20, seed=5, name="peer"):
        if backend not in usable_backends():
            pytest.skip(f"backend {backend} is not usable here")
        p = Peer(backend, nbytes, seed, name)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()
