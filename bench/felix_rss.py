"""Bench: Felix's resident memory with N workload endpoints on its node (goal ≤ 200 MB at 10,000).

In a throwaway network namespace: an etcd on its loopback, a pool, the node,
N WorkloadEndpoints on that node (written by a helper inside the namespace),
then ``calico-felix``; once it reports ready (the first in-sync apply done,
N routes calculated and waiting for their interfaces), its VmRSS is read from
/proc. The baseline in the same run is an idle Python interpreter's RSS.

    python3 -m bench.felix_rss [--n 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from tests.etcd_server import EtcdServer

NS = f"pcrss{os.getpid() % 100000}"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def write(endpoint: str, n: int) -> None:
    from libcalico import api
    from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
    from libcalico.model import KVPair, ResourceKey

    be = EtcdBackend(EtcdConfig(endpoints=(endpoint,)))
    docs = [api.IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/8"}}),
            api.Node.model_validate({"metadata": {"name": "bench-node"},
                                     "spec": {"bgp": {"ipv4Address": "192.168.3.111/24"}}})]
    for d in docs:
        await be.create(KVPair(ResourceKey.for_resource(d), d))
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        w = api.WorkloadEndpoint.model_validate({"metadata": {"name": f"bench--node-k8s-pod{i}-eth0",
                                                              "namespace": "default",
                                                              "labels": {"app": f"a{i % 50}"}},
                                                 "spec": {"node": "bench-node", "orchestrator": "k8s",
                                                          "pod": f"pod{i}", "endpoint": "eth0",
                                                          "interfaceName": f"cali{i:011x}",
                                                          "ipNetworks": [f"{ip}/32"],
                                                          "profiles": ["kns.default"]}})
        async with sem:
            await be.create(KVPair(ResourceKey.for_resource(w), w))

    await asyncio.gather(*(one(i) for i in range(1, n + 1)))
    await be.close()


def ready() -> bool:
    code = ("import urllib.request\ntry: print(urllib.request.urlopen('http://127.0.0.1:9099/readiness',"
            "timeout=2).status)\nexcept Exception: print(0)")
    r = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", code], capture_output=True, text=True)
    return r.stdout.strip() == "204"


def main(n: int) -> dict[str, float]:
    subprocess.run(["ip", "netns", "add", NS], check=True)
    etcd = EtcdServer(netns=NS)
    felix: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(["ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up"], check=True)
        etcd.start()
        subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-m", "bench.felix_rss", "--writer",
                        etcd.endpoint, "--n", str(n)], check=True, cwd=ROOT)
        env = {**os.environ, "ETCD_ENDPOINTS": etcd.endpoint, "DATASTORE_TYPE": "etcdv3",
               "FELIX_FELIXHOSTNAME": "bench-node", "FELIX_LOGSEVERITYSCREEN": "WARNING"}
        started = time.monotonic()
        felix = subprocess.Popen(["ip", "netns", "exec", NS, "calico-felix"], env=env)
        deadline = time.monotonic() + 600
        while not ready():
            if time.monotonic() > deadline or felix.poll() is not None:
                raise RuntimeError("Felix did not become ready")
            time.sleep(0.5)
        to_ready = time.monotonic() - started
        felix_rss = rss_mb(felix.pid)
        idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        time.sleep(0.5)
        idle_rss = rss_mb(idle.pid)
        idle.kill()
    finally:
        if felix is not None:
            felix.terminate()
            felix.wait(30)
        etcd.cleanup()
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    return {"endpoints": n, "felix_rss_mb": round(felix_rss, 1), "idle_python_rss_mb": round(idle_rss, 1),
            "seconds_to_ready": round(to_ready, 1)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--writer", default="")
    a = p.parse_args()
    if a.writer:
        asyncio.run(write(a.writer, a.n))
    else:
        print(json.dumps(main(a.n), indent=2))
