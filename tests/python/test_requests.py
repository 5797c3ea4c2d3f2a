"""Requests as engines make them: 64-bit tags on transfers and notifications, notifications
taken by peer and tag, keyed waits, completion queues (select and asyncio on their
eventfd, post_batch) and strided lanes x block-id transfers from numpy arrays."""

import asyncio
import select
import threading
import time

import numpy as np
import pytest

import kvferry
from conftest import seeded_bytes

BLOCK = 4096


def two_loopback_agents(n):
    a = kvferry.Agent("a", backends=["loopback"])
    b = kvferry.Agent("b", backends=["loopback"])
    src, dst = seeded_bytes(11, n), np.zeros(n, np.uint8)
    a.register_memory(src)
    b.register_memory(dst)
    a.load_remote(b.local_metadata())
    b.load_remote(a.local_metadata())
    return a, b, src, dst


def test_tags_ride_on_transfers_and_notifications_to_another_process(peer_factory):
    n = 64 * BLOCK
    peer = peer_factory("tcp", n, seed=5)
    with kvferry.Agent("me", backends=["tcp"]) as agent:
        local = np.zeros(n, np.uint8)
        agent.register_memory(local)
        agent.fetch_remote("127.0.0.1", peer.port)
        request = agent.create_transfer("read", [(local.ctypes.data, n)], "peer", [(peer.address, n)],
                                        notification="req 7", tag=(1 << 63) + 7)
        assert request.tag == (1 << 63) + 7
        request.post()
        request.wait(10.0)
        assert np.array_equal(local, seeded_bytes(5, n))
        agent.notify("peer", "plain", tag=42)
        # The peer echoes each message with its tag: "got req 7" (tag 2^63 + 7), "got plain" (42).
        got = agent.wait_for_notifications([("peer", 42), ("peer", (1 << 63) + 7)], 10.0)
        assert [(x.from_, x.message, x.tag) for x in got] == [("peer", b"got plain", 42),
                                                              ("peer", b"got req 7", (1 << 63) + 7)]
        agent.notify("peer", "quit")


