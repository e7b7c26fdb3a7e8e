"""The snapshot cache: one writer, breadcrumbs with deltas, every frame and snapshot made once and shared."""

from __future__ import annotations

import asyncio

from libcalico import syncproto
from libcalico.model import KVPair
from libcalico.watching import SyncStatus, Update, UpdateType
from tests.libcalico.test_backend_contract import pool
from typha import metrics
from typha.snapcache import Cache


def new(name: str, cidr: str = "10.244.0.0/16", revision: str = "1", **spec: object) -> Update:
    kv = pool(name, cidr, **spec)
    return Update(UpdateType.NEW, KVPair(kv.key, kv.value, revision))


def deleted(name: str, revision: str) -> Update:
    return Update(UpdateType.DELETED, KVPair(pool(name).key, None, revision))


class TestBreadcrumbs:
    def test_a_large_batch_becomes_breadcrumbs_of_at_most_the_batch_size_and_the_status_moves_last(self) -> None:
        cache = Cache("felix", max_batch=100)
        first = cache.current
        cache.on_updates([new(f"p{i}", f"10.{i // 250}.{i % 250}.0/24", str(i)) for i in range(250)])
        cache.on_status(SyncStatus.IN_SYNC)
        cache.publish()
        crumbs = []
        crumb = first
        while crumb.next_now is not None:
            crumb = crumb.next_now
            crumbs.append(crumb)
        assert [len(c.deltas) for c in crumbs] == [100, 100, 50]
        assert [c.status for c in crumbs] == [SyncStatus.WAIT_FOR_DATASTORE] * 2 + [SyncStatus.IN_SYNC]
        assert [c.seq for c in crumbs] == [1, 2, 3] and len(cache.kvs) == 250

    def test_an_update_that_changes_only_the_revision_is_skipped_and_a_deletion_always_passes(self) -> None:
        cache = Cache("bgp")
        cache.on_updates([new("a", revision="1")])
        cache.publish()
        skipped = metrics.UPDATES_SKIPPED.labels("bgp")._value.get()
        before = cache.current
        cache.on_updates([Update(UpdateType.UPDATED, new("a", revision="2").kv)])
        cache.publish()
        assert cache.current is before  # nothing to publish
        assert metrics.UPDATES_SKIPPED.labels("bgp")._value.get() == skipped + 1
        cache.on_updates([deleted("never-had", "3"), deleted("a", "4")])
        cache.publish()
        assert [kv.key.rsplit("/", 1)[1] for kv in cache.current.deltas] == ["never-had", "a"] and not cache.kvs

    def test_a_breadcrumbs_frame_is_encoded_once_and_decodes_to_its_deltas(self) -> None:
        cache = Cache("felix")
        cache.on_updates([new("a"), new("b", "10.1.0.0/16")])
        cache.publish()
        frame = cache.current.frame("zstd")
        assert cache.current.frame("zstd") is frame
        assert cache.current.frame("") is not frame
        flags, length = syncproto.parse_header(frame[:6], max_size=1 << 20)
        msg = syncproto.decode_payload(flags, frame[6:], max_size=1 << 20)
        assert isinstance(msg, syncproto.KVs) and [kv.key for kv in msg.kvs] == [kv.key for kv in
                                                                                cache.current.deltas]

    async def test_a_follower_waits_at_the_newest_breadcrumb_and_walks_older_ones_without_waiting(self) -> None:
        cache = Cache("felix")
        start = cache.current
        waiter = asyncio.create_task(start.next())
        await asyncio.sleep(0)
        assert not waiter.done()
        cache.on_updates([new("a")])
        cache.publish()
        assert (await waiter) is cache.current
        cache.on_updates([new("b", "10.1.0.0/16")])
        cache.publish()
        assert (await (await start.next()).next()) is cache.current  # both already there


class TestSnapshots:
    async def test_clients_joining_at_one_breadcrumb_share_one_snapshot_of_the_current_state(self) -> None:
        cache = Cache("felix", max_message_size=100)
        cache.on_updates([new(f"p{i:03}", f"10.{i}.0.0/16", str(i)) for i in range(150)] + [deleted("p000", "999")])
        cache.on_status(SyncStatus.IN_SYNC)
        cache.publish()
        one, two = await asyncio.gather(cache.snapshot("zstd"), cache.snapshot("zstd"))
        assert one is two and one.breadcrumb is cache.current and one.keys == 149
        keys = []
        for f in one.frames:
            flags, _ = syncproto.parse_header(f[:6], max_size=1 << 24)
            msg = syncproto.decode_payload(flags, f[6:], max_size=1 << 24)
            assert isinstance(msg, syncproto.KVs) and len(msg.kvs) <= 100
            assert {kv.update_type for kv in msg.kvs} == {UpdateType.NEW}
            keys += [kv.key for kv in msg.kvs]
        assert keys == sorted(cache.kvs) and len(one.frames) == 2
        cache.on_updates([new("late", "10.200.0.0/16")])
        cache.publish()
        assert (await cache.snapshot("zstd")).keys == 150
