"""torch tensors through DLPack (torch is never linked). Skips without torch; the CUDA
case skips without a GPU (scripts/gpu_python_check.sh runs it on the GPU machine)."""

import os
import sys

import numpy as np
import pytest

import kvferry

torch = pytest.importorskip("torch")


def test_cpu_tensors_register_and_move():
    with kvferry.Agent("ta", backends=["loopback"]) as a, kvferry.Agent("tb", backends=["loopback"]) as b:
        src = torch.arange(4096, dtype=torch.int32)
        dst = torch.zeros(4096, dtype=torch.int32)
        a.register_memory(src)
        b.register_memory([dst])
        a.load_remote(b.local_metadata())
        r = a.create_transfer("write", [(src.data_ptr(), 16384)], "tb", [(dst.data_ptr(), 16384)])
        r.post()
        r.wait(5.0)
        assert torch.equal(src, dst)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensors_are_vram_regions():
    layout = kvferry.KvLayout.create(kvferry.KvGeometry(2, 2, 64, 16), "vllm-nhd", 8)
    tensors = [torch.zeros((2, 8, 16, 2, 64), dtype=torch.bfloat16, device="cuda:0") for _ in range(2)]
    with kvferry.Agent("gpu") as agent:
        agent.register_memory(tensors)
        pool = kvferry.KvPool.from_tensors(layout, tensors)
        assert pool.kind == kvferry.VRAM and pool.device == 0
        kvferry.LocalKvPool.attach(agent, pool)
        agent.deregister_memory(tensors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_head_gather_into_a_cuda_tensor():
    layers, heads, tokens = 3, 4, 20
    layout = kvferry.KvLayout.create(kvferry.KvGeometry(layers, heads, 64, 16), "vllm-nhd", 8)
    g = torch.Generator(device="cuda:0").manual_seed(5)
    tensors = [torch.randint(-2**15, 2**15, (2, 8, 16, heads, 64), dtype=torch.int16, device="cuda:0", generator=g)
               for _ in range(layers)]
    pool = kvferry.KvPool.from_tensors(layout, tensors)
    shape = kvferry.KvStagingShape.of(layout, 2, tokens)
    staging = torch.full((shape.bytes() // 2,), -1, dtype=torch.int16, device="cuda:0")
    table = np.array([5, 2], np.uint32)
    torch.cuda.synchronize()
    kvferry.gather_kv_heads(pool, table, 0, tokens, (1, 2), staging)
    idx = torch.as_tensor(table.astype(np.int64), device="cuda:0")
    want = torch.stack([t[:, idx].reshape(2, -1, heads, 64)[:, :tokens, 1:3] for t in tensors])  # [L, 2, T, h, D]
    assert torch.equal(staging.view(2, layers, 2, tokens, 64), want.permute(3, 0, 1, 2, 4))


def _examples_dir():
    """examples/python in the repository, or examples/ beside tests/ in the GPU machine's pack."""
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.path.join(here, "..", "..", "examples", "python"), os.path.join(here, "..", "examples")):
        if os.path.exists(os.path.join(d, "kv_example.py")):
            return d
    pytest.skip("the examples are not beside these tests")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("arrangement", ["flashinfer", "vllm-nhd"])
def test_example_check_on_the_gpu_agrees_with_the_host_check(arrangement):
    sys.path.insert(0, _examples_dir())
    import kv_example
    layout = kvferry.KvLayout.create(kvferry.KvGeometry(3, 2, 64, 16), arrangement, 32)
    tensors = kv_example.allocate_tensors(layout, "vram", 0)
    pattern = kv_example.Pattern(layout, 9)
    pattern.fill(tensors)
    every = np.arange(32, dtype=np.uint32)
    assert pattern.check(tensors, every, every) == 0 == pattern.check(tensors, every, every, on_host=True)
    kv_example.poison(tensors, layout, np.array([3, 17], dtype=np.uint32))
    assert pattern.check(tensors, every, every) == 6 == pattern.check(tensors, every, every, on_host=True)
    one, other = np.array([5], np.uint32), np.array([6], np.uint32)  # block 5 against block 6's contents
    assert pattern.check(tensors, one, other) == 3 == pattern.check(tensors, one, other, on_host=True)
