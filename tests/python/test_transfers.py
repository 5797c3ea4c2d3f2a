"""The Agent API with numpy arrays over loopback (one process), tcp and shm (two
processes) and file: bytes checked exactly, telemetry, notifications."""

import numpy as np
import pytest

import kvferry
from conftest import seeded_bytes, sha256

BLOCK = 4096


def block_table(address: int, blocks: int, block: int = BLOCK) -> np.ndarray:
    """(N, 2) address, length: one descriptor per block."""
    return np.stack([address + np.arange(blocks, dtype=np.uint64) * block, np.full(blocks, block, np.uint64)], axis=1)


@pytest.mark.parametrize("backend", ["tcp", "shm"])
def test_index_read_and_write_against_another_process(peer_factory, backend):
    n = 1 << 20
    blocks = n // BLOCK
    peer = peer_factory(backend, n, seed=5)
    rng = np.random.default_rng(1)
    with kvferry.Agent("me", backends=[backend]) as agent:
        local = np.full(n, 0xAB, dtype=np.uint8)  # poisoned
        agent.register_memory(local)
        assert agent.fetch_remote("127.0.0.1", peer.port) == "peer"
        assert "peer" in agent.remote_agents()
        ours = agent.prepare_local(block_table(local.ctypes.data, blocks))
        theirs = agent.prepare_remote("peer", block_table(peer.address, blocks))
        assert len(ours) == blocks and ours.is_local and theirs.peer == "peer"

        # Read: local block perm[i] <- remote block i.
        perm = rng.permutation(blocks).astype(np.uint32)
        request = agent.create_transfer(kvferry.READ, ours, perm, theirs, np.arange(blocks, dtype=np.uint32))
        request.post()
        request.wait(10.0)
        assert request.state == kvferry.TransferState.DONE and request.error() is None
        expected = seeded_bytes(5, n).reshape(blocks, BLOCK)
        assert np.array_equal(local.reshape(blocks, BLOCK)[perm], expected)
        t = request.telemetry()
        assert (t.backend, t.bytes, t.descriptors_requested, t.posts) == (backend, n, blocks, 1)

        # Write, with int64 and reversed (non-contiguous) index arrays: one conversion each.
        local[:] = rng.integers(0, 256, n, dtype=np.uint8)
        request = agent.create_transfer("write", ours, np.arange(blocks), theirs, np.arange(blocks)[::-1],
                                        notification=b"written")
        request.post()
        request.wait(10.0)
        assert peer.checksum(agent) == sha256(local.reshape(blocks, BLOCK)[::-1])

        # A finished request posts again.
        request.post()
        request.wait(10.0)
        assert request.telemetry().posts == 2
        agent.notify("peer", "quit")


def test_loopback_two_agents_in_one_process_list_forms():
    n = 64 * BLOCK
    with kvferry.Agent("a", backends=["loopback"]) as a, kvferry.Agent("b", backends=["loopback"]) as b:
        src = seeded_bytes(3, n)
        dst = np.zeros(n, dtype=np.uint8)
        a.register_memory(src)
        b.register_memory([dst])
        assert a.load_remote(b.local_metadata()) == "b"
        assert b.load_remote(a.local_metadata()) == "a"
        regions = a.remote_regions("b")
        assert len(regions) == 1 and regions[0][0] == (dst.ctypes.data, n, 0)

        # Plain descriptor lists (list of tuples), notification to the peer's inbox.
        request = a.create_transfer(kvferry.WRITE, [(src.ctypes.data, BLOCK)], "b",
                                    [(dst.ctypes.data + BLOCK, BLOCK)], notification="req 7")
        request.post()
        request.wait(5.0)
        assert np.array_equal(dst[BLOCK:2 * BLOCK], src[:BLOCK])
        assert b.wait_for_notifications(5.0)
        (note,) = b.take_notifications()
        assert (note.from_, note.message) == ("a", b"req 7")

        # Index transfer with Python lists as indices; runs contiguous on both sides merge.
        ours = a.prepare_local(kvferry.DescriptorList("dram", block_table(src.ctypes.data, 64)))
        theirs = a.prepare_remote("b", block_table(dst.ctypes.data, 64))
        request = a.create_transfer(kvferry.WRITE, ours, [10, 11, 12, 40], theirs, [0, 1, 2, 63])
        request.post()
        request.wait(5.0)
        t = request.telemetry()
        assert (t.descriptors_requested, t.descriptors_merged) == (4, 2)
        blocks_dst, blocks_src = dst.reshape(64, BLOCK), src.reshape(64, BLOCK)
        assert np.array_equal(blocks_dst[[0, 1, 2, 63]], blocks_src[[10, 11, 12, 40]])

        a.notify("b", b"\x00binary")
        assert b.wait_for_notifications(5.0)
        assert [x.message for x in b.take_notifications()] == [b"\x00binary"]
        a.set_metadata_entry("engine.role", b"prefill")
        b.load_remote(a.local_metadata())
        assert b.remote_metadata_entry("a", "engine.role") == b"prefill"
        a.forget_remote("b")
        assert "b" not in a.remote_agents()


