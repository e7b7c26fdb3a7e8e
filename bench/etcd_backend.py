"""Bench: the etcd backend's write and list rate against raw etcd puts in the same run.

Starts its own etcd on 127.0.0.1. Reports ratios (ours / baseline), never
absolute thresholds. Baseline: aetcd ``put`` of the same encoded bytes to the
same keys, with the same concurrency. Our create is one CAS transaction plus
pydantic encoding; the ratio shows what the contract costs.

    python3 -m bench.etcd_backend [--n 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aetcd

from libcalico import api
from libcalico.backend import codec
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from tests.etcd_server import EtcdServer


def pools(n: int, prefix: str) -> list[KVPair]:
    out = []
    for i in range(n):
        res = api.IPPool.model_validate({"metadata": {"name": f"{prefix}-{i}"},
                                         "spec": {"cidr": f"10.{i // 256}.{i % 256}.0/26", "blockSize": 26}})
        out.append(KVPair(ResourceKey.for_resource(res), res))
    return out


async def run_bounded(coros: list, concurrency: int) -> None:  # type: ignore[type-arg]
    sem = asyncio.Semaphore(concurrency)

    async def one(c):  # type: ignore[no-untyped-def]
        async with sem:
            await c

    await asyncio.gather(*(one(c) for c in coros))


async def main(n: int, concurrency: int) -> dict[str, float]:
    server = EtcdServer()
    server.start()
    try:
        raw = aetcd.Client(host="127.0.0.1", port=server.client_port)
        be = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,)))
        base_items = pools(n, "raw")
        t = time.perf_counter()
        await run_bounded([raw.put(kv.key.path().encode(), codec.encode(kv.value)) for kv in base_items],
                          concurrency)
        raw_put = time.perf_counter() - t
        ours_items = pools(n, "ours")
        t = time.perf_counter()
        await run_bounded([be.create(kv) for kv in ours_items], concurrency)
        ours_create = time.perf_counter() - t
        t = time.perf_counter()
        await raw.get_prefix(b"/calico/resources/v3/projectcalico.org/ippools/")
        raw_list = time.perf_counter() - t
        t = time.perf_counter()
        listing = await be.list(ResourceListOptions("IPPool"))
        ours_list = time.perf_counter() - t
        assert len(listing.items) == 2 * n
        await be.close()
        await raw.close()
    finally:
        server.cleanup()
    return {
        "n": n, "concurrency": concurrency,
        "raw_put_per_s": round(n / raw_put), "create_per_s": round(n / ours_create),
        "create_vs_raw_put_time_ratio": round(ours_create / raw_put, 2),
        "list_items": 2 * n, "raw_list_s": round(raw_list, 4), "list_s": round(ours_list, 4),
        "list_vs_raw_time_ratio": round(ours_list / raw_list, 2),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args()
    print(json.dumps(asyncio.run(main(a.n, a.concurrency)), indent=2))
