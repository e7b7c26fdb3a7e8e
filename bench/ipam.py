"""Bench: IPAM allocations per second with 8 concurrent callers vs raw etcd CAS transactions.

Starts its own etcd on 127.0.0.1. Baseline, same run, same concurrency: each
caller does compare-and-swap transactions (compare mod_revision, put) on its
own key with aetcd's raw Txn, the primitive every IPAM write is built on.
A second baseline, ``raw_same_txn``, writes the very transaction an allocation
makes (a new handle and a block-sized compare-and-swap, both or neither), so
that what etcd and gRPC cost for IPAM's write is told apart from our Python;
``watched_vs_same_txn`` is the watched variant against it.
Ours, ``IPAM.auto_assign`` of one address with a handle and attributes:

* ``watched``: 8 nodes, one caller each, one allocator whose inputs (pools,
  IPAM configuration, node labels) are kept by a watch, as a long-running
  allocator keeps them;
* ``one_shot``: 8 nodes, a fresh ``IPAM`` for every allocation, as each CNI
  ADD has (its inputs, its node's blocks and the block are read every time;
  only the interpreter's start-up is left out);
* ``one_node``: all 8 callers on one node, serialised by the node lock as
  Calico's host-wide IPAM lock serialises CNI calls (latency-bound);
* ``processes``: 8 processes allocating for 8 nodes against 8 processes of raw
  CAS transactions, each warmed up (connected, one operation done) before the
  clock starts.

The machine this runs on is shared and noisy, so the bench runs ``--rounds``
rounds, each measuring the baseline and then every variant, and reports each
variant's median ratio ours/baseline over the rounds (higher is better).

    python3 -m bench.ipam [--n 1600] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aetcd
from aetcd.rpc import rpc_pb2 as rpc

from libcalico import api
from libcalico.api.ipam import AllocationAttribute, IPAMConfigSpec
from libcalico.backend import codec
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.ipam import IPAM, WatchedInputs, new_block, pod_handle
from libcalico.model import KVPair, ResourceKey
from tests.etcd_server import EtcdServer

CALLERS = 8

Op = Callable[[int], Awaitable[None]]  # the i-th operation of one caller


def cas(stub: Any, key: bytes) -> Op:
    """Compare-and-swap transactions on ``key`` (compare mod_revision, put), each on the last one's revision."""
    rev = 0

    async def op(i: int) -> None:
        nonlocal rev
        compare = rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=rev)
        put = rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=str(i).encode()))
        resp = await stub.Txn(rpc.TxnRequest(compare=[compare], success=[put]))
        assert resp.succeeded
        rev = resp.header.revision
    return op


def _half_full_block() -> bytes:
    """The stored bytes of a /26 with 32 pod addresses: what an allocation writes, on average."""
    block = new_block("10.0.0.0/26", "node0")
    attrs = [AllocationAttribute(handle_id=pod_handle(f"pod-{i}"),
                                 secondary={"namespace": "default", "pod": f"pod-{i}", "node": "node0"})
             for i in range(32)]
    spec = block.spec.model_copy(update={"allocations": list(range(32)) + [None] * 32,
                                         "unallocated": list(range(32, 64)), "attributes": attrs})
    return codec.encode(block.model_copy(update={"spec": spec}))


def same_txn(stub: Any, prefix: str, value: bytes) -> Op:
    """The transaction an allocation makes, written raw: create a handle key and compare-and-swap a
    block-sized value, both or neither, with the same failure reads. What etcd and gRPC cost for
    IPAM's write, without any of our Python."""
    key = f"{prefix}/block".encode()
    rev = 0

    async def op(i: int) -> None:
        nonlocal rev
        handle = f"{prefix}/handle/{i}".encode()
        req = rpc.TxnRequest(
            compare=[rpc.Compare(key=handle, result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, create_revision=0),
                     rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=rev)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=handle, value=b'{"block":{"10.0.0.0/26":1}}')),
                     rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value))],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=handle, count_only=True)),
                     rpc.RequestOp(request_range=rpc.RangeRequest(key=key, count_only=True))])
        resp = await stub.Txn(req)
        assert resp.succeeded
        rev = resp.header.revision
    return op


def allocate(ipam: Callable[[], IPAM], node: str, prefix: str) -> Op:
    """One address for pod ``<prefix>-<i>`` on ``node``, from the allocator ``ipam()`` gives."""
    async def op(i: int) -> None:
        pod = f"{prefix}-{i}"
        await ipam().auto_assign(node, pod_handle(pod), {"namespace": "default", "pod": pod, "node": node})
    return op


async def rate(n: int, caller_op: Callable[[int], Op]) -> float:
    """Operations per second of CALLERS concurrent callers, n in all; caller c runs ``caller_op(c)``."""
    async def caller(c: int) -> None:
        op = caller_op(c)
        for i in range(n // CALLERS):
            await op(i)

    t = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(CALLERS)))
    return n / (time.perf_counter() - t)