def take_within(agent, seconds=5.0, **where):
    """take_notifications(**where) until it returns something or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = agent.take_notifications(**where)
        if got:
            return got
        agent.wait_for_notifications(0.05)
    return []


def test_take_by_peer_and_tag_and_keyed_wait_timeout():
    with kvferry.Agent("inbox", backends=["loopback"]) as me, kvferry.Agent("x", backends=["loopback"]) as x, \
            kvferry.Agent("y", backends=["loopback"]) as y:
        for other in (x, y):
            other.load_remote(me.local_metadata())
        x.notify("inbox", "x1", tag=1)
        x.notify("inbox", "x2", tag=2)
        y.notify("inbox", "y1", tag=1)
        y.notify("inbox", "y5", tag=5)
        # Key order, whatever the arrival order.
        got = me.wait_for_notifications([("y", 1), ("x", 2)], 5.0)
        assert [(n.from_, n.message, n.tag) for n in got] == [("y", b"y1", 1), ("x", b"x2", 2)]
        with pytest.raises(kvferry.Timeout, match="'y'.*7"):
            me.wait_for_notifications([("x", 1), ("y", 7)], 0.2)
        # The timed-out wait took nothing: x1 is still there for the filter.
        assert [(n.message, n.tag) for n in take_within(me, peer="y", tag=5)] == [(b"y5", 5)]
        assert [(n.message, n.tag) for n in take_within(me, peer="x", tag=1)] == [(b"x1", 1)]
        assert me.take_notifications() == []


def test_keyed_wait_releases_the_gil():
    with kvferry.Agent("w", backends=["loopback"]) as me, kvferry.Agent("s", backends=["loopback"]) as s:
        s.load_remote(me.local_metadata())
        ticks = []
        stop = threading.Event()

        def ticker():
            while not stop.is_set():
                ticks.append(1)
                time.sleep(0.005)

        t = threading.Thread(target=ticker)
        t.start()
        threading.Timer(0.3, lambda: s.notify("w", "late", tag=9)).start()
        got = me.wait_for_notifications([("s", 9)], 10.0)
        stop.set()
        t.join()
        assert [(n.message, n.tag) for n in got] == [(b"late", 9)]
        assert len(ticks) >= 20, f"another thread ran only {len(ticks)} times during the wait"


def test_completion_queue_select_post_batch_and_errors():
    n = 16 * BLOCK
    a, b, src, dst = two_loopback_agents(n)
    with a, b:
        queue = kvferry.CompletionQueue()
        assert select.select([queue], [], [], 0)[0] == []  # nothing waits: not readable
        requests = [a.create_transfer("write", [(src.ctypes.data + i * BLOCK, BLOCK)], "b",
                                      [(dst.ctypes.data + (15 - i) * BLOCK, BLOCK)], tag=100 + i) for i in range(16)]
        assert kvferry.post_batch(requests, queue) == 16
        done = []
        deadline = time.monotonic() + 10
        while len(done) < 16 and time.monotonic() < deadline:
            if select.select([queue.fileno()], [], [], 1.0)[0]:
                done += queue.drain()
        assert sorted(c.tag for c in done) == list(range(100, 116))
        assert all(c.ok and c.error() is None and c.peer == "b" and c.telemetry.bytes == BLOCK for c in done)
        assert np.array_equal(dst.reshape(16, BLOCK), src.reshape(16, BLOCK)[::-1])
        assert len(queue) == 0 and queue.in_flight() == 0
        assert select.select([queue], [], [], 0)[0] == []

        # A post that cannot start completes at once, with its reason: the same request twice
        # while the first is still running, or a request towards a peer forgotten since.
        bad = a.create_transfer("write", [(src.ctypes.data, BLOCK)], "b", [(dst.ctypes.data, BLOCK)], tag=7)
        a.forget_remote("b")
        with pytest.raises(kvferry.Error):
            bad.post(queue)
        (c,) = queue.drain()
        assert c.tag == 7 and not c.ok and isinstance(c.error(), kvferry.Error)
        assert str(c.error()) == str(bad.error()) or bad.error() is None


def test_completion_queue_with_asyncio():
    n = 8 * BLOCK
    a, b, src, dst = two_loopback_agents(n)
    with a, b:
        queue = kvferry.CompletionQueue()

        async def main():
            requests = [a.create_transfer("write", [(src.ctypes.data + i * BLOCK, BLOCK)], "b",
                                          [(dst.ctypes.data + i * BLOCK, BLOCK)], tag=i) for i in range(8)]
            for r in requests:
                r.post(queue)
            tags = []
            while len(tags) < 8:
                tags += [c.tag for c in await asyncio.wait_for(kvferry.wait_completions(queue), 10)]
            return sorted(tags)

        assert asyncio.run(main()) == list(range(8))
        assert np.array_equal(dst, src)


@pytest.mark.parametrize("backend", ["tcp", "shm"])
def test_strided_lanes_read_from_another_process(peer_factory, backend):
    # The peer's 1 MiB as 4 interleaved lanes: block b of lane l at l * 1 KiB + b * 4 KiB.
    n, lanes, blocks, bb = 1 << 20, 4, 256, 1024
    peer = peer_factory(backend, n, seed=5)
    with kvferry.Agent("me", backends=[backend]) as agent:
        local = np.full(n, 0xAB, np.uint8)
        agent.register_memory(local)
        agent.fetch_remote("127.0.0.1", peer.port)
        shape = dict(block_stride=lanes * bb, block_bytes=bb, blocks=blocks)
        ours = agent.prepare_local_lanes(
            kvferry.BlockLanes("dram", [local.ctypes.data + l * bb for l in range(lanes)], **shape))
        theirs = agent.prepare_remote_lanes("peer",
                                            kvferry.BlockLanes("dram", [peer.address + l * bb for l in range(lanes)], **shape))
        assert (ours.lanes, ours.blocks, ours.is_local, theirs.peer) == (lanes, blocks, True, "peer")
        rng = np.random.default_rng(3)
        their_ids = rng.choice(blocks, 100, replace=False).astype(np.uint32)
        our_ids = np.concatenate([np.arange(40, 90), rng.choice(np.arange(100, 256), 50, replace=False)]).astype(np.uint32)
        request = agent.create_transfer("read", ours, theirs, our_ids, their_ids, first_lane=1, lane_count=2, tag=5)
        request.post()
        request.wait(10.0)
        t = request.telemetry()
        assert (t.bytes, t.descriptors_requested) == (100 * 2 * bb, 100 * 2)
        got = local.reshape(blocks, lanes, bb)
        want = seeded_bytes(5, n).reshape(blocks, lanes, bb)
        assert np.array_equal(got[our_ids][:, 1:3], want[their_ids][:, 1:3])
        untouched = np.ones((blocks, lanes), bool)
        untouched[our_ids, 1:3] = False
        assert (got[untouched] == 0xAB).all()
        with pytest.raises(kvferry.OutOfRange, match="local block id 256 at position 0"):
            agent.create_transfer("read", ours, theirs, [256], [0])
        agent.notify("peer", "quit")
