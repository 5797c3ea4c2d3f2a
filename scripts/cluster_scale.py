#!/usr/bin/env python3
"""Many agents in one etcd namespace: join, discover, and notice deaths.

Starts a private etcd on free loopback ports (data in a temporary folder), runs
--agents agents as `kvferry swarm` processes (--per-process agents each), waits until
every agent has discovered every other, SIGKILLs a random 10% of the agents (whole
processes), and checks that every survivor reports every death within the lease time
(etcd drops a dead agent's key when its lease runs out; each agent renews every third of
it). Prints join time, discovery time, detection latency and etcd traffic per agent.

  scripts/cluster_scale.py [--agents 128] [--per-process 1] [--lease-s 5] [--kvferry PATH] [--json]

Exit status: 0 all checks passed, 1 a check failed, 77 etcd is not installed (skip).
"""
import argparse
import json
import os
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_etcd(workdir, nice=0):
    etcd = shutil.which("etcd") or ("/usr/bin/etcd" if os.path.exists("/usr/bin/etcd") else None)
    if not etcd:
        return None, None
    for _ in range(3):
        cport, pport = free_port(), free_port()
        client, peer = f"http://127.0.0.1:{cport}", f"http://127.0.0.1:{pport}"
        proc = subprocess.Popen(
            (["nice", "-n", str(nice)] if nice else []) + [etcd, "--name=scale", f"--data-dir={workdir}/data", f"--listen-client-urls={client}",
             f"--advertise-client-urls={client}", f"--listen-peer-urls={peer}",
             f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=scale={peer}",
             "--logger=zap", f"--log-outputs={workdir}/etcd.log",
             # A 1 s lease floor (1.5 election timeouts), so leases down to 2 s can be promised.
             "--heartbeat-interval=50", "--election-timeout=500"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 15
        while time.time() < deadline and proc.poll() is None:
            try:
                req = urllib.request.Request(f"{client}/v3/kv/range", data=b'{"key":"AA=="}', method="POST")
                with urllib.request.urlopen(req, timeout=1) as r:
                    if r.status == 200:
                        return proc, cport
            except OSError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    return None, None


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=128)
    ap.add_argument("--per-process", type=int, default=1)
    ap.add_argument("--lease-s", type=int, default=5)
    ap.add_argument("--kill-fraction", type=float, default=0.10)
    ap.add_argument("--backend", default="tcp")
    ap.add_argument("--stagger-ms", type=float, default=20, help="pause between process launches")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--kvferry", default=os.path.join(os.path.dirname(__file__), "..", "build", "tools", "kvferry"))
    ap.add_argument("--etcd-nice", type=int, default=0,
                    help="run etcd at this nice level (negative needs root): etcd stands for a service on its own "
                         "hosts, which 128 agents on a few cores would otherwise starve")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.agents % a.per_process:
        sys.exit("--agents must be a multiple of --per-process")
    rng = random.Random(a.seed)
    workdir = tempfile.mkdtemp(prefix="kvferry-scale-")
    etcd, port = start_etcd(workdir, a.etcd_nice)
    if not etcd:
        print("cluster_scale: etcd is not installed or did not start (apt-get install etcd-server)", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        sys.exit(77)
    url = f"etcd://127.0.0.1:{port}/scale"
    nproc = a.agents // a.per_process
    procs = {}
    sel = selectors.DefaultSelector()
    buffers = {}
    events = []
    failed = []

    def pump(timeout):
        for key, _ in sel.select(timeout):
            tag = key.data
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                sel.unregister(key.fileobj)
                continue
            buffers[tag] += chunk
            while b"\n" in buffers[tag]:
                line, buffers[tag] = buffers[tag].split(b"\n", 1)
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                ev["proc"] = tag
                events.append(ev)

    try:
        launch_ms = time.time() * 1e3
        for p in range(nproc):
            tag = f"p{p:03d}"
            proc = subprocess.Popen(
                [a.kvferry, "swarm", "--metadata", url, "--agents", str(a.per_process), "--expect", str(a.agents),
                 "--tag", tag, "--lease-s", str(a.lease_s), "--backend", a.backend, "--watch-s", "600",
                 "--discover-s", "120"], stdout=subprocess.PIPE, stderr=open(f"{workdir}/{tag}.err", "wb"))
            procs[tag] = proc
            time.sleep(a.stagger_ms / 1e3)  # two cores: a herd of process starts only measures the herd
            buffers[tag] = b""
            os.set_blocking(proc.stdout.fileno(), False)
            sel.register(proc.stdout, selectors.EVENT_READ, tag)
        deadline = time.time() + 180
        while time.time() < deadline:
            pump(0.2)
            if sum(1 for e in events if e["event"] == "discovered") >= a.agents:
                break
            dead = [t for t, pr in procs.items() if pr.poll() is not None]
            if dead:
                failed.append(f"swarm processes exited early: {dead[:5]} (see {workdir})")
                break
        joined = [e for e in events if e["event"] == "joined"]
        discovered = [e for e in events if e["event"] == "discovered"]
        if len(discovered) < a.agents and not failed:
            failed.append(f"only {len(discovered)} of {a.agents} agents discovered everyone within 180 s")
        join_ms = [e["join_ms"] for e in joined]
        joined_at = {e["agent"]: e["start_ms"] + e["join_ms"] for e in joined}
        all_joined_ms = max(joined_at.values()) - launch_ms if joined_at else float("nan")
        discovery_ms = max(e["at_ms"] for e in discovered) - launch_ms if discovered else float("nan")
        after_last_join = [e["at_ms"] - max(joined_at.values()) for e in discovered] if joined_at else []
        setup_traffic = [e["traffic"] for e in discovered]

        # Deaths: a random 10% of the agents, as whole processes.
        kill_procs = rng.sample(sorted(procs), max(1, round(nproc * a.kill_fraction))) if not failed else []
        dead_agents = {e["agent"] for e in joined if e["proc"] in kill_procs}
        kill_ms = time.time() * 1e3
        for tag in kill_procs:
            procs[tag].kill()
        survivors = {e["agent"] for e in joined} - dead_agents
        seen = {}
        wait_until = time.time() + a.lease_s + 10
        while kill_procs and time.time() < wait_until:
            pump(0.2)
            for e in events:
                if (e["event"] == "left" and e["peer"] in dead_agents and e["agent"] in survivors
                        and e["at_ms"] >= kill_ms):
                    seen.setdefault((e["agent"], e["peer"]), e["at_ms"] - kill_ms)
            if len(seen) >= len(survivors) * len(dead_agents):
                break
        # A live agent reported as gone: its lease lapsed (renewals starved of CPU); it joins again.
        spurious = sum(1 for e in events if e["event"] == "left" and e["peer"] not in dead_agents)
        missing = len(survivors) * len(dead_agents) - len(seen)
        if kill_procs and missing:
            failed.append(f"{missing} (survivor, dead agent) departures were never reported")
        detect = list(seen.values())
        if detect and max(detect) > a.lease_s * 1e3:
            failed.append(f"a departure took {max(detect):.0f} ms, beyond the {a.lease_s} s lease")

        # Steady-state traffic: survivors' totals at the end.
        steady_from = time.time()
        for tag, pr in procs.items():
            if tag not in kill_procs:
                pr.send_signal(signal.SIGTERM)
        end_deadline = time.time() + 30
        while time.time() < end_deadline and any(pr.poll() is None for pr in procs.values()):
            pump(0.2)
        pump(0.2)
        final = {e["agent"]: e["traffic"] for e in events if e["event"] == "traffic"}
        run_s = steady_from * 1e3 - launch_ms

        def per_agent(samples, key):
            return statistics.mean(s[key] for s in samples) if samples else float("nan")

        result = {
            "agents": a.agents, "processes": nproc, "per_process": a.per_process, "lease_s": a.lease_s,
            "backend": a.backend, "seed": a.seed,
            "join_ms": {"median": pct(join_ms, 0.5), "p99": pct(join_ms, 0.99), "max": max(join_ms, default=0)},
            "all_joined_ms": all_joined_ms,
            "discovery_ms": discovery_ms,
            "discovery_after_last_join_ms": {"median": pct(after_last_join, 0.5), "max": max(after_last_join, default=0)},
            "killed_agents": len(dead_agents),
            "survivors": len(survivors),
            "departures_seen": len(seen),
            "spurious_departures": spurious,
            "detection_ms": {"min": min(detect, default=0), "median": pct(detect, 0.5), "max": max(detect, default=0)},
            "etcd_bytes_per_agent_at_discovery": {"sent": per_agent(setup_traffic, "sent"),
                                                  "received": per_agent(setup_traffic, "received"),
                                                  "requests": per_agent(setup_traffic, "requests")},
            "etcd_bytes_per_agent_total": {"sent": per_agent(list(final.values()), "sent"),
                                           "received": per_agent(list(final.values()), "received"),
                                           "requests": per_agent(list(final.values()), "requests")},
            "run_s": run_s / 1e3,
            "failures": failed,
        }
        if a.json:
            print(json.dumps(result))
        else:
            print(f"cluster_scale: {a.agents} agents in {nproc} processes, lease {a.lease_s} s, backend {a.backend}")
            print(f"  join (create, one agent)      median {result['join_ms']['median']:.1f} ms, "
                  f"p99 {result['join_ms']['p99']:.1f} ms, max {result['join_ms']['max']:.1f} ms")
            print(f"  all joined after launch       {all_joined_ms:.0f} ms")
            print(f"  all discovered after launch   {discovery_ms:.0f} ms "
                  f"(after the last join: median {result['discovery_after_last_join_ms']['median']:.0f} ms, "
                  f"max {result['discovery_after_last_join_ms']['max']:.0f} ms)")
            print(f"  killed {len(dead_agents)} agents; {len(seen)} of {len(survivors) * len(dead_agents)} "
                  f"departures seen; detection after kill: min {result['detection_ms']['min']:.0f} ms, "
                  f"median {result['detection_ms']['median']:.0f} ms, max {result['detection_ms']['max']:.0f} ms "
                  f"(lease {a.lease_s * 1000} ms); live agents reported gone (lapsed leases): {spurious}")
            t0, t1 = result["etcd_bytes_per_agent_at_discovery"], result["etcd_bytes_per_agent_total"]
            print(f"  etcd traffic per agent, to discovery: sent {t0['sent'] / 1024:.1f} KiB, "
                  f"received {t0['received'] / 1024:.1f} KiB, {t0['requests']:.0f} requests")
            print(f"  etcd traffic per agent, whole run ({run_s / 1e3:.1f} s): sent {t1['sent'] / 1024:.1f} KiB, "
                  f"received {t1['received'] / 1024:.1f} KiB, {t1['requests']:.0f} requests")
            for f in failed:
                print(f"  FAILED: {f}")
        return 1 if failed else 0
    finally:
        for pr in procs.values():
            if pr.poll() is None:
                pr.kill()
            pr.wait()
        etcd.kill()
        etcd.wait()
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
