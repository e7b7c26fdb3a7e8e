"""The datastore contract, run against every backend: real etcd, memory, Kubernetes.

Each test states one rule of libcalico.backend.api. The namespaced kind used
here is NetworkPolicy: a stored kind on every backend (WorkloadEndpoints are
derived from Pods on Kubernetes; tests/test_kubernetes_backend.py covers them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from libcalico import api
from libcalico.backend.api import Backend, CreateAndUpdate, EventType, ListKeys, ListMany, WatchEvent
from libcalico.backend.etcdv3 import EtcdBackend
from libcalico.backend.kubernetes import KubernetesBackend
from libcalico.backend.memory import MemoryBackend
from libcalico.errors import AlreadyExists, Conflict, NotFound, WatchCompacted
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from tests.conftest import KUBE_APIS


def pool(name: str, cidr: str = "10.244.0.0/16", **spec: Any) -> KVPair:
    res = api.IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})
    return KVPair(ResourceKey.for_resource(res), res)


def wep(ns: str, name: str) -> KVPair:
    """A namespaced resource (named for the endpoint it guards)."""
    res = api.NetworkPolicy.model_validate(
        {"metadata": {"name": name, "namespace": ns}, "spec": {"selector": "all()", "order": 10}})
    return KVPair(ResourceKey.for_resource(res), res)


POOLS = ResourceListOptions("IPPool")


async def next_event(stream: AsyncIterator[WatchEvent], timeout: float = 10.0) -> WatchEvent:
    return await asyncio.wait_for(anext(stream), timeout)


async def compact(be: Backend, revision: str) -> None:
    if isinstance(be, MemoryBackend):
        be.compact(revision)
    elif isinstance(be, KubernetesBackend):
        KUBE_APIS[id(be)].api.compact(int(revision))
    else:
        assert isinstance(be, EtcdBackend)
        await be.compact(revision)


class TestWrites:
    async def test_create_returns_the_stored_pair_with_its_revision(self, backend: Backend) -> None:
        kv = await backend.create(pool("p1"))
        assert kv.revision
        assert kv.value.metadata.resource_version == kv.revision
        got = await backend.get(kv.key)
        assert got.revision == kv.revision
        assert got.value.spec.cidr == "10.244.0.0/16"

    async def test_create_of_an_existing_key_is_already_exists(self, backend: Backend) -> None:
        await backend.create(pool("p1"))
        with pytest.raises(AlreadyExists, match=r"resource already exists: IPPool\(p1\)"):
            await backend.create(pool("p1", "10.1.0.0/16"))
        assert (await backend.get(pool("p1").key)).value.spec.cidr == "10.244.0.0/16"

    async def test_update_with_the_current_revision_succeeds_and_moves_the_revision(self, backend: Backend) -> None:
        kv = await backend.create(pool("p1"))
        new = await backend.update(KVPair(kv.key, pool("p1", natOutgoing=True).value, kv.revision))
        assert int(new.revision) > int(kv.revision)
        assert (await backend.get(kv.key)).value.spec.nat_outgoing is True

    async def test_update_with_a_stale_revision_is_a_conflict_and_changes_nothing(self, backend: Backend) -> None:
        kv = await backend.create(pool("p1"))
        await backend.update(KVPair(kv.key, pool("p1", disabled=True).value, kv.revision))
        with pytest.raises(Conflict, match=r"update conflict: IPPool\(p1\)"):
            await backend.update(KVPair(kv.key, pool("p1", natOutgoing=True).value, kv.revision))
        assert (await backend.get(kv.key)).value.spec.nat_outgoing is False

    async def test_update_without_revision_overwrites_but_needs_the_key(self, backend: Backend) -> None:
        with pytest.raises(NotFound, match=r"resource does not exist: IPPool\(p1\) with error: <nil>"):
            await backend.update(pool("p1"))
        await backend.create(pool("p1"))
        await backend.update(pool("p1", natOutgoing=True))
        assert (await backend.get(pool("p1").key)).value.spec.nat_outgoing is True

    async def test_apply_creates_or_overwrites(self, backend: Backend) -> None:
        a = await backend.apply(pool("p1"))
        b = await backend.apply(pool("p1", natOutgoing=True))
        assert int(b.revision) > int(a.revision)
        assert (await backend.get(a.key)).value.spec.nat_outgoing is True

    async def test_delete_returns_what_was_stored_and_honours_cas(self, backend: Backend) -> None:
        kv = await backend.create(pool("p1"))
        newer = await backend.update(KVPair(kv.key, kv.value, kv.revision))
        with pytest.raises(Conflict):
            await backend.delete(kv.key, kv.revision)
        gone = await backend.delete(kv.key, newer.revision)
        assert gone.value.name == "p1"
        with pytest.raises(NotFound):
            await backend.get(kv.key)
        with pytest.raises(NotFound):
            await backend.delete(kv.key)

    async def test_concurrent_cas_writers_exactly_one_wins(self, backend: Backend) -> None:
        kv = await backend.create(pool("p1"))

        async def writer(i: int) -> str:
            try:
                await backend.update(KVPair(kv.key, pool("p1", blockSize=20 + i).value, kv.revision))
                return "won"
            except Conflict:
                return "lost"

        outcomes = await asyncio.gather(*(writer(i) for i in range(10)))
        assert outcomes.count("won") == 1
        assert outcomes.count("lost") == 9
        winner = outcomes.index("won")
        assert (await backend.get(kv.key)).value.spec.block_size == 20 + winner

    async def test_concurrent_creates_exactly_one_wins(self, backend: Backend) -> None:
        async def creator(i: int) -> str:
            try:
                await backend.create(pool("p1", f"10.{i}.0.0/16"))
                return "won"
            except AlreadyExists:
                return "lost"

        outcomes = await asyncio.gather(*(creator(i) for i in range(8)))
        assert outcomes.count("won") == 1


class TestReads:
    async def test_list_is_sorted_and_carries_the_datastore_revision(self, backend: Backend) -> None:
        for name in ("c", "a", "b"):
            last = await backend.create(pool(name, f"10.{ord(name)}.0.0/16"))
        listing = await backend.list(POOLS)
        assert [kv.key.name for kv in listing.items] == ["a", "b", "c"]
        assert int(listing.revision) >= int(last.revision)

    async def test_list_by_name_and_by_namespace(self, backend: Backend) -> None:
        await backend.create(pool("p1"))
        await backend.create(pool("p10", "10.10.0.0/16"))
        assert [kv.key.name for kv in (await backend.list(ResourceListOptions("IPPool", name="p1"))).items] == ["p1"]
        await backend.create(wep("ns1", "w1"))
        await backend.create(wep("ns2", "w1"))
        await backend.create(wep("ns2", "w2"))
        all_weps = await backend.list(ResourceListOptions("NetworkPolicy"))
        assert [(kv.key.namespace, kv.key.name) for kv in all_weps.items] == [("ns1", "w1"), ("ns2", "w1"),
                                                                              ("ns2", "w2")]
        ns2 = await backend.list(ResourceListOptions("NetworkPolicy", namespace="ns2"))
        assert [kv.key.name for kv in ns2.items] == ["w1", "w2"]
        by_name = await backend.list(ResourceListOptions("NetworkPolicy", name="w1"))
        assert [kv.key.namespace for kv in by_name.items] == ["ns1", "ns2"]

    async def test_list_of_an_empty_kind_is_empty_with_a_revision(self, backend: Backend) -> None:
        listing = await backend.list(ResourceListOptions("BGPPeer"))
        assert listing.items == [] and listing.revision

    async def test_kinds_do_not_see_each_other(self, backend: Backend) -> None:
        await backend.create(pool("x"))
        assert (await backend.list(ResourceListOptions("BGPPeer"))).items == []


class TestWatch:
    async def test_list_then_watch_misses_nothing_and_repeats_nothing(self, backend: Backend) -> None:
        await backend.create(pool("before"))
        listing = await backend.list(POOLS)
        stream = backend.watch(POOLS, listing.revision)
        try:
            created = await backend.create(pool("after", "10.1.0.0/16"))
            updated = await backend.update(KVPair(created.key, created.value, created.revision))
            await backend.delete(created.key)
            e1, e2, e3 = [await next_event(stream) for _ in range(3)]
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        assert (e1.type, e1.key.name, e1.revision) == (EventType.ADDED, "after", created.revision)
        assert (e2.type, e2.revision) == (EventType.MODIFIED, updated.revision)
        assert e2.old is not None and e2.old.revision == created.revision
        assert e3.type is EventType.DELETED and e3.new is None
        assert e3.old is not None and e3.old.value.name == "after"

    async def test_watch_resumes_from_a_revision(self, backend: Backend) -> None:
        first = await backend.create(pool("a"))
        second = await backend.create(pool("b", "10.1.0.0/16"))
        third = await backend.create(pool("c", "10.2.0.0/16"))
        stream = backend.watch(POOLS, first.revision)
        try:
            events = [await next_event(stream) for _ in range(2)]
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        assert [e.revision for e in events] == [second.revision, third.revision]

    async def test_watch_filters_by_kind_and_namespace(self, backend: Backend) -> None:
        start = (await backend.list(POOLS)).revision
        stream = backend.watch(ResourceListOptions("NetworkPolicy", namespace="ns2"), start)
        try:
            await backend.create(pool("p"))
            await backend.create(wep("ns1", "w"))
            await backend.create(wep("ns2", "w"))
            event = await next_event(stream)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        assert (event.key.kind, event.key.namespace) == ("NetworkPolicy", "ns2")

    async def test_watch_from_a_compacted_revision_reports_compaction(self, backend: Backend) -> None:
        first = await backend.create(pool("a"))
        for i in range(3):
            last = await backend.update(pool("a", blockSize=24 + i))
        await compact(backend, last.revision)
        stream = backend.watch(POOLS, first.revision)
        with pytest.raises(WatchCompacted):
            try:
                await next_event(stream)
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # type: ignore[attr-defined]


class TestCreateAndUpdate:
    """The optional two-key atomic write (etcd, memory); both keys change, or neither does."""

    async def test_both_or_neither(self, backend: Backend) -> None:
        if not isinstance(backend, CreateAndUpdate):
            pytest.skip(f"{type(backend).__name__} has no multi-key transactions")
        p1 = await backend.create(pool("p1"))
        made, updated = await backend.create_and_update(
            pool("p2", "10.245.0.0/16"), KVPair(p1.key, pool("p1", "10.246.0.0/16").value, p1.revision))
        assert made.revision and updated.revision
        assert (await backend.get(p1.key)).value.spec.cidr == "10.246.0.0/16"
        # The key to create exists: nothing changes.
        with pytest.raises(AlreadyExists):
            await backend.create_and_update(pool("p2"), KVPair(p1.key, pool("p1").value, updated.revision))
        # A stale revision for the update: nothing changes, the new key is not made either.
        with pytest.raises(Conflict):
            await backend.create_and_update(pool("p3", "10.247.0.0/16"), KVPair(p1.key, pool("p1").value, p1.revision))
        with pytest.raises(NotFound):
            await backend.create_and_update(pool("p3", "10.247.0.0/16"), pool("gone"))
        names = [kv.key.name for kv in (await backend.list(POOLS)).items]
        assert names == ["p1", "p2"]
        assert (await backend.get(p1.key)).value.spec.cidr == "10.246.0.0/16"


class TestListKeys:
    """The optional keys-only listing (etcd, memory): the keys ``list`` returns, nothing else."""

    async def test_the_same_keys_as_list_in_the_same_order(self, backend: Backend) -> None:
        if not isinstance(backend, ListKeys):
            pytest.skip(f"{type(backend).__name__} lists values only")
        assert await backend.list_keys(POOLS) == []
        for name, cidr in (("p2", "10.245.0.0/16"), ("p1", "10.244.0.0/16"), ("p3", "10.246.0.0/16")):
            await backend.create(pool(name, cidr))
        await backend.create(wep("ns1", "np1"))
        await backend.create(wep("ns2", "np1"))
        for opts in (POOLS, ResourceListOptions("IPPool", name="p2"), ResourceListOptions("NetworkPolicy"),
                     ResourceListOptions("NetworkPolicy", namespace="ns2"), ResourceListOptions("IPPool", name="no")):
            assert await backend.list_keys(opts) == [kv.key for kv in (await backend.list(opts)).items], opts
        assert [k.name for k in await backend.list_keys(POOLS)] == ["p1", "p2", "p3"]


class TestListMany:
    """The optional many-listings read (etcd, memory): what ``list`` returns for each, at one revision."""

    async def test_each_listing_as_list_returns_it(self, backend: Backend) -> None:
        if not isinstance(backend, ListMany):
            pytest.skip(f"{type(backend).__name__} reads one listing at a time")
        for name, cidr in (("p2", "10.245.0.0/16"), ("p1", "10.244.0.0/16")):
            await backend.create(pool(name, cidr))
        last = await backend.create(wep("ns1", "np1"))
        opts = [POOLS, ResourceListOptions("IPPool", name="p2"), ResourceListOptions("IPPool", name="none"),
                ResourceListOptions("NetworkPolicy", namespace="ns1"), ResourceListOptions("NetworkPolicy", "ns9")]
        got = await backend.list_many(opts)
        assert [[kv.key for kv in listing.items] for listing in got] == \
            [[kv.key for kv in (await backend.list(o)).items] for o in opts]
        assert [kv.value for kv in got[0].items] == [kv.value for kv in (await backend.list(POOLS)).items]
        assert {listing.revision for listing in got} == {last.revision}

    async def test_a_listing_longer_than_a_page_is_read_whole_at_the_same_revision(
            self, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
        if not isinstance(backend, ListMany):
            pytest.skip(f"{type(backend).__name__} reads one listing at a time")
        monkeypatch.setattr("libcalico.backend.etcdv3.LIST_PAGE", 2)
        for i in range(5):
            await backend.create(pool(f"p{i}", f"10.{i}.0.0/16"))
        [pools, none] = await backend.list_many([POOLS, ResourceListOptions("IPPool", name="x")])
        assert [kv.key.name for kv in pools.items] == [f"p{i}" for i in range(5)] and none.items == []
