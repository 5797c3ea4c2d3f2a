"""Heterogeneous tensor parallelism from Python: the head mapping, the head gather and
scatter between layouts, and TpSender / TpReceiver with two prefill ranks in their own
processes feeding one decode rank over tcp (host staging and direct paths), every byte
checked against the prefill ranks' data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kvferry
from conftest import HERE, usable_backends
from tp_prefill_process import BLOCK_TOKENS, BLOCKS, HEAD_DIM, LAYERS, PREFILL_TABLE, tp_data, tp_layout


def tokens_of(tensor, arrangement, table, tokens):
    """[2, tokens, heads, dim] of a request whose block table is `table`."""
    x = tensor[:, table]  # [2, n, bt, H, D] (nhd) or [2, n, H, bt, D] (hnd)
    if arrangement == "vllm-hnd":
        x = x.transpose(0, 1, 3, 2, 4)
    return x.reshape(2, -1, x.shape[3], x.shape[4])[:, :tokens]


def test_mapping():
    m = kvferry.TpMapping.create(8, 4, 2)
    assert (m.kv_heads, m.prefill_tp, m.decode_tp, m.mla) == (8, 4, 2, False)
    assert m.decode_heads(1) == kvferry.HeadRange(4, 4) and m.prefill_heads(3) == kvferry.HeadRange(6, 2)
    shares = m.decode_shares(1)
    assert [(s.prefill_rank, s.decode_rank, s.heads, s.source_head_offset, s.destination_head_offset)
            for s in shares] == [(2, 1, kvferry.HeadRange(4, 2), 0, 0), (3, 1, kvferry.HeadRange(6, 2), 0, 2)]
    assert m.sources_of(0) == [0, 1] and len(m.shares()) == 4 and m.decode_shares(2) == []
    assert m.describe().startswith("8 KV heads, prefill TP 4 -> decode TP 2")
    # Replicated heads: 2 heads on TP 4, decode TP 1 reads each head once.
    r = kvferry.TpMapping.create(2, 4, 1)
    assert kvferry.tp_rank_heads(2, 4, 3) == kvferry.HeadRange(1, 1)
    assert sorted((s.heads.first, s.heads.count) for s in r.decode_shares(0)) == [(0, 1), (1, 1)]
    with pytest.raises(kvferry.InvalidArgument, match="6 KV heads cannot be split over TP 4"):
        kvferry.TpMapping.create(6, 4, 1)


def test_head_gather_and_scatter_between_layouts():
    heads, tokens = 4, 37
    src_layout, dst_layout = tp_layout(heads, "vllm-nhd"), tp_layout(heads, "vllm-hnd")
    src = tp_data(3, 0, heads)
    dst = [np.full((2, BLOCKS, heads, BLOCK_TOKENS, HEAD_DIM), 0xFFFF, np.uint16) for _ in range(LAYERS)]
    src_pool = kvferry.KvPool.from_tensors(src_layout, src)
    dst_pool = kvferry.KvPool.from_tensors(dst_layout, dst)
    shape = kvferry.KvStagingShape.of(src_layout, 2, tokens)
    assert shape.bytes() == 2 * LAYERS * 2 * tokens * HEAD_DIM * 2
    staging = np.zeros(shape.bytes() // 2, np.uint16)
    src_table = np.array([9, 3, 12], np.uint32)
    kvferry.gather_kv_heads(src_pool, src_table, 0, tokens, (1, 2), staging)
    # Staging: [heads, layers, kv, tokens, dim].
    want = np.stack([tokens_of(t, "vllm-nhd", src_table, tokens)[:, :, 1:3] for t in src])  # [L, 2, T, h, D]
    assert np.array_equal(staging.reshape(2, LAYERS, 2, tokens, HEAD_DIM), want.transpose(3, 0, 1, 2, 4))

    dst_table = np.array([0, 7, 15], np.uint32)
    kvferry.scatter_kv_heads(staging, dst_pool, dst_table, 0, tokens, kvferry.HeadRange(2, 2))
    for layer in range(LAYERS):
        got = tokens_of(dst[layer], "vllm-hnd", dst_table, tokens)
        assert np.array_equal(got[:, :, 2:4], want[layer])
        assert (got[:, :, :2] == 0xFFFF).all()
    with pytest.raises(kvferry.InvalidArgument):
        kvferry.gather_kv_heads(src_pool, src_table, 0, tokens, (3, 2), staging)  # heads 3..4 of 4


@pytest.mark.skipif("tcp" not in usable_backends(), reason="tcp is not usable here")
def test_two_prefill_processes_to_one_decode_rank():
    kv_heads, tokens, seed = 4, 50, 7
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "tp_prefill_process.py"), "--rank", str(r),
                               "--prefill-tp", "2", "--decode-tp", "1", "--kv-heads", str(kv_heads), "--tokens",
                               str(tokens), "--seed", str(seed), "--requests", "r-host,r-direct"],
                              stdout=subprocess.PIPE, text=True) for r in range(2)]
    try:
        infos = [json.loads(p.stdout.readline()) for p in procs]
        layout = tp_layout(kv_heads, "vllm-hnd")
        dst = [np.full((2, BLOCKS, kv_heads, BLOCK_TOKENS, HEAD_DIM), 0xFFFF, np.uint16) for _ in range(LAYERS)]
        table = np.array([4, 1, 14, 6], np.uint32)
        expected = []
        for layer in range(LAYERS):  # decode heads 0-1 from rank 0, 2-3 from rank 1
            parts = [tokens_of(tp_data(seed, r, 2)[layer], "vllm-nhd", PREFILL_TABLE, tokens) for r in range(2)]
            expected.append(np.concatenate(parts, axis=2))
        with kvferry.Agent("tp-decode-0", backends=["tcp"]) as agent:
            agent.register_memory(dst)
            pool = kvferry.KvPool.from_tensors(layout, dst)
            receiver = kvferry.TpReceiver(agent, pool, kvferry.TpGroups(kv_heads, 2, 1), 0,
                                          staging=kvferry.TpStagingOptions(slot_bytes=1 << 20, host_slots=4,
                                                                           device_slots=0))
            names = [agent.fetch_remote("127.0.0.1", i["port"]) for i in infos]
            receiver.connect(names)
            assert len(receiver.describe_sources()) == 2
            for request, path in (("r-host", kvferry.TpPath.HOST), ("r-direct", kvferry.TpPath.DIRECT)):
                for t in dst:
                    t.fill(0xFFFF)
                receiver.expect(request, table, tokens, path=path)
                receiver.wait(request, 30.0)
                report = receiver.last_report()
                assert (report.path, report.sources, report.bytes) == (path, 2, tokens * LAYERS * 2 * kv_heads * HEAD_DIM * 2)
                for layer in range(LAYERS):
                    assert np.array_equal(tokens_of(dst[layer], "vllm-hnd", table, tokens), expected[layer]), (request, layer)
                    # Slots past the last token of the last block stay untouched.
                    assert (tokens_of(dst[layer], "vllm-hnd", table, 64)[:, tokens:] == 0xFFFF).all()
            with pytest.raises(kvferry.Timeout, match="tp-prefill"):
                receiver.expect("never-sent", table, tokens)
                receiver.wait("never-sent", 0.3)
            for name in names:
                agent.notify(name, "quit")
            agent.close()  # closes the receiver first
            with pytest.raises(kvferry.FailedPrecondition, match="closed"):
                receiver.progress()
        for p in procs:
            assert p.wait(30) == 0
            assert p.stdout.read().split() == ["sent", "r-host", "sent", "r-direct"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
            p.stdout.close()
