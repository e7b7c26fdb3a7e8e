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
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from libcalico.watching import Syncer, SyncStatus, Update, UpdateType
from tests.etcd_server import EtcdServer
from tests.test_backend_contract import compact, pool


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
        finally:
            await be.close()
            server.cleanup()


def test_memory_backend_is_only_for_tests() -> None:
    """Production code never selects the memory backend: connect() knows only real datastores."""
    import inspect

    from libcalico import backend

    assert "MemoryBackend" not in inspect.getsource(backend.connect)
    assert MemoryBackend.__doc__ and "unit tests only" in MemoryBackend.__doc__


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
