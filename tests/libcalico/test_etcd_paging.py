"""The etcd backend lists in pages at one revision (gRPC caps a message at 4 MiB)."""

from __future__ import annotations

import pytest

from libcalico import api
from libcalico.backend import etcdv3
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from tests.etcd_server import EtcdServer


async def test_a_list_larger_than_a_page_is_complete_sorted_and_at_one_revision(
        etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcdv3, "LIST_PAGE", 3)
    be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,)))
    try:
        for i in range(10):
            p = api.IPPool.model_validate({"metadata": {"name": f"p{i:02d}"}, "spec": {"cidr": f"10.{i}.0.0/16"}})
            last = await be.create(KVPair(ResourceKey.for_resource(p), p))
        listing = await be.list(ResourceListOptions("IPPool"))
        assert [kv.key.name for kv in listing.items] == [f"p{i:02d}" for i in range(10)]
        assert listing.revision == last.revision
    finally:
        await be.close()
