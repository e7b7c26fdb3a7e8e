"""ETCD_ENDPOINTS with several endpoints: every one is used, as etcd's Go client uses them.

Against a dead endpoint (a free loopback port) next to a live etcd, and
against a real three-member etcd cluster on loopback whose member in use is
stopped mid-way: reads and writes carry on at the other members, a write that
never left is sent again, and a watch ended by the stop is taken up again by
the next one (the caller's loop re-watches, as the one watch loop does).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from libcalico.backend.api import EventType
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.errors import DatastoreUnavailable
from libcalico.model import ResourceListOptions
from tests.etcd_server import EtcdServer, free_port
from tests.libcalico.test_backend_contract import pool


def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"


@contextlib.asynccontextmanager
async def backend(*endpoints: str, timeout: float = 5) -> AsyncIterator[EtcdBackend]:
    be = EtcdBackend(EtcdConfig(endpoints=endpoints, timeout=timeout))
    try:
        yield be
    finally:
        await be.close()


@pytest.mark.parametrize("order", ["dead-first", "dead-last", "dead-around"])
async def test_reads_and_writes_pass_over_a_dead_endpoint(etcd: EtcdServer, order: str) -> None:
    endpoints = {"dead-first": (dead(), dead(), etcd.endpoint), "dead-last": (etcd.endpoint, dead()),
                 "dead-around": (dead(), etcd.endpoint, dead())}[order]
    async with backend(*endpoints) as be:
        kv = await be.create(pool("p1"))  # a write: it never left for the dead one, so it is sent again
        assert (await be.get(kv.key)).revision == kv.revision
        assert [i.key.name for i in (await be.list(ResourceListOptions("IPPool"))).items] == ["p1"]


async def test_every_endpoint_dead_is_one_clear_error_in_bounded_time() -> None:
    async with backend(dead(), dead(), dead()) as be:
        with pytest.raises(DatastoreUnavailable, match="Connection refused"):
            await asyncio.wait_for(be.get(pool("x").key), 30)
        with pytest.raises(DatastoreUnavailable, match="Connection refused"):
            await asyncio.wait_for(be.create(pool("x")), 30)


async def test_a_silent_endpoint_fails_a_read_in_bounded_time_and_the_next_read_moves_on(
        etcd: EtcdServer) -> None:
    with socket.socket() as silent:  # accepts connections and never answers: a frozen etcd
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        async with backend(f"http://127.0.0.1:{silent.getsockname()[1]}", etcd.endpoint, timeout=2) as be:
            got = await asyncio.wait_for(be.list(ResourceListOptions("IPPool")), 30)  # retried on the next
            assert got.items == []
            created = await be.create(pool("p2"))  # now at the live endpoint
            assert (await be.get(created.key)).value.spec.cidr == created.value.spec.cidr


@pytest.fixture
def cluster() -> Iterator[list[EtcdServer]]:
    members = [EtcdServer() for _ in range(3)]
    initial = ",".join(f"m{i}=http://127.0.0.1:{m.peer_port}" for i, m in enumerate(members))
    for i, m in enumerate(members):
        m.extra_args = ["--name", f"m{i}", "--initial-cluster", initial, "--initial-cluster-state", "new"]
    try:
        with ThreadPoolExecutor(3) as pool_:  # each waits for a quorum: start them together
            list(pool_.map(lambda m: m.start(60), members))
        yield members
    finally:
        for m in members:
            m.cleanup()


async def test_a_cluster_member_stopped_mid_way_is_failed_over(cluster: list[EtcdServer]) -> None:
    async with backend(*(m.endpoint for m in cluster)) as be:
        first = await be.create(pool("before"))
        events: asyncio.Queue[str] = asyncio.Queue()

        async def watch() -> None:  # the caller's loop: re-watch from the last revision after a failure
            rev = first.revision
            while True:
                try:
                    async for ev in be.watch(ResourceListOptions("IPPool"), rev):
                        rev = ev.revision
                        if ev.type is EventType.ADDED:
                            await events.put(ev.key.name)
                except DatastoreUnavailable:
                    continue

        watcher = asyncio.create_task(watch())
        try:
            await be.create(pool("seen-first"))
            assert await asyncio.wait_for(events.get(), 30) == "seen-first"
            cluster[0].stop()  # the member in use
            after = await asyncio.wait_for(be.create(pool("after")), 60)
            assert (await be.get(after.key)).revision == after.revision
            names = sorted(i.key.name for i in (await be.list(ResourceListOptions("IPPool"))).items)
            assert names == ["after", "before", "seen-first"]
            assert await asyncio.wait_for(events.get(), 60) == "after"
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def test_an_idle_watch_notices_a_frozen_member_through_grpc_keepalive() -> None:
    """etcd frozen (SIGSTOP: a partition, as seen from here): the watch ends unavailable, not silent.

    Calico's client pings every 30 s and gives up after 10 s more; here 6 s and 2 s (etcd
    refuses pings more often than every 5 s), so the test waits seconds, not a minute.
    """
    import os
    import signal

    server = EtcdServer()
    server.start()
    be = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,), timeout=5, keepalive_time=6, keepalive_timeout=2))
    stream = be.watch(ResourceListOptions("IPPool"), "")
    try:
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.5)  # the watch is open and idle
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(DatastoreUnavailable):
                await asyncio.wait_for(first, 60)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
        await be.close()
        server.cleanup()
