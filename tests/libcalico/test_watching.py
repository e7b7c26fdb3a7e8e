"""The one list+watch loop and the syncer: status transitions, compaction and outage recovery."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from libcalico.backend.api import Backend
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.backend.memory import MemoryBackend
from libcalico.errors import DatastoreUnavailable
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from libcalico.watching import Syncer, SyncStatus, Update, UpdateType
from tests.etcd_server import EtcdServer
from tests.libcalico.test_backend_contract import compact, pool


class Recorder:
    """Keeps the syncer's view: current values by key, and every status seen."""

    def __init__(self) -> None:
        self.statuses: list[SyncStatus] = []
        self.state: dict[ResourceKey, Any] = {}
        self.updates: list[Update] = []

    def on_status(self, status: SyncStatus) -> None:
        self.statuses.append(status)

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            self.updates.append(u)
            if u.type is UpdateType.DELETED:
                assert u.key in self.state, f"delete for unknown key {u.key}"
                del self.state[u.key]
            else:
                self.state[u.key] = u.kv.value


async def wait_for(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running(syncer: Syncer) -> Any:
    task = asyncio.create_task(syncer.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


TYPES = [ResourceListOptions("IPPool"), ResourceListOptions("BGPPeer")]


class TestSyncer:
    async def test_reports_in_sync_after_every_type_listed_and_then_streams(self, backend: Backend) -> None:
        await backend.create(pool("existing"))
        rec = Recorder()
        syncer = Syncer(backend, TYPES, rec)
        async with running(syncer):
            await wait_for(lambda: syncer.status is SyncStatus.IN_SYNC, what="in-sync")
            assert rec.statuses[0] is SyncStatus.WAIT_FOR_DATASTORE
            assert rec.statuses[-1] is SyncStatus.IN_SYNC
            assert [k.name for k in rec.state] == ["existing"]
            await backend.create(pool("new", "10.1.0.0/16"))
            await backend.delete(pool("existing").key)
            await wait_for(lambda: [k.name for k in rec.state] == ["new"], what="new state")

    async def test_compaction_before_the_watch_triggers_a_relist_that_emits_only_the_difference(
            self, backend: Backend) -> None:
        rec = Recorder()
        first = await backend.create(pool("a"))
        gone = await backend.create(pool("gone", "10.9.0.0/16"))
        syncer = Syncer(backend, [ResourceListOptions("IPPool")], rec)

        # Watch from an already-compacted revision by compacting before the watch starts.
        original_list = backend.list
        calls = 0

        async def list_then_compact(opts: ResourceListOptions) -> Any:
            nonlocal calls
            calls += 1
            listing = await original_list(opts)
            if calls == 1:
                # The store moves on and is compacted before the watch is opened.
                moved = await backend.update(KVPair(first.key, pool("a", blockSize=24).value))
                await backend.delete(gone.key)
                await backend.create(pool("b", "10.1.0.0/16"))
                latest = await backend.update(KVPair(moved.key, pool("a", blockSize=25).value))
                await compact(backend, latest.revision)
            return listing

        backend.list = list_then_compact  # type: ignore[method-assign]
        async with running(syncer):
            await wait_for(lambda: sorted(k.name for k in rec.state) == ["a", "b"] and
                           rec.state[first.key].spec.block_size == 25, what="re-listed state")
            assert syncer.relists >= 1
            # The re-list told the consumer only what changed: a updated, gone deleted, b new.
            after_first = rec.updates[2:]
            assert sorted((u.type.value, u.key.name) for u in after_first) == [
                ("deleted", "gone"), ("new", "b"), ("updated", "a")]


class TestOutage:
    async def test_etcd_outage_goes_to_wait_for_datastore_then_back_in_sync(self) -> None:
        server = EtcdServer()
        server.start()
        be = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,), timeout=2))
        try:
            await be.create(pool("p1"))
            rec = Recorder()
            syncer = Syncer(be, [ResourceListOptions("IPPool")], rec)
            async with running(syncer):
                await wait_for(lambda: syncer.status is SyncStatus.IN_SYNC)
                server.stop()
                await wait_for(lambda: syncer.status is SyncStatus.WAIT_FOR_DATASTORE, what="outage noticed")
                # etcd keeps its data dir; the same port comes back.
                server.start()
                await wait_for(lambda: syncer.status is SyncStatus.IN_SYNC, what="recovered")
                await be.create(pool("p2", "10.1.0.0/16"))
                await wait_for(lambda: sorted(k.name for k in rec.state) == ["p1", "p2"], what="p2 seen")
                # etcd kept its history: the watch resumed from its revision, nothing was re-listed.
                assert syncer.relists == 0
        finally:
            await be.close()
            server.cleanup()


class DroppingWatches:
    """Wraps a backend's watch: each of the first ``drops`` watches ends after ``after`` events.

    ``how`` is "unavailable" (the stream raises DatastoreUnavailable, as a dropped gRPC stream or
    HTTP connection does) or "end" (the server closes the stream). Records the revision each watch
    was opened from.
    """

    def __init__(self, be: Backend, *, drops: int, after: int, how: str = "unavailable") -> None:
        self.be, self.drops, self.after, self.how = be, drops, after, how
        self.opened_from: list[str] = []
        self.dropped = asyncio.Event()
        self._watch = be.watch
        be.watch = self.watch  # type: ignore[method-assign]

    async def watch(self, opts: ResourceListOptions, revision: str) -> Any:
        self.opened_from.append(revision)
        drop = len(self.opened_from) <= self.drops
        seen = 0
        stream = self._watch(opts, revision)
        try:
            if drop and self.after == 0:
                self.dropped.set()
                await self._drop()
                return
            async for ev in stream:
                yield ev
                seen += 1
                if drop and seen >= self.after:
                    self.dropped.set()
                    await self._drop()
                    return
        finally:
            await stream.aclose()

    async def _drop(self) -> None:
        if self.how == "unavailable":
            raise DatastoreUnavailable("watch stream broken (test)")


