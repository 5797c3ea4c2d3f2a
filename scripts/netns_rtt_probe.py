#!/usr/bin/env python3
"""Round-trip time of a TCP path, for scripts/netns_lib.sh (every wait bounded).

  netns_rtt_probe.py serve ADDR PORT     echo one connection's bytes back, then exit
  netns_rtt_probe.py ping ADDR PORT N    N 1-byte round trips; prints the median in us
"""
import socket
import statistics
import sys
import time

mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "serve":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    s.settimeout(10)
    c, _ = s.accept()
    c.settimeout(10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while b := c.recv(64):
        c.sendall(b)
else:
    c = socket.create_connection((addr, port), timeout=5)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(int(sys.argv[4])):
        t0 = time.perf_counter()
        c.sendall(b"x")
        if not c.recv(64):
            sys.exit(1)
        times.append((time.perf_counter() - t0) * 1e6)
    print("%.0f" % statistics.median(times))
