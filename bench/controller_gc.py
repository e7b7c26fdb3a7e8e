"""Bench: one IPAM garbage collection of N allocations (some leaked) against a raw list of the same objects.

Calico's state is in the memory backend (the bench measures the collector, not a
datastore); Nodes and Pods are in the test API server (tests/kube_api.py),
populated straight into its store (setup is not measured). ``--leaked`` pods are
deleted before the collector starts. With a grace period that has already passed
by the second scan, scan 1 marks the candidates and scan 2 confirms and releases
them, as a running controller would over two syncs. Baseline: the reads any GC
needs, done raw: one ``list_pod_for_all_namespaces`` and one ``list_node`` through
kubernetes-asyncio (parsed JSON) plus one list of the IPAM blocks. Reports the
time of both scans, the Kubernetes API calls they made, and the ratio to the raw reads.

    python3 -m bench.controller_gc [--n 10000] [--leaked 1000] [--nodes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from controller import kube as kube_mod
from controller.ipam_gc import IPAMGarbageCollector
from libcalico import api, ipam
from libcalico.backend.kubernetes import conversion
from libcalico.backend.memory import MemoryBackend
from libcalico.client import Client
from libcalico.model import ResourceListOptions
from tests.kube_api import CORE, running_api

ROOT = Path(__file__).resolve().parent.parent


async def main(n: int, leaked: int, nodes: int) -> dict[str, float]:
    be = MemoryBackend()
    calico = Client(be)
    await calico.create(api.IPPool.model_validate({"metadata": {"name": "pool"},
                                                   "spec": {"cidr": "10.0.0.0/14", "blockSize": 26}}))
    served = {s.plural: s for s in CORE}
    alloc = ipam.IPAM(be)
    with tempfile.TemporaryDirectory() as tmp:
        async with running_api(Path(tmp)) as k:
            for i in range(nodes):
                name = f"node-{i}"
                await calico.create(api.Node.model_validate({"metadata": {"name": name}, "spec": {
                    "orchRefs": [{"orchestrator": "k8s", "nodeName": name}]}}))
                k.api._create(served["nodes"], None, {"metadata": {"name": name}})
            for j in range(n):
                node, pod = f"node-{j % nodes}", f"pod-{j}"
                [ip] = await alloc.auto_assign(node, ipam.pod_handle(pod), {
                    ipam.ATTR_NAMESPACE: "default", ipam.ATTR_POD: pod, ipam.ATTR_NODE: node})
                if j >= leaked:  # the first `leaked` pods are gone
                    k.api._create(served["pods"], "default", {
                        "metadata": {"name": pod, "namespace": "default",
                                     "annotations": {conversion.POD_IP: f"{ip}/32"}},
                        "spec": {"nodeName": node}, "status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
            cfg = await kube_mod.load_configuration(str(k.kubeconfig))
            kube = kube_mod.KubeClient(cfg)

            t = time.perf_counter()
            raw_pods = await kube.list_pods()
            raw_nodes = await kube.list_nodes()
            raw_blocks = await be.list(ResourceListOptions("IPAMBlock"))
            raw = time.perf_counter() - t
            assert len(raw_pods) == n - leaked and len(raw_nodes) == nodes and raw_blocks.items
            kube.calls = 0

            gc = IPAMGarbageCollector(ipam_=alloc, backend=be, kube=kube, datastore_type="etcdv3",
                                      leak_grace_period=1e-9)
            t = time.perf_counter()
            first = await gc.sync()
            t1 = time.perf_counter() - t
            second = await gc.sync()
            both = time.perf_counter() - t
            assert not first.released and len(second.released) == leaked, (len(first.released),
                                                                            len(second.released))
            left = sum(len(b.allocations) for b in await alloc.blocks())
            assert left == n - leaked
            calls = kube.calls
            await kube.close()
    return {"allocations": n, "leaked": leaked, "nodes": nodes, "raw_reads_s": round(raw, 3),
            "scan_1_s": round(t1, 3), "scans_1_and_2_s": round(both, 3), "released": len(second.released),
            "kubernetes_api_calls": calls, "raw_api_calls": 2,
            "per_scan_vs_raw_time_ratio": round(both / 2 / raw, 2)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--leaked", type=int, default=1000)
    p.add_argument("--nodes", type=int, default=100)
    a = p.parse_args()
    print(json.dumps(asyncio.run(main(a.n, a.leaked, a.nodes)), indent=2))