class TestResume:
    """A dropped watch resumes from the last revision seen; only compaction brings a re-list."""

    @pytest.mark.parametrize("how", ["unavailable", "end"])
    async def test_a_dropped_watch_resumes_without_a_relist_and_misses_nothing(self, how: str) -> None:
        be = MemoryBackend()
        rec = Recorder()
        drops = DroppingWatches(be, drops=2, after=1, how=how)
        syncer = Syncer(be, [ResourceListOptions("IPPool")], rec)
        async with running(syncer):
            await wait_for(lambda: syncer.status is SyncStatus.IN_SYNC, what="in-sync")
            first = await be.create(pool("a"))
            await wait_for(drops.dropped.is_set, what="the first drop")
            # Written while no watch is open: the resumed watch must bring them, once, in order.
            await be.create(pool("b", "10.1.0.0/16"))
            await be.update(KVPair(first.key, pool("a", blockSize=24).value))
            await be.delete(first.key)
            await wait_for(lambda: [k.name for k in rec.state] == ["b"] and len(drops.opened_from) >= 3,
                           what="the writes after the drops")
            assert syncer.relists == 0
            assert [(u.type.value, u.key.name) for u in rec.updates] == [
                ("new", "a"), ("new", "b"), ("updated", "a"), ("deleted", "a")]
            # Each watch was opened from the last revision the previous one delivered.
            assert drops.opened_from[1] == first.revision
            assert rec.statuses == [SyncStatus.WAIT_FOR_DATASTORE, SyncStatus.IN_SYNC]

    async def test_compaction_during_the_drop_brings_one_relist_of_only_the_difference(self) -> None:
        be = MemoryBackend()
        rec = Recorder()
        await be.create(pool("a"))
        gone = await be.create(pool("gone", "10.9.0.0/16"))
        drops = DroppingWatches(be, drops=1, after=0)
        real_watch = drops.watch

        async def compact_then_watch(opts: ResourceListOptions, revision: str) -> Any:
            if len(drops.opened_from) == 1:  # the second watch: the store moved on and was compacted
                await be.delete(gone.key)
                latest = await be.create(pool("b", "10.1.0.0/16"))
                be.compact(latest.revision)
            async for ev in real_watch(opts, revision):
                yield ev

        be.watch = compact_then_watch  # type: ignore[method-assign]
        syncer = Syncer(be, [ResourceListOptions("IPPool")], rec)
        async with running(syncer):
            await wait_for(lambda: sorted(k.name for k in rec.state) == ["a", "b"], what="re-listed state")
            assert syncer.relists == 1
            assert sorted((u.type.value, u.key.name) for u in rec.updates[2:]) == [("deleted", "gone"), ("new", "b")]
            assert SyncStatus.WAIT_FOR_DATASTORE not in rec.statuses[1:]

    async def test_a_stored_value_that_does_not_parse_is_still_a_deletion_after_a_resume(self) -> None:
        be = MemoryBackend()
        rec = Recorder()
        drops = DroppingWatches(be, drops=1, after=1)
        syncer = Syncer(be, [ResourceListOptions("IPPool")], rec)
        async with running(syncer):
            await wait_for(lambda: syncer.status is SyncStatus.IN_SYNC)
            a = await be.create(pool("a"))
            await wait_for(drops.dropped.is_set, what="the drop")
            await be.put_raw(a.key, b'{"kind": "IPPool", "spec": {"cidr": "not a cidr"}}')
            await wait_for(lambda: not rec.state and len(rec.updates) == 2, what="the corrupt value as a deletion")
            assert rec.updates[-1].type is UpdateType.DELETED and syncer.relists == 0

    async def test_a_real_etcd_watch_dropped_mid_stream_resumes_from_its_revision(self, etcd: EtcdServer) -> None:
        be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,), timeout=5))
        try:
            rec = Recorder()
            drops = DroppingWatches(be, drops=3, after=2)
            syncer = Syncer(be, [ResourceListOptions("IPPool")], rec)
            async with running(syncer):
                await wait_for(lambda: syncer.status is SyncStatus.IN_SYNC)
                names = [f"p{i}" for i in range(12)]
                for i, name in enumerate(names):
                    await be.create(pool(name, f"10.{i}.0.0/16"))
                await wait_for(lambda: len(rec.state) == 12, what="every pool")
                assert [u.key.name for u in rec.updates] == names  # each once, in order
                assert len(drops.opened_from) >= 4 and syncer.relists == 0
                assert rec.statuses == [SyncStatus.WAIT_FOR_DATASTORE, SyncStatus.IN_SYNC]
        finally:
            await be.close()


def test_memory_backend_is_only_for_tests() -> None:
    """Production code never selects the memory backend: connect() knows only real datastores."""
    import inspect

    from libcalico import backend

    assert "MemoryBackend" not in inspect.getsource(backend.connect)
    assert MemoryBackend.__doc__ and "unit tests only" in MemoryBackend.__doc__


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
