"""Reference counting and lifetimes: registered memory stays alive while registered; a
request, a prepared list or a KV link that outlives its agent is safe; the GIL is
released while waiting."""

import gc
import threading
import time
import weakref

import numpy as np
import pytest

import kvferry


def test_registered_array_stays_alive_until_deregistered():
    with kvferry.Agent("rc", backends=["loopback"]) as agent:
        a = np.zeros(1 << 16, dtype=np.uint8)
        ref = weakref.ref(a)
        region = (a.ctypes.data, a.nbytes)
        agent.register_memory(a)
        del a
        gc.collect()
        assert ref() is not None, "a registered array was freed"
        agent.deregister_memory(region)  # by extent: drops our reference
        gc.collect()
        assert ref() is None


def test_closing_the_agent_drops_registered_memory():
    agent = kvferry.Agent("rc2", backends=["loopback"])
    a = np.zeros(4096, dtype=np.uint8)
    ref = weakref.ref(a)
    agent.register_memory([a])
    del a
    agent.close()
    gc.collect()
    assert ref() is None


def test_request_and_prepared_lists_outlive_their_agent():
    a = kvferry.Agent("short", backends=["loopback"])
    b = kvferry.Agent("peer", backends=["loopback"])
    src, dst = np.ones(1 << 20, np.uint8), np.zeros(1 << 20, np.uint8)
    a.register_memory(src)
    b.register_memory(dst)
    a.load_remote(b.local_metadata())
    ours = a.prepare_local([(src.ctypes.data, src.nbytes)])
    theirs = a.prepare_remote("peer", [(dst.ctypes.data, dst.nbytes)])
    request = a.create_transfer("write", ours, [0], theirs, [0])
    request.post()
    del a  # the last reference: the agent is destroyed with a request possibly in flight
    gc.collect()
    try:
        request.wait(5.0)  # either it finished before, or it reports an error
    except kvferry.Error:
        pass
    with pytest.raises(kvferry.Error):
        request.post()
    assert request.state in (kvferry.TransferState.DONE, kvferry.TransferState.ERROR)
    assert len(ours) == 1 and theirs.peer == "peer"
    b.close()


class Counter(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.count, self.stop = 0, False

    def run(self):
        while not self.stop:
            self.count += 1
            time.sleep(0.001)


def test_waits_release_the_gil(peer_factory):
    counter = Counter()
    counter.start()
    with kvferry.Agent("gil", backends=["tcp"]) as agent:
        before = counter.count
        assert not agent.wait_for_notifications(0.3)
        assert counter.count - before >= 20, "another thread made no progress during wait_for_notifications"

        peer = peer_factory("tcp", 64 << 20)
        before = counter.count
        agent.fetch_remote("127.0.0.1", peer.port)
        local = np.zeros(64 << 20, np.uint8)
        agent.register_memory(local)
        request = agent.create_transfer("read", [(local.ctypes.data, local.nbytes)], "peer",
                                        [(peer.address, local.nbytes)])
        saw_timeout = False
        for _ in range(5):
            request.post()
            try:
                request.wait(0.0)  # 64 MiB over tcp is still in flight right after post
            except kvferry.Timeout:
                saw_timeout = True
            request.wait(30.0)
            if saw_timeout:
                break
        assert saw_timeout, "wait(0) never raised kvferry.Timeout on a transfer in flight"
        assert counter.count > before
    counter.stop = True
    counter.join()
