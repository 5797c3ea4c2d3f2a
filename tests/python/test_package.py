"""The package itself: names, type stubs in step with the module, the binding-cost bench."""

import os
import subprocess
import sys

import pytest

import kvferry


def test_names_and_build_info():
    for name in ("Agent", "TransferRequest", "PreparedList", "DescriptorList", "KvLayout", "KvPool", "LocalKvPool",
                 "KvLink", "BlockPlanner", "PeerLost", "InvalidArgument", "Timeout", "offload_blocks", "BlockLanes",
                 "PreparedLanes", "CompletionQueue", "Completion", "post_batch", "wait_completions", "PeerEvent",
                 "PeerEventKind", "TpMapping", "TpSender", "TpReceiver", "gather_kv_heads", "scatter_kv_heads"):
        assert hasattr(kvferry, name), name
    names = {b.name for b in kvferry.compiled_backends()}
    assert {"loopback", "tcp", "shm", "file"} <= names
    assert kvferry.version_string()


def test_stubs_match_the_module(tmp_path):
    stubgen = pytest.importorskip("nanobind.stubgen")
    checked_in = os.path.join(os.path.dirname(kvferry.__file__), "_kvferry.pyi")
    out = tmp_path / "_kvferry.pyi"
    subprocess.run([sys.executable, "-m", "nanobind.stubgen", "-q", "-m", "kvferry._kvferry", "-o", str(out)],
                   check=True)
    assert open(checked_in).read() == out.read_text(), \
        "python/kvferry/_kvferry.pyi is stale: python -m nanobind.stubgen -q -m kvferry._kvferry -o python/kvferry/_kvferry.pyi"


def test_binding_cost_bench_runs():
    from kvferry import bench
    r = bench.run(layers=2, blocks=64, pool_blocks=128, rounds=1, iterations=2)
    assert r["descriptors"] == 2 * 2 * 64 and r["ratio"] > 0
    r = bench.run(layers=2, blocks=64, pool_blocks=128, rounds=1, iterations=2, form="lanes")
    assert (r["form"], r["descriptors"]) == ("lanes", 2 * 2 * 64) and r["ratio"] > 0


def test_wait_latency_bench_runs():
    from kvferry import bench
    (small, large) = bench.run_wait(sizes=(64, 1 << 20), rounds=1, iterations=5, backend="tcp")
    assert (small["bytes"], large["bytes"], large["samples"]) == (64, 1 << 20, 5)
    assert large["cxx_us"] > 0 and large["python_us"] > 0 and large["transfer_us"] > 0
