"""The KV layer from Python: layouts, pools over per-layer numpy tensors, block plans from
numpy block ids, the pool handshake and links (a pull between two agents), offload and onboard."""

import numpy as np
import pytest

import kvferry

GEOMETRY = dict(layers=4, kv_heads=2, head_dim=64, block_tokens=16, dtype="bf16")


def tensors_for(layout):
    g = layout.geometry
    rng = np.random.default_rng(layout.blocks)
    return [rng.integers(0, 2**16, (2, layout.blocks, g.block_tokens, g.kv_heads, g.head_dim), dtype=np.uint16)
            for _ in range(g.layers)]


def test_layout_pool_and_plan():
    layout = kvferry.KvLayout.create(kvferry.KvGeometry(**GEOMETRY), "vllm-nhd", 32)
    assert layout.block_bytes() == 2 * 2 * 64 * 16 * 2
    assert (layout.tensor_count(), layout.lanes_per_layer(), layout.blocks_for_tokens(33)) == (4, 2, 3)
    assert layout.geometry == kvferry.KvGeometry(**GEOMETRY)
    tensors = tensors_for(layout)
    pool = kvferry.KvPool.from_tensors(layout, tensors)
    assert pool.kind == kvferry.DRAM and pool.tensor_addresses == [t.ctypes.data for t in tensors]
    assert len(pool.block_descriptors()) == layout.descriptor_count()
    assert kvferry.KvPool.decode(pool.encode()).tensor_addresses == pool.tensor_addresses
    with pytest.raises(kvferry.InvalidArgument, match="tensor 1 holds"):
        kvferry.KvPool.from_tensors(layout, [tensors[0], tensors[1][:, :16].copy()] + tensors[2:])

    planner = kvferry.BlockPlanner.create(layout, layout)
    plan = planner.plan(kvferry.READ, np.array([5, 6, 7, 20], np.uint32), np.array([0, 1, 2, 9], np.int64))
    assert plan.pairs() == 4 * layout.lane_count()
    assert plan.runs().tolist() == [[0, 5, 3], [9, 20, 1]]
    lane0 = plan.local_indices()[:4].tolist()
    assert lane0 == [layout.descriptor_index(0, b) for b in (0, 1, 2, 9)]
    reused = kvferry.BlockPlan()
    assert planner.plan(kvferry.READ, [1], [2], layers=(1, 2), out=reused) is None
    assert (reused.pairs(), reused.first_lane(), reused.end_lane()) == (4, 2, 6)
    with pytest.raises(kvferry.InvalidArgument):
        planner.plan(kvferry.READ, [32], [0])


def test_link_pull_and_mismatch():
    with kvferry.Agent("prefill", backends=["tcp"]) as prefill, kvferry.Agent("decode", backends=["tcp"]) as decode:
        big = kvferry.KvLayout.create(kvferry.KvGeometry(**GEOMETRY), "vllm-nhd", 64)
        small = kvferry.KvLayout.create(kvferry.KvGeometry(**GEOMETRY), "vllm-nhd", 16)
        src, dst = tensors_for(big), [np.full_like(t, 0xFFFF) for t in tensors_for(small)]
        prefill.register_memory(src)
        decode.register_memory(dst)
        kvferry.LocalKvPool.attach(prefill, kvferry.KvPool.from_tensors(big, src))
        local = kvferry.LocalKvPool.attach(decode, kvferry.KvPool.from_tensors(small, dst))
        port = prefill.listen()
        assert decode.fetch_remote("127.0.0.1", port) == "prefill"
        link = local.link(decode, "prefill")
        assert link.remote_pool.layout.blocks == 64

        theirs, ours = np.array([60, 3, 4, 17], np.uint32), np.array([0, 7, 8, 15], np.uint32)
        plan = link.plan(kvferry.READ, theirs, ours)
        request = link.create_transfer(decode, plan, notification="req 1")
        request.post()
        request.wait(10.0)
        for s, d in zip(src, dst):
            assert np.array_equal(d[:, ours], s[:, theirs])
        untouched = np.setdiff1d(np.arange(16), ours)
        assert (dst[0][:, untouched] == 0xFFFF).all()
        assert prefill.wait_for_notifications(5.0)
        assert [n.message for n in prefill.take_notifications()] == [b"req 1"]

        other = kvferry.KvLayout.create(kvferry.KvGeometry(**{**GEOMETRY, "kv_heads": 4}), "vllm-nhd", 16)
        with pytest.raises(kvferry.FailedPrecondition, match="kv_heads 4 vs 2"):
            kvferry.check_kv_compatible(other, big, "prefill")
        assert kvferry.remote_kv_pool(decode, "prefill").layout.blocks == 64


def test_offload_and_onboard(tmp_path):
    layout = kvferry.KvLayout.create(kvferry.KvGeometry(**GEOMETRY), "vllm-nhd", 16)
    with kvferry.Agent("offload", backends=["file"]) as agent:
        src = tensors_for(layout)
        dst = [np.zeros_like(t) for t in src]
        agent.register_memory(src + dst)
        a, b = kvferry.KvPool.from_tensors(layout, src), kvferry.KvPool.from_tensors(layout, dst)
        out = kvferry.offload_blocks(agent, a, np.array([3, 9, 1], np.uint32), str(tmp_path / "store"))
        assert out.bytes == 3 * layout.block_bytes_all_layers() and out.store.source_blocks == [3, 9, 1]
        assert kvferry.inspect_store(str(tmp_path / "store")).checksums
        back = kvferry.onboard_blocks(agent, kvferry.offload_view(b), str(tmp_path / "store"), [0, 1, 2])
        assert back.verified
        for s, d in zip(src, dst):
            assert np.array_equal(d[:, [0, 1, 2]], s[:, [3, 9, 1]])
        with pytest.raises(kvferry.Error):
            kvferry.onboard_blocks(agent, b, str(tmp_path / "missing"), [0])


def test_token_block_helpers():
    table = np.array([4, 8, 15, 16, 23], np.uint32)
    assert kvferry.blocks_after_prefix_hit(table, 40, 16).tolist() == [15, 16, 23]
    layout = kvferry.KvLayout.create(kvferry.KvGeometry(**GEOMETRY), "sglang", 8)
    assert kvferry.blocks_of_slot_runs(layout, [[32, 20], [0, 16]]).tolist() == [2, 3, 0]
    with pytest.raises(kvferry.InvalidArgument):
        kvferry.blocks_of_slot_runs(layout, [[3, 4]])
