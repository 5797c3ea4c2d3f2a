"""Failures become kvferry.Error subclasses named after the status code, with the C++ message."""

import os
import signal
import time

import numpy as np
import pytest

import kvferry


def test_error_classes():
    assert issubclass(kvferry.PeerLost, kvferry.Error)
    assert issubclass(kvferry.Timeout, TimeoutError) and issubclass(kvferry.InvalidArgument, ValueError)
    assert kvferry.PeerLost.code == "peer lost"


def test_bad_input_and_state_raise_the_right_classes():
    with pytest.raises(kvferry.InvalidArgument):
        kvferry.Agent("")
    with kvferry.Agent("e", backends=["loopback"]) as agent:
        a = np.zeros(4096, dtype=np.uint8)
        agent.register_memory(a)
        with pytest.raises(kvferry.AlreadyExists):
            agent.register_memory(a)
        with pytest.raises(kvferry.Corrupt):
            agent.load_remote(b"definitely not kvferry metadata")
        with pytest.raises(kvferry.NotFound):
            agent.prepare_remote("nobody", [(0, 16)])
        with pytest.raises(kvferry.NotFound):
            agent.remote_metadata_entry("nobody", "x")
        with pytest.raises(kvferry.Error) as outside:
            agent.prepare_local([(a.ctypes.data + 4000, 4096)])
        assert isinstance(outside.value, (kvferry.OutOfRange, kvferry.InvalidArgument)) and str(outside.value)
        ours = agent.prepare_local(np.array([[a.ctypes.data, 1024], [a.ctypes.data + 1024, 1024]]))
        with pytest.raises(kvferry.InvalidArgument, match="index 4294967296"):
            agent.create_transfer("read", ours, [2**32], ours, [0])
        with pytest.raises(kvferry.InvalidArgument, match="integers"):
            agent.create_transfer("read", ours, np.array([0.5]), ours, [0])
        with pytest.raises(kvferry.InvalidArgument, match="transfer op"):
            agent.create_transfer("sideways", ours, [0], ours, [1])
        with pytest.raises(kvferry.InvalidArgument, match="C-contiguous"):
            agent.register_memory(np.zeros((64, 64), dtype=np.uint8)[:, ::2])
        with pytest.raises(kvferry.InvalidArgument):
            agent.wait_for_notifications(-1.0)
        agent.deregister_memory(a)
    with pytest.raises(kvferry.FailedPrecondition, match="closed"):
        agent.backends()


def test_unreachable_peer():
    with kvferry.Agent("lonely", backends=["tcp"], connect_timeout=1.0) as agent:
        t0 = time.monotonic()
        with pytest.raises(kvferry.Error) as e:
            agent.fetch_remote("127.0.0.1", 1, timeout=1.0)  # nothing listens on port 1
        assert type(e.value) is not kvferry.Error and time.monotonic() - t0 < 5


def test_dead_peer_is_peer_lost_within_the_bound(peer_factory):
    peer = peer_factory("tcp", 1 << 20, name="doomed")
    with kvferry.Agent("survivor", backends=["tcp"], peer_timeout=1.0) as agent:
        local = np.zeros(1 << 20, dtype=np.uint8)
        agent.register_memory(local)
        agent.fetch_remote("127.0.0.1", peer.port)
        request = agent.create_transfer("read", [(local.ctypes.data, 1 << 20)], "doomed", [(peer.address, 1 << 20)])
        request.post()
        request.wait(10.0)
        os.kill(peer.proc.pid, signal.SIGKILL)
        peer.proc.wait(10)
        t0 = time.monotonic()
        with pytest.raises(kvferry.PeerLost):
            for _ in range(100):  # the loss is seen at the first post or during the transfer
                request.post()
                request.wait(10.0)
        assert time.monotonic() - t0 < 5
        assert isinstance(request.error(), (kvferry.PeerLost, type(None)))
