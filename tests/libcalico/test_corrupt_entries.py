"""A stored value that does not parse is a logged "parse failure", never a crash (issue 18, item 3).

Calico's rule (libcalico-go ``SyncerParseFailCallbacks``, a nil value): one bad
key written around Calico's validation, e.g. straight into etcd, is logged and
treated as deleted; every other key goes on. Checked at each layer: the
backends (list, get, delete, watch), the one watch loop, calicoctl's listings
and confd, on a real etcd.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from libcalico import api
from libcalico.backend.api import Backend
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.backend.memory import MemoryBackend
from libcalico.errors import CorruptEntry
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from libcalico.watching import Syncer, SyncStatus, Update, UpdateType
from tests.etcd_server import EtcdServer

BAD_PEER = json.dumps({"kind": "BGPPeer", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "bad"},
                       "spec": {"peerIP": "999.1.1.1", "asNumber": 64512}}).encode()
BAD_WEP = json.dumps({"kind": "WorkloadEndpoint", "apiVersion": "projectcalico.org/v3",
                      "metadata": {"name": "node1-k8s-p-eth0", "namespace": "default"},
                      "spec": {"node": "node1", "orchestrator": "k8s", "pod": "p", "endpoint": "eth0",
                               "interfaceName": "cali1", "ipNetworks": ["garbage"]}}).encode()
BAD_KEY = ResourceKey("BGPPeer", "bad")


def good_peer(name: str, ip: str) -> api.BGPPeer:
    return api.BGPPeer.model_validate({"metadata": {"name": name}, "spec": {"peerIP": ip, "asNumber": 64512}})


def etcdctl(endpoint: str, *args: str) -> None:
    subprocess.run(["etcdctl", f"--endpoints={endpoint}", *args], check=True, capture_output=True, timeout=30,
                   env={**os.environ, "ETCDCTL_API": "3"})


async def put_raw(be: Backend, key: ResourceKey, data: bytes, etcd: EtcdServer | None) -> None:
    if isinstance(be, MemoryBackend):
        await be.put_raw(key, data)
    else:
        assert etcd is not None
        await asyncio.to_thread(etcdctl, etcd.endpoint, "put", key.path(), data.decode())


@pytest.fixture(params=["etcd", "memory"])
async def raw_backend(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A backend a test can write raw bytes into (as a foreign writer to etcd can), and its etcd."""
    if request.param == "etcd":
        server: EtcdServer = request.getfixturevalue("etcd")
        be: Backend = EtcdBackend(EtcdConfig(endpoints=(server.endpoint,), timeout=5))
        yield be, server
    else:
        be = MemoryBackend()
        yield be, None
    await be.close()


async def test_a_listing_skips_an_entry_that_does_not_parse_and_reports_it(raw_backend) -> None:  # type: ignore[no-untyped-def]
    be, etcd = raw_backend
    await be.create(KVPair(ResourceKey("BGPPeer", "a"), good_peer("a", "10.0.0.1")))
    await put_raw(be, BAD_KEY, BAD_PEER, etcd)
    await be.create(KVPair(ResourceKey("BGPPeer", "c"), good_peer("c", "10.0.0.3")))
    listing = await be.list(ResourceListOptions("BGPPeer"))
    assert [kv.key.name for kv in listing.items] == ["a", "c"]
    assert [c.key for c in listing.corrupt] == [BAD_KEY]
    message = str(listing.corrupt[0])
    assert "BGPPeer(bad)" in message and "spec.peerIP" in message and "invalid IP address" in message
    assert "pydantic.dev" not in message  # issue 18 item 14: no library help URL in stored-entry errors


async def test_get_names_the_entry_and_delete_clears_it(raw_backend) -> None:  # type: ignore[no-untyped-def]
    be, etcd = raw_backend
    await put_raw(be, BAD_KEY, BAD_PEER, etcd)
    with pytest.raises(CorruptEntry, match=r"BGPPeer\(bad\) does not parse: spec.peerIP"):
        await be.get(BAD_KEY)
    removed = await be.delete(BAD_KEY)
    assert removed.value is None and removed.key == BAD_KEY
    assert (await be.list(ResourceListOptions("BGPPeer"))).items == []


async def test_json_that_is_not_an_object_is_a_corrupt_entry_too(raw_backend) -> None:  # type: ignore[no-untyped-def]
    be, etcd = raw_backend
    for junk in (b"[1, 2]", b"not json", b'"a string"', b"{\"spec\": []}"):
        await put_raw(be, BAD_KEY, junk, etcd)
        with pytest.raises(CorruptEntry):
            await be.get(BAD_KEY)


class Recorder:
    def __init__(self) -> None:
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.state: dict[str, api.BGPPeer] = {}
        self.changed = asyncio.Event()

    def on_status(self, status: SyncStatus) -> None:
        self.status = status
        self.changed.set()

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            if u.type is UpdateType.DELETED:
                self.state.pop(u.key.name, None)
            else:
                self.state[u.key.name] = u.kv.value
        self.changed.set()

    async def until(self, cond: object, timeout: float = 10) -> None:
        async def wait() -> None:
            while not cond():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(wait(), timeout)


