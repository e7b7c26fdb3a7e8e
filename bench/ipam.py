"""Bench: IPAM allocations per second with 8 concurrent callers vs raw etcd CAS transactions.

Starts its own etcd on 127.0.0.1. Baseline, same run, same concurrency: each
caller does compare-and-swap transactions (compare mod_revision, put) on its
own key with aetcd's raw Txn, the primitive every IPAM write is built on.
Ours: ``IPAM.auto_assign`` of one address with a handle and attributes, on
8 nodes (one caller each); with all 8 callers on one node (serialised by the
node lock, as Calico's host-wide IPAM lock serialises CNI calls); and on 8
nodes with the inputs (pools, IPAM config, node labels) kept by a watch, as a
long-running allocator would. Then the same two with 8 *processes* instead of 8
tasks in one process, as CNI runs (every ADD is a process of its own): 8 processes
of raw CAS transactions against 8 processes allocating for 8 nodes, each warmed up
(connected, one operation done) before the clock starts. Reports the ratios
ours/baseline (higher is better).

    python3 -m bench.ipam [--n 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
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


async def worker(kind: str, endpoint: str, port: int, caller: int, count: int) -> None:
    """One process of the multi-process variant: warm up, say ready, wait for go, run, report."""
    if kind == "raw":
        client = aetcd.Client(host="127.0.0.1", port=port)
        await client.connect()
        stub = client.kvstub
        key = f"/bench/proc/{caller}".encode()
        rev = 0

        async def op(i: int) -> None:
            nonlocal rev
            compare = rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=rev)
            put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=str(i).encode()))
            resp = await stub.Txn(rpc.TxnRequest(compare=[compare], success=[put]))
            assert resp.succeeded
            rev = resp.header.revision
    else:
        be = EtcdBackend(EtcdConfig(endpoints=(endpoint,)))
        inputs = WatchedInputs(be)
        await inputs.start()
        await inputs.wait_in_sync()
        ipam = IPAM(be, inputs=inputs)
        node = f"pnode{caller}"

        async def op(i: int) -> None:
            pod = f"proc-{caller}-{i}"
            await ipam.auto_assign(node, pod_handle(pod), {"namespace": "default", "pod": pod, "node": node})
    await op(-1)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for i in range(count):
        await op(i)
    print("done", flush=True)


def processes(kind: str, server: EtcdServer, n: int) -> float:
    procs = [subprocess.Popen([sys.executable, "-m", "bench.ipam", "--worker", kind, "--endpoint", server.endpoint,
                               "--port", str(server.client_port), "--caller", str(c), "--n", str(n // CALLERS)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for c in range(CALLERS)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        t = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "done"
        return n / (time.perf_counter() - t)
    finally:
        for p in procs:
            p.kill()
            p.wait()


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
        raw_procs = processes("raw", server, n)
        ipam_procs = processes("ipam", server, n)
    finally:
        server.cleanup()
    return {"n": n, "callers": CALLERS, "raw_cas_txn_per_s": round(base),
            "alloc_per_s_8_nodes": round(spread), "ratio_8_nodes": round(spread / base, 3),
            "alloc_per_s_1_node": round(shared), "ratio_1_node": round(shared / base, 3),
            "alloc_per_s_8_nodes_watched_inputs": round(watched), "ratio_8_nodes_watched_inputs": round(watched / base, 3),
            "raw_cas_txn_per_s_8_processes": round(raw_procs), "alloc_per_s_8_processes": round(ipam_procs),
            "ratio_8_processes": round(ipam_procs / raw_procs, 3)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--worker", choices=("raw", "ipam"), help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--caller", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        asyncio.run(worker(a.worker, a.endpoint, a.port, a.caller, a.n))
    else:
        print(json.dumps(asyncio.run(main(a.n)), indent=2))