def test_index_array_forms_move_the_same_blocks():
    """Block ids as uint32 arrays used in place (read-only too), and as forms converted once
    (strided, big-endian, int64, lists, memoryview of array.array): each moves exactly its blocks."""
    import array
    blocks = 32
    with kvferry.Agent("a", backends=["loopback"]) as a, kvferry.Agent("b", backends=["loopback"]) as b:
        src = seeded_bytes(11, 2 * blocks * BLOCK)  # two lanes of 32 blocks
        dst = np.zeros_like(src)
        a.register_memory(src)
        b.register_memory(dst)
        a.load_remote(b.local_metadata())
        b.load_remote(a.local_metadata())

        def lanes(base):
            return kvferry.BlockLanes("dram", [base, base + blocks * BLOCK], block_stride=BLOCK, block_bytes=BLOCK,
                                      blocks=blocks)

        ours, theirs = a.prepare_local_lanes(lanes(src.ctypes.data)), a.prepare_remote_lanes("b", lanes(dst.ctypes.data))
        local_ids = np.array([5, 0, 31, 7, 2, 9], dtype=np.uint32)
        remote_ids = np.array([1, 30, 4, 12, 8, 17], dtype=np.uint32)
        readonly = remote_ids.copy()
        readonly.flags.writeable = False
        forms = [(local_ids, remote_ids), (local_ids, readonly),
                 (np.repeat(local_ids, 2)[::2], remote_ids.astype(">u4")),  # not contiguous; big-endian
                 (local_ids.astype(np.int64), remote_ids.tolist()),
                 (memoryview(array.array("I", local_ids.tolist())), remote_ids)]
        for local, remote in forms:
            dst[:] = 0
            request = a.create_transfer(kvferry.WRITE, ours, theirs, local, remote)
            request.post()
            request.wait(5.0)
            got, want = dst.reshape(2, blocks, BLOCK), src.reshape(2, blocks, BLOCK)
            assert np.array_equal(got[:, remote_ids], want[:, local_ids])
            untouched = np.setdiff1d(np.arange(blocks), remote_ids)
            assert not got[:, untouched].any()
        with pytest.raises(kvferry.OutOfRange):
            a.create_transfer(kvferry.WRITE, ours, theirs, np.array([32], dtype=np.uint32), np.array([0], np.uint32))
        with pytest.raises(kvferry.InvalidArgument):
            a.create_transfer(kvferry.WRITE, ours, theirs, np.zeros((2, 2), dtype=np.uint32), remote_ids[:4])
        a.deregister_memory(src)
        b.deregister_memory(dst)


def test_file_offload_and_onboard_of_numpy_blocks(tmp_path):
    n = 32 * BLOCK
    path = str(tmp_path / "kv.bin")
    with kvferry.Agent("store", backends=["file"]) as agent:
        src = seeded_bytes(9, n)
        back = np.zeros(n, dtype=np.uint8)
        agent.register_memory([src, back])
        f = agent.register_file(path, create=True, capacity=n)
        assert f.length == n and kvferry.query_file(path).size == n
        request = agent.create_transfer(kvferry.WRITE, block_table(src.ctypes.data, 32), agent.name,
                                        np.array([[i * BLOCK, BLOCK, f.id] for i in range(31, -1, -1)]),
                                        backend="file", remote_kind="file")
        request.post()
        request.wait(10.0)
        assert request.telemetry().backend == "file"
        on_disk = np.fromfile(path, dtype=np.uint8).reshape(32, BLOCK)
        assert np.array_equal(on_disk, src.reshape(32, BLOCK)[::-1])
        request = agent.create_transfer("read", [(back.ctypes.data, n)], agent.name, [f.at(0, n)],
                                        remote_kind=kvferry.FILE)
        request.post()
        request.wait(10.0)
        assert np.array_equal(back, on_disk.ravel())
        agent.deregister_file(f.id)
        agent.deregister_memory([src, back])


def test_shared_memory_array_view():
    with kvferry.Agent("shm-owner", backends=["shm"]) as agent:
        shm = agent.allocate_shared_memory(1 << 20)
        view = shm.array()
        assert view.nbytes == shm.size and view.ctypes.data == shm.address
        view[:16] = 7
        agent.register_memory(view)
        agent.deregister_memory(view)
        assert len(shm.descriptors()) == 1
