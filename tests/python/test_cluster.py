"""Agents that meet over time: named regions, peer events, find/wait for peers, the
Prometheus endpoint, and a real etcd as the metadata service (skipped without etcd)."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

import numpy as np
import pytest

import kvferry


def test_named_regions_peer_events_and_finding_peers():
    with kvferry.Agent("prefill-0", backends=["tcp"]) as p, kvferry.Agent("decode-0", backends=["tcp"]) as d:
        layers = [np.zeros(4096, np.uint8) for _ in range(3)]
        p.register_memory(layers[:2], name="kv.layer")
        p.register_memory(layers[2], name="kv.layer")  # a name's regions add up, in order
        p.register_memory(np.zeros(64, np.uint8))
        port = p.listen()
        assert d.find_peers("") == [] and d.take_peer_events() == []
        assert d.fetch_remote("127.0.0.1", port) == "prefill-0"
        assert d.remote_region_names("prefill-0") == ["kv.layer"]
        regions = d.remote_named_regions("prefill-0", "kv.layer")
        assert [regions[i] for i in range(len(regions))] == [(a.ctypes.data, 4096, 0) for a in layers]
        with pytest.raises(kvferry.NotFound):
            d.remote_named_regions("prefill-0", "nothing")
        assert d.wait_for_peer_events(5.0)
        (joined,) = d.take_peer_events()
        assert (joined.kind, joined.peer) == (kvferry.PeerEventKind.JOINED, "prefill-0") and joined.revision > 0

        # More memory, fetched again: an update in place with a higher revision.
        p.register_memory(np.zeros(4096, np.uint8), name="kv.extra")
        d.fetch_remote("127.0.0.1", port)
        (updated,) = d.take_peer_events()
        assert (updated.kind, updated.revision > joined.revision) == (kvferry.PeerEventKind.UPDATED, True)
        assert d.remote_region_names("prefill-0") == ["kv.extra", "kv.layer"]

        assert d.find_peers("prefill") == ["prefill-0"] and d.find_peers("decode") == []
        assert d.wait_for_peers("prefill-", 1, 1.0) == ["prefill-0"]
        t0 = time.monotonic()
        with pytest.raises(kvferry.Timeout, match="1"):
            d.wait_for_peers("prefill-", 2, 0.3)
        assert 0.25 < time.monotonic() - t0 < 3
        d.forget_remote("prefill-0")
        assert [(e.kind, e.peer) for e in d.take_peer_events()] == [(kvferry.PeerEventKind.LEFT, "prefill-0")]
        assert len(p.instance_id()) == 32 and p.instance_id() != d.instance_id()
        d.sync_metadata(1.0)  # no service: returns at once


def test_metrics_endpoint():
    with kvferry.Agent("metered", backends=["loopback"], metrics_address="127.0.0.1:0") as agent:
        port = agent.metrics_port()
        assert port > 0
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "kvferry_" in body and body.splitlines()[0].startswith("#")
        assert "kvferry_" in agent.metrics_text()
    with kvferry.Agent("unmetered", backends=["loopback"]) as agent:
        with pytest.raises(kvferry.NotFound):
            agent.metrics_port()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def etcd():
    binary = shutil.which("etcd") or next((p for p in ("/usr/bin/etcd",) if os.access(p, os.X_OK)), None)
    if not binary:
        pytest.skip("etcd is not installed (scripts/bootstrap.sh installs etcd-server)")
    folder = tempfile.mkdtemp(prefix="kvferry-py-etcd-")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([binary, "--name=kvferry-py", f"--data-dir={folder}/data", f"--listen-client-urls={client}",
                             f"--advertise-client-urls={client}", f"--listen-peer-urls={peer}",
                             f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=kvferry-py={peer}",
                             f"--log-outputs={folder}/etcd.log", "--logger=zap"])
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(client + "/health", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.skip(f"etcd exited with {proc.returncode}")
                time.sleep(0.1)
        else:
            pytest.skip("etcd did not come up within 15 s")
        yield client.replace("http://", "etcd://")
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def seen_within(agent, read, seconds=10.0):
    """read() once it stops raising NotFound (the agent applies peers' updates as they come)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return read()
        except kvferry.NotFound:
            if time.monotonic() > deadline:
                raise
            agent.wait_for_peer_events(0.1)
            agent.take_peer_events()


def test_metadata_service_joins_updates_and_leaves(etcd):
    url = etcd + "/py-" + str(os.getpid())
    # etcd as installed grants leases of at least 2 s; metadata_lease 3 asks for 2 (one
    # second of margin), a shorter one is refused at create.
    with kvferry.Agent("reader", backends=["tcp"], metadata_service=url, metadata_lease=3) as reader:
        writer = kvferry.Agent("writer-0", backends=["tcp"], metadata_service=url, metadata_lease=3)
        buf = np.zeros(8192, np.uint8)
        writer.register_memory(buf, name="pool")
        writer.sync_metadata(5.0)
        assert reader.wait_for_peers("writer-", 1, 10.0) == ["writer-0"]
        # It may have joined before its registration reached the service: updates follow.
        assert seen_within(reader, lambda: reader.remote_named_regions("writer-0", "pool")[0]) == \
            (buf.ctypes.data, 8192, 0)
        writer.set_metadata_entry("role", b"prefill")
        writer.sync_metadata(5.0)
        assert seen_within(reader, lambda: reader.remote_metadata_entry("writer-0", "role")) == b"prefill"
        writer.close()  # its entry is withdrawn (or its lease runs out): the reader sees it leave
        deadline = time.monotonic() + 10
        left = False
        while not left and time.monotonic() < deadline:
            reader.wait_for_peer_events(0.2)
            left = any(e.kind == kvferry.PeerEventKind.LEFT and e.peer == "writer-0" for e in reader.take_peer_events())
        assert left and reader.find_peers("writer") == []
    with pytest.raises(kvferry.Error, match="etcd"):
        kvferry.Agent("lonely", backends=["tcp"], metadata_service="etcd://127.0.0.1:1/ns")