async def raw_rates(client: aetcd.Client, n: int, tag: str) -> dict[str, float]:
    await client.connect()
    stub, block = client.kvstub, _half_full_block()
    return {"raw": await rate(n, lambda c: cas(stub, f"/bench/cas/{tag}/{c}".encode())),
            "raw_same_txn": await rate(n, lambda c: same_txn(stub, f"/bench/same/{tag}/{c}", block))}


async def allocations(be: EtcdBackend, n: int, variant: str, tag: str) -> float:
    inputs = WatchedInputs(be) if variant == "watched" else None
    if inputs is not None:
        await inputs.start()
        await inputs.wait_in_sync()
    shared = IPAM(be, inputs=inputs)
    ipam = (lambda: IPAM(be)) if variant == "one_shot" else (lambda: shared)
    # Fresh nodes every round; one_node puts every caller on the same one.
    result = await rate(n, lambda c: allocate(ipam, f"{tag}-node{0 if variant == 'one_node' else c}",
                                              f"{tag}-{c}"))
    if inputs is not None:
        await inputs.stop()
    return result


async def worker(kind: str, endpoint: str, port: int, caller: int, count: int, tag: str) -> None:
    """One process of the multi-process variant: warm up, say ready, wait for go, run, report."""
    if kind == "raw":
        client = aetcd.Client(host="127.0.0.1", port=port)
        await client.connect()
        op = cas(client.kvstub, f"/bench/proc/{tag}/{caller}".encode())
    else:
        be = EtcdBackend(EtcdConfig(endpoints=(endpoint,)))
        inputs = WatchedInputs(be)
        await inputs.start()
        await inputs.wait_in_sync()
        allocator = IPAM(be, inputs=inputs)
        op = allocate(lambda: allocator, f"proc-{tag}-node{caller}", f"proc-{tag}-{caller}")
    await op(-1)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for i in range(count):
        await op(i)
    print("done", flush=True)


def processes(kind: str, server: EtcdServer, n: int, r: int) -> float:
    procs = [subprocess.Popen([sys.executable, "-m", "bench.ipam", "--worker", kind, "--endpoint", server.endpoint,
                               "--port", str(server.client_port), "--caller", str(c), "--n", str(n // CALLERS),
                               "--tag", f"r{r}"],
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


VARIANTS = ("watched", "one_shot", "one_node")


async def in_process_round(server: EtcdServer, n: int, r: int) -> dict[str, float]:
    raw = aetcd.Client(host="127.0.0.1", port=server.client_port)
    be = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,)))
    try:
        rates = await raw_rates(raw, n, f"r{r}")
        for variant in VARIANTS:
            rates[variant] = await allocations(be, n, variant, f"{variant.replace('_', '-')}-r{r}")
        return rates
    finally:
        await be.close()
        await raw.close()


async def add_pool(server: EtcdServer, n: int) -> None:
    be = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,)))
    pool = api.IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "10.0.0.0/8", "blockSize": 26}})
    await be.create(KVPair(ResourceKey.for_resource(pool), pool))
    # one_node puts all n allocations on one node: lift Calico's default limit of 20 blocks a node.
    await IPAM(be).set_config(IPAMConfigSpec(max_blocks_per_host=1 + n // 64))
    await be.close()


def main(n: int, rounds: int) -> dict[str, object]:
    server = EtcdServer()
    server.start()
    ratios: dict[str, list[float]] = {v: [] for v in (*VARIANTS, "processes", "watched_vs_same_txn")}
    rates: dict[str, list[float]] = {v: [] for v in ("raw", "raw_same_txn", *VARIANTS, "raw_processes", "processes")}
    try:
        asyncio.run(add_pool(server, n))
        for r in range(rounds):
            got = asyncio.run(in_process_round(server, n, r))
            got["raw_processes"] = processes("raw", server, n, r)
            got["processes"] = processes("ipam", server, n, r)
            for name, rate in got.items():
                rates[name].append(rate)
            for variant in VARIANTS:
                ratios[variant].append(got[variant] / got["raw"])
            ratios["processes"].append(got["processes"] / got["raw_processes"])
            ratios["watched_vs_same_txn"].append(got["watched"] / got["raw_same_txn"])
    finally:
        server.cleanup()
    return {"n": n, "callers": CALLERS, "rounds": rounds,
            "median_ratio": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
            "ratios": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
            "per_s": {k: [round(x) for x in v] for k, v in rates.items()}}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1600)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--worker", choices=("raw", "ipam"), help=argparse.SUPPRESS)
    p.add_argument("--endpoint", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--caller", type=int, help=argparse.SUPPRESS)
    p.add_argument("--tag", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        asyncio.run(worker(a.worker, a.endpoint, a.port, a.caller, a.n, a.tag))
    else:
        print(json.dumps(main(a.n, a.rounds), indent=2))