async def test_the_watch_loop_treats_a_value_gone_bad_as_deleted_and_goes_on(raw_backend) -> None:  # type: ignore[no-untyped-def]
    """Bad at the listing, turned bad while watched, fixed again: the syncer follows, and is never stopped."""
    be, etcd = raw_backend
    await be.create(KVPair(ResourceKey("BGPPeer", "a"), good_peer("a", "10.0.0.1")))
    await put_raw(be, BAD_KEY, BAD_PEER, etcd)
    rec = Recorder()
    syncer = Syncer(be, [ResourceListOptions("BGPPeer")], rec)
    task = asyncio.create_task(syncer.run())
    try:
        await rec.until(lambda: rec.status is SyncStatus.IN_SYNC and set(rec.state) == {"a"})
        # A good value turns bad: treated as deleted.
        good_a = json.loads(BAD_PEER)
        good_a["metadata"]["name"] = "a"
        await put_raw(be, ResourceKey("BGPPeer", "a"), json.dumps(good_a).encode(), etcd)
        await rec.until(lambda: "a" not in rec.state)
        # Later changes still flow, and a fixed value comes back.
        await be.create(KVPair(ResourceKey("BGPPeer", "d"), good_peer("d", "10.0.0.4")))
        await be.apply(KVPair(BAD_KEY, good_peer("bad", "10.0.0.2")))
        await rec.until(lambda: set(rec.state) == {"d", "bad"})
        assert str(rec.state["bad"].spec.peer_ip) == "10.0.0.2"
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_corrupt_endpoint_leaves_the_others_to_the_syncer(etcd: EtcdServer) -> None:
    """The issue's Felix case: a WorkloadEndpoint with ``ipNetworks: ["garbage"]`` took Felix down."""
    be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,), timeout=5))
    key = ResourceKey("WorkloadEndpoint", "node1-k8s-p-eth0", "default")
    await asyncio.to_thread(etcdctl, etcd.endpoint, "put", key.path(), BAD_WEP.decode())
    seen: list[Update] = []
    statuses: list[SyncStatus] = []

    class Callbacks:
        def on_status(self, status: SyncStatus) -> None:
            statuses.append(status)

        def on_updates(self, updates: list[Update]) -> None:
            seen.extend(updates)

    syncer = Syncer(be, [ResourceListOptions("WorkloadEndpoint"), ResourceListOptions("IPPool")], Callbacks())
    task = asyncio.create_task(syncer.run())
    try:
        for _ in range(100):
            if SyncStatus.IN_SYNC in statuses:
                break
            await asyncio.sleep(0.05)
        assert statuses[-1] is SyncStatus.IN_SYNC and seen == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await be.close()


def test_calicoctl_lists_the_good_entries_and_names_the_bad_one(etcd_env: dict[str, str], etcd: EtcdServer) -> None:
    etcdctl(etcd.endpoint, "put", BAD_KEY.path(), BAD_PEER.decode())
    r = subprocess.run(["calicoctl", "apply", "-f", "-"], env=etcd_env, capture_output=True, text=True, timeout=60,
                       input="kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {name: good}\n"
                             "spec: {peerIP: 10.0.0.1, asNumber: 64512}\n")
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["calicoctl", "get", "bgppeer"], env=etcd_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "good" in r.stdout and "bad" not in r.stdout
    assert "BGPPeer(bad) does not parse: spec.peerIP" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(["calicoctl", "get", "bgppeer", "bad"], env=etcd_env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "BGPPeer(bad) does not parse" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(["calicoctl", "delete", "bgppeer", "bad"], env=etcd_env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout


def test_confd_onetime_renders_everything_else(etcd_env: dict[str, str], etcd: EtcdServer, tmp_path: Path) -> None:
    """``-onetime`` exited with a pydantic dump; now it logs the bad peer and writes the config."""
    etcdctl(etcd.endpoint, "put", BAD_KEY.path(), BAD_PEER.decode())
    r = subprocess.run(["calicoctl", "apply", "-f", "-"], env=etcd_env, capture_output=True, text=True, timeout=60,
                       input="kind: BGPPeer\napiVersion: projectcalico.org/v3\nmetadata: {name: good}\n"
                             "spec: {peerIP: 10.0.0.1, asNumber: 64512}\n---\n"
                             "kind: Node\napiVersion: projectcalico.org/v3\nmetadata: {name: node1}\n"
                             "spec: {bgp: {ipv4Address: 192.168.3.111/24}}\n")
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["calico-confd", "-onetime", "-confdir", str(tmp_path), "--nodename", "node1",
                        "--bird-socket", str(tmp_path / "none.ctl")],
                       env=etcd_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "parse" in r.stderr and "BGPPeer(bad)" in r.stderr and "Traceback" not in r.stderr
    bird = (tmp_path / "config" / "bird.cfg").read_text()
    assert "10.0.0.1" in bird and "999.1.1.1" not in bird
