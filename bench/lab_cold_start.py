"""Bench: cold start of the cluster in a box to every pod reachable (4 nodes; goal ≤ 20 s).

Times ``calico-lab up --nodes 4`` plus one pod per node through the CNI plugin,
until every pod pings every other (each ping bounded, retried until a deadline).
Baseline in the same run: starting and stopping the same number of bare
network namespaces with an etcd, i.e. what any namespace cluster costs before
Calico does anything.

    python3 -m bench.lab_cold_start [--encap vxlan]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.cluster import Lab
from lab.etcd import EtcdServer


def baseline(n: int) -> float:
    t = time.perf_counter()
    names = [f"pcbase{os.getpid() % 10000}-{i}" for i in range(n + 1)]
    for name in names:
        subprocess.run(["ip", "netns", "add", name], check=True)
    etcd = EtcdServer(netns=names[0])
    subprocess.run(["ip", "netns", "exec", names[0], "ip", "link", "set", "lo", "up"], check=True)
    etcd.start()
    took = time.perf_counter() - t
    etcd.cleanup()
    for name in names:
        subprocess.run(["ip", "netns", "del", name], check=True)
    return took


def cold_start(encap: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(Path(tmp), f"bench{os.getpid() % 1000}", say=lambda m: None)
        t = time.perf_counter()
        try:
            lab.up(n, encap, "mesh")
            pods = {f"p{i}": node for i, node in enumerate(lab.state.nodes)}
            # Pods start concurrently, as a scheduler starts them on different nodes.
            with ThreadPoolExecutor(len(pods)) as pool:
                list(pool.map(lambda item: lab.pod_create(*item), pods.items()))
            deadline = time.monotonic() + 120
            pending = {(a, b) for a in pods for b in pods if a != b}
            while pending and time.monotonic() < deadline:
                for a, b in sorted(pending):
                    r = lab.run(lab.state.pods[a]["ns"], "ping", "-c", "1", "-W", "1", lab.state.pods[b]["ip"],
                                check=False)
                    if r.returncode == 0:
                        pending.discard((a, b))
            if pending:
                raise RuntimeError(f"not reachable: {sorted(pending)}")
            return time.perf_counter() - t
        finally:
            lab.down(quiet=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--encap", default="vxlan")
    p.add_argument("--nodes", type=int, default=4)
    a = p.parse_args()
    base = baseline(a.nodes)
    took = cold_start(a.encap, a.nodes)
    print(json.dumps({"nodes": a.nodes, "encap": a.encap, "cold_start_to_all_pods_reachable_s": round(took, 1),
                      "bare_namespaces_and_etcd_s": round(base, 2), "ratio": round(took / base, 1)}, indent=2))
