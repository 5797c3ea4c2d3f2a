"""The examples end to end on host memory, as real processes."""

import json
import os
import re
import subprocess
import sys

from conftest import EXAMPLES

SMALL = ["--layers", "4", "--heads", "2", "--head-dim", "64", "--tokens-per-block", "16", "--pool-blocks", "64"]


def test_vram_server_and_client_on_dram():
    server = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, "vram_server.py"), "--port", "0", "--mem", "dram",
                               *SMALL], stdout=subprocess.PIPE, text=True, cwd=EXAMPLES)
    try:
        port = None
        for _ in range(10):
            line = server.stdout.readline()
            m = re.search(r"listening on [\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "the server did not say where it listens"
        for layout in ("flashinfer",):
            client = subprocess.run(
                [sys.executable, os.path.join(EXAMPLES, "vram_client.py"), "--port", str(port), "--mem", "dram",
                 "--num-tokens", "500", "--iterations", "3", "--json", "--layout", layout, *SMALL],
                capture_output=True, text=True, timeout=120, cwd=EXAMPLES)
            assert client.returncode == 0, client.stdout + client.stderr
            summary = json.loads(client.stdout.strip().splitlines()[-1])
            assert summary["verified"] and len(summary["gbps"]) == 3
            assert summary["bytes"] == 32 * 4 * 2 * 2 * 64 * 16 * 2  # 32 blocks x 4 layers x block bytes
            assert client.stdout.count("verified") >= 4
        # Only the last step checked (the others back to back, as the bench times them), with a
        # pause, from an agent that starts tcp alone.
        client = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, "vram_client.py"), "--port", str(port), "--mem", "dram",
             "--num-tokens", "500", "--iterations", "3", "--warmup", "1", "--verify", "last", "--pause-ms", "1",
             "--agent-backends", "tcp", "--backend", "tcp", "--json", *SMALL],
            capture_output=True, text=True, timeout=120, cwd=EXAMPLES)
        assert client.returncode == 0, client.stdout + client.stderr
        summary = json.loads(client.stdout.strip().splitlines()[-1])
        assert summary["verified"] and summary["steps_checked"] == 1 and summary["verify"] == "last"
        assert summary["backend"] == "tcp" and len(summary["gbps"]) == 3 and summary["gap_ms_median"] >= 1.0
        assert client.stdout.count("not checked") == 3 and "every byte of the last step verified" in client.stdout
        # A client with another geometry is refused, naming the field.
        bad = subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, "vram_client.py"), "--port", str(port), "--num-tokens", "64",
             "--iterations", "1", *SMALL[:2], "--heads", "4", *SMALL[4:]],
            capture_output=True, text=True, timeout=60, cwd=EXAMPLES)
        assert bad.returncode != 0 and "kv_heads 4 vs 2" in bad.stderr
    finally:
        server.terminate()
        server.wait(10)
    out = server.stdout.read()
    assert "client done with request 0" in out


def test_connector_requests_over_time_and_a_dying_peer():
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, "connector.py"), "--requests", "12",
                        "--peer-timeout", "1.0"], capture_output=True, text=True, timeout=120, cwd=EXAMPLES)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" layers in ") == 12 and r.stdout.count(", verified\n") == 12
    assert "12 requests pulled and verified, 1 lost with their prefill worker" in r.stdout
    assert "PeerLost" in r.stdout


def test_example_check_counts_the_blocks_that_differ():
    sys.path.insert(0, EXAMPLES)
    import kv_example
    import numpy as np

    import kvferry
    for arrangement in ("flashinfer", "vllm-nhd"):
        layout = kvferry.KvLayout.create(kvferry.KvGeometry(3, 2, 64, 16), arrangement, 32)
        tensors = kv_example.allocate_tensors(layout, "dram", 0)
        pattern = kv_example.Pattern(layout, 9)
        pattern.fill(tensors)
        every = np.arange(32, dtype=np.uint32)
        assert pattern.check(tensors, every, every) == 0
        kv_example.poison(tensors, layout, np.array([3, 17], dtype=np.uint32))
        assert pattern.check(tensors, every, every) == 6  # 2 blocks x 3 layers
        assert pattern.check(tensors, np.array([5], np.uint32), np.array([6], np.uint32)) == 3
