"""Bench: IPAM allocations per second with 8 concurrent callers vs raw etcd CAS transactions.

Starts its own etcd on 127.0.0.1. Baseline, same run, same concurrency: each
caller does compare-and-swap transactions (compare mod_revision, put) on its
own key with aetcd's raw Txn, the primitive every IPAM write is built on.
Ours: ``IPAM.auto_assign`` of one address with a handle and attributes, on
8 nodes (one caller each); with all 8 callers on one node (serialised by the
node lock, as Calico's host-wide IPAM lock serialises CNI calls); and on 8
nodes with the inputs (pools, IPAM config, node labels) kept by a watch, as a
long-running allocator would. Reports the ratio ours/baseline (higher is better).

    python3 -m bench.ipam [--n 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aetcd
from aetcd.rpc import rpc_pb2 as rpc

from libcalico import api
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.ipam import IPAM, WatchedInputs, pod_handle
from libcalico.model import KVPair, ResourceKey
from tests.etcd_server import EtcdServer

CALLERS = 8


async def raw_cas(client: aetcd.Client, n: int) -> float:
    await client.connect()
    stub = client.kvstub

    async def caller(c: int) -> None:
        key = f"/bench/cas/{c}".encode()
        rev = 0
        for i in range(n // CALLERS):
            compare = rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=rev)
            put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=str(i).encode()))
            resp = await stub.Txn(rpc.TxnRequest(compare=[compare], success=[put]))
            assert resp.succeeded
            rev = resp.header.revision

    t = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(CALLERS)))
    return n / (time.perf_counter() - t)


async def allocations(be: EtcdBackend, n: int, same_node: bool, tag: str, watched: bool = False) -> float:
    inputs = WatchedInputs(be) if watched else None
    if inputs is not None:
        await inputs.start()
        await inputs.wait_in_sync()
    ipam = IPAM(be, inputs=inputs)

    async def caller(c: int) -> None:
        node = "node0" if same_node else f"node{c}"
        for i in range(n // CALLERS):
            pod = f"{tag}-{c}-{i}"
            await ipam.auto_assign(node, pod_handle(pod), {"namespace": "default", "pod": pod, "node": node})

    t = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(CALLERS)))
    rate = n / (time.perf_counter() - t)
    if inputs is not None:
        await inputs.stop()
    return rate


async def main(n: int) -> dict[str, float]:
    server = EtcdServer()
    server.start()
    try:
        raw = aetcd.Client(host="127.0.0.1", port=server.client_port)
        be = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,)))
        pool = api.IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/8", "blockSize": 26}})
        await be.create(KVPair(ResourceKey.for_resource(pool), pool))
        base = await raw_cas(raw, n)
        spread = await allocations(be, n, False, "spread")
        shared = await allocations(be, n, True, "shared")
        watched = await allocations(be, n, False, "watched", watched=True)
        await be.close()
        await raw.close()
    finally:
        server.cleanup()
    return {"n": n, "callers": CALLERS, "raw_cas_txn_per_s": round(base),
            "alloc_per_s_8_nodes": round(spread), "ratio_8_nodes": round(spread / base, 3),
            "alloc_per_s_1_node": round(shared), "ratio_1_node": round(shared / base, 3),
            "alloc_per_s_8_nodes_watched_inputs": round(watched), "ratio_8_nodes_watched_inputs": round(watched / base, 3)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=400)
    a = p.parse_args()
    print(json.dumps(asyncio.run(main(a.n)), indent=2))
