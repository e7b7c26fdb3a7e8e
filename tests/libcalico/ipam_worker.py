"""An allocator process for the IPAM concurrency tests: what N CNI ADDs on one node do to etcd.

    python -m tests.libcalico.ipam_worker ENDPOINT NODE PREFIX COUNT [--stall-at K]

For each i < COUNT: assign one address with handle ``k8s-pod-network.<PREFIX>-<i>``,
then write the pod's WorkloadEndpoint, then print the address. With ``--stall-at K``
the K-th pod gets its address but no endpoint: the process prints ``STALLED <ip>`` and
waits to be killed, as a CNI plugin killed mid-ADD would leave things.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from libcalico import api
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.ipam import IPAM, pod_handle
from libcalico.model import KVPair, ResourceKey
from libcalico.names import WorkloadEndpointIdentifiers


async def main(endpoint: str, node: str, prefix: str, count: int, stall_at: int) -> None:
    be = EtcdBackend(EtcdConfig(endpoints=(endpoint,), timeout=30))
    ipam = IPAM(be)
    try:
        for i in range(count):
            pod = f"{prefix}-{i}"
            [ip] = await ipam.auto_assign(node, pod_handle(pod), {"namespace": "default", "pod": pod, "node": node})
            if i == stall_at:
                print(f"STALLED {ip}", flush=True)
                await asyncio.Event().wait()
            name = WorkloadEndpointIdentifiers(node, "k8s", pod, "eth0").name()
            wep = api.WorkloadEndpoint.model_validate({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"node": node, "orchestrator": "k8s", "pod": pod, "endpoint": "eth0",
                         "ipNetworks": [f"{ip}/32"]}})
            await be.create(KVPair(ResourceKey.for_resource(wep), wep))
            print(ip, flush=True)
    finally:
        await be.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("node")
    p.add_argument("prefix")
    p.add_argument("count", type=int)
    p.add_argument("--stall-at", type=int, default=-1)
    a = p.parse_args()
    asyncio.run(main(a.endpoint, a.node, a.prefix, a.count, a.stall_at))
    sys.exit(0)
