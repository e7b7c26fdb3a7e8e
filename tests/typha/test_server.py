"""Typha in-process on the memory datastore: fan-out, joining mid-stream, a stalled client, bad input, resync."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import msgpack

from libcalico import api, syncers, syncproto
from libcalico.backend.memory import MemoryBackend
from libcalico.model import KVPair, ResourceKey
from libcalico.watching import SyncStatus
from tests.etcd_server import free_port
from tests.libcalico.test_backend_contract import pool
from tests.typha.helpers import Recorder, cancel_all, clients, running_typha, wait_for
from typha import metrics

FAST = {"serverpingintervalsecs": "0.2", "serverpongtimeoutsecs": "5"}


def big_policy(name: str, n: int, size: int = 20000) -> KVPair:
    """A policy whose value is ``size`` bytes of annotations: fills socket buffers quickly."""
    res = api.GlobalNetworkPolicy.model_validate({"metadata": {"name": name, "annotations": {
        "fill": f"{n:06}" + "x" * size}}, "spec": {"selector": "all()"}})
    return KVPair(ResourceKey.for_resource(res), res)


async def fresh_list(be: MemoryBackend, definition: syncers.SyncerDefinition) -> dict[ResourceKey, Any]:
    out: dict[ResourceKey, Any] = {}
    for opts in definition.types:
        out.update({kv.key: kv.value for kv in (await be.list(opts)).items})
    return out


class TestFanOut:
    async def test_every_client_sees_every_update_once_and_in_order(self) -> None:
        be = MemoryBackend()
        await be.create(pool("before"))
        async with running_typha(be, **FAST) as typha:
            recs = [Recorder() for _ in range(20)]
            async with clients(typha.server.port, recs):
                await wait_for(lambda: all(r.in_sync for r in recs), what="every client in sync")
                written = []
                for i in range(60):
                    kv = await be.apply(pool(f"p{i % 7}", f"10.{i % 7}.0.0/16", blockSize=20 + i % 6))
                    written.append((kv.key, kv.revision))
                    if i % 13 == 0:
                        gone = await be.delete(kv.key)
                        written.append((kv.key, gone.revision))
                # The snapshot: pool "before" and the static projectcalico-default-allow profile.
                await wait_for(lambda: all(len(r.updates) == 2 + len(written) for r in recs), what="every update")
                for r in recs:
                    # The deletion's revision is the one the watch reports, the delete's own.
                    seen = [(u.key, u.kv.revision) for u in r.updates[2:]]
                    assert [k for k, _ in seen] == [k for k, _ in written] and not r.errors
                    assert r.statuses == [SyncStatus.WAIT_FOR_DATASTORE, SyncStatus.IN_SYNC]
                assert {r.state[pool("p1").key].spec.block_size for r in recs} == {
                    (await be.get(pool("p1").key)).value.spec.block_size}

    async def test_a_client_joining_mid_stream_ends_with_the_state_of_a_fresh_list(self) -> None:
        be = MemoryBackend()
        async with running_typha(be) as typha:
            early = [Recorder()]
            async with clients(typha.server.port, early):
                for i in range(150):
                    await be.apply(pool(f"p{i % 40}", f"10.{i % 40}.0.0/16", blockSize=20 + i % 7))
                    if i == 75:
                        late = [Recorder()]
                        joined = clients(typha.server.port, late)
                        await joined.__aenter__()
                    if i % 9 == 0:
                        await be.delete(pool(f"p{i % 40}").key)
                try:
                    expected = await fresh_list(be, syncers.felix())
                    await wait_for(lambda: late[0].state == expected and early[0].state == expected,
                                   what="the late client's state")
                    assert not late[0].errors
                finally:
                    await joined.__aexit__(None, None, None)

    async def test_a_client_cannot_tell_typha_from_a_direct_syncer(self) -> None:
        be = MemoryBackend()
        await be.create(pool("a"))
        direct = Recorder()
        syncer = syncers.felix().syncer(be, direct)
        task = asyncio.create_task(syncer.run())
        try:
            async with running_typha(be) as typha:
                via = [Recorder()]
                async with clients(typha.server.port, via):
                    await wait_for(lambda: via[0].in_sync and direct.in_sync, what="both in sync")
                    await be.apply(pool("b", "10.1.0.0/16"))
                    await be.apply(pool("a", blockSize=24))
                    await be.delete(pool("a").key)
                    # Four, after the listing's pool "a" and static projectcalico-default-allow profile.
                    await wait_for(lambda: len(via[0].updates) == len(direct.updates) == 5, what="five updates")
                    def seen(r: Recorder) -> tuple[set[Any], list[Any]]:   # the snapshot's order is Typha's
                        triples = [(u.type, u.key, u.kv.revision) for u in r.updates]
                        return set(triples[:2]), triples[2:]
                    assert seen(via[0]) == seen(direct)
                    assert via[0].state == direct.state
        finally:
            await cancel_all([task])


class TestStalledClient:
    async def test_a_stalled_client_delays_no_one_and_is_dropped_after_its_fall_behind_limit(self) -> None:
        be = MemoryBackend()
        env = {**FAST, "serverpongtimeoutsecs": "60", "servermaxfallbehindsecs": "1",
               "servernewclientfallbehindgraceperiod": "0.01"}
        async with running_typha(be, server={"write_buffer_size": 8192, "watchdog_interval": 0.1}, **env) as typha:
            fast = [Recorder() for _ in range(5)]
            stalled = [Recorder()]
            async with clients(typha.server.port, fast), \
                    clients(typha.server.port, stalled, client={"compression": ()}) as (slow,):
                await wait_for(lambda: all(r.in_sync for r in fast + stalled), what="every client in sync")
                first_conn = slow.server_conn_id
                slow.reading.clear()  # it stops reading: its socket fills, Typha's drain() blocks
                loop = asyncio.get_running_loop()
                started = loop.time()
                n = 0
                while first_conn in typha.server.connections:
                    kv = await be.apply(big_policy(f"gnp{n % 50}", n))
                    n += 1
                    # Nobody else waits for the stalled one: each write reaches every fast client.
                    await wait_for(lambda: all(r.revisions.get(kv.key) == kv.revision for r in fast), timeout=5,
                                   what=f"write {n} at every fast client")
                    await asyncio.sleep(0.01)
                    assert loop.time() - started < 15, "the stalled client was never dropped"
                assert loop.time() - started >= 1  # not before its limit
                expected = await fresh_list(be, syncers.felix())
                assert all(r.state == expected for r in fast)
                # Reading again, it reconnects, resyncs, and ends where everyone is.
                slow.reading.set()
                await wait_for(lambda: stalled[0].state == expected and slow.server_conn_id != first_conn,
                               what="the dropped client's resync")
                assert slow.relists == 1 and not stalled[0].errors


def frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack("!BBI", 1, 0, len(body)) + body


class TestBadInput:
    async def test_garbage_oversized_frames_and_bad_hellos_close_only_their_connection(self) -> None:
        be = MemoryBackend()
        async with running_typha(be, serverhandshaketimeoutsecs="0.5", **FAST) as typha:
            good = [Recorder()]
            async with clients(typha.server.port, good) as (client,):
                await wait_for(lambda: good[0].in_sync, what="the good client in sync")
                conn_id = client.server_conn_id
                attempts = {
                    "garbage": b"GET / HTTP/1.1\r\nHost: typha\r\n\r\n",
                    "oversized": struct.pack("!BBI", 1, 0, 512 << 20),
                    "unknown message": frame({"type": "hug"}),
                    "kvs from a client": frame({"type": "kvs", "kvs": []}),
                    "unknown syncer": frame({"type": "client_hello", "hostname": "h", "syncer_type": "felx"}),
                    "silent": b"",
                }
                for name, data in attempts.items():
                    reader, writer = await asyncio.open_connection("127.0.0.1", typha.server.port)
                    writer.write(data)
                    await writer.drain()
                    assert await asyncio.wait_for(reader.read(), 5) == b"", name  # closed on it, nothing sent
                    writer.close()
                # A hello, then garbage in the stream instead of a pong.
                reader, writer = await asyncio.open_connection("127.0.0.1", typha.server.port)
                writer.write(syncproto.encode(syncproto.ClientHello("h", "", "", "felix")) + b"\x07" * 64)
                await asyncio.wait_for(reader.read(), 5)
                writer.close()
                await be.create(pool("after", "10.9.0.0/16"))
                await wait_for(lambda: pool("after").key in good[0].state, what="the good client's update")
                assert client.server_conn_id == conn_id  # never disconnected
                await wait_for(lambda: len(typha.server.connections) == 1, what="the bad connections gone")


class TestResync:
    async def test_after_typha_restarts_a_client_gets_only_the_difference(self) -> None:
        be = MemoryBackend()
        for name in ("keep", "change", "remove"):
            await be.create(pool(name, f"10.{len(name)}.0.0/16"))
        recs = [Recorder()]
        port = free_port()
        async with contextlib.AsyncExitStack() as stack:
            typha = await stack.enter_async_context(running_typha(be, serverport=str(port)))
            (client,) = await stack.enter_async_context(clients(port, recs))
            # The three pools and the static projectcalico-default-allow profile.
            await wait_for(lambda: recs[0].in_sync and len(recs[0].state) == 4, what="the first sync")
            await typha.close()  # Typha goes; the datastore moves on meanwhile
            await wait_for(lambda: recs[0].statuses[-1] is SyncStatus.WAIT_FOR_DATASTORE, what="disconnected")
            await be.apply(pool("change", "10.6.0.0/16", blockSize=24))
            await be.delete(pool("remove").key)
            await be.create(pool("new", "10.3.0.0/16"))
            before = len(recs[0].updates)
            await stack.enter_async_context(running_typha(be, serverport=str(port)))
            await wait_for(lambda: recs[0].in_sync and sorted(k.name for k in recs[0].state if k.kind == "IPPool") ==
                           ["change", "keep", "new"], what="the resync")
            assert sorted((u.type.value, u.key.name) for u in recs[0].updates[before:]) == [
                ("deleted", "remove"), ("new", "new"), ("updated", "change")]
            assert client.relists == 1 and not recs[0].errors


async def test_pings_are_answered_and_measured() -> None:
    be = MemoryBackend()
    async with running_typha(be, **FAST) as typha:
        recs = [Recorder()]
        async with clients(typha.server.port, recs):
            before = metrics.PING_LATENCY.labels("felix").count
            await wait_for(lambda: metrics.PING_LATENCY.labels("felix").count >= before + 2, what="two pongs")
