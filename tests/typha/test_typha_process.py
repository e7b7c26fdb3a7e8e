"""A real ``calico-typha`` process on a real etcd, with fifty Felix calculation sides and confd behind it.

Loopback only. The Felix and confd objects are the daemons' own (their syncer
callbacks and state); their dataplane and BIRD are not involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from confd import daemon as confd_daemon
from confd import writer as confd_writer
from felix import daemon as felix_daemon
from felix.config import FelixSettings
from libcalico import api, syncers
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.backend.memory import MemoryBackend
from libcalico.model import KVPair, ResourceKey
from libcalico.typha_client import TyphaClient, TyphaConfig
from libcalico.watching import SyncStatus
from tests.etcd_server import EtcdServer, free_port
from tests.libcalico.test_backend_contract import pool
from tests.typha.helpers import Recorder, cancel_all, wait_for

pytestmark = pytest.mark.etcd


class TyphaProcess:
    """``calico-typha`` as a child process, its log in a file."""

    def __init__(self, etcd_endpoint: str, log: Path, **env: str) -> None:
        self.port, self.health, self.metrics = free_port(), free_port(), free_port()
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("TYPHA_", "ETCD_", "DATASTORE_"))}
        self.env.update({
            "TYPHA_DATASTORETYPE": "etcdv3", "TYPHA_ETCDENDPOINTS": etcd_endpoint,
            "TYPHA_SERVERHOST": "127.0.0.1", "TYPHA_SERVERPORT": str(self.port),
            "TYPHA_HEALTHENABLED": "true", "TYPHA_HEALTHHOST": "127.0.0.1", "TYPHA_HEALTHPORT": str(self.health),
            "TYPHA_PROMETHEUSMETRICSENABLED": "true", "TYPHA_PROMETHEUSMETRICSHOST": "127.0.0.1",
            "TYPHA_PROMETHEUSMETRICSPORT": str(self.metrics), "TYPHA_SHUTDOWNTIMEOUTSECS": "2",
            "TYPHA_SHUTDOWNCONNECTIONDROPINTERVALMAXSECS": "0.05",
            **{f"TYPHA_{k.upper()}": v for k, v in env.items()}})
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(["calico-typha"], env=self.env, stdout=out, stderr=subprocess.STDOUT)
        await wait_for(lambda: self.proc is not None and self.proc.poll() is None, what="Typha running")

        async def ready() -> bool:
            return await http_get(self.health, "/readiness") == 204
        await wait_until_async(ready, 30, "Typha ready (every cache in sync)")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        await wait_for(lambda: self.proc is not None and self.proc.poll() is not None, timeout, "Typha exits")
        return self.proc.returncode

    async def scrape(self) -> str:
        _, body = await http(self.metrics, "/metrics")
        return body

    async def metric(self, name: str, labels: str = "") -> float:
        text = await self.scrape()
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
        assert m, f"{name}{labels} not in Typha's metrics"
        return float(m.group(1))

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


async def http(port: int, path: str) -> tuple[int, str]:
    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
    return await asyncio.to_thread(get)


async def http_get(port: int, path: str) -> int:
    try:
        return (await http(port, path))[0]
    except OSError:
        return 0


async def wait_until_async(cond: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def typha_process(etcd_endpoint: str, log: Path, **env: str) -> AsyncIterator[TyphaProcess]:
    typha = TyphaProcess(etcd_endpoint, log, **env)
    try:
        await typha.start()
        yield typha
    finally:
        typha.kill()
        if typha.proc is not None:
            typha.proc.wait(10)


class Consumers:
    """Clients behind one Typha: Felix calculation sides (felix syncer) and confd (bgp syncer)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[TyphaClient] = []
        self.recorders: list[Recorder] = []
        self.felixes: list[felix_daemon.Felix] = []
        self.confds: list[confd_daemon.Confd] = []
        self.tasks: list[asyncio.Task[None]] = []

    def felix(self, name: str, **client: Any) -> Recorder:
        fx = felix_daemon.Felix(MemoryBackend(), FelixSettings(FelixHostname=name))
        self.felixes.append(fx)
        return self._add("felix", name, Recorder(fx), client)

    def confd(self, name: str, tmp: Path) -> Recorder:
        cd = confd_daemon.Confd(name, tmp / name, confd_writer.Commands(check=("true",), socket="/none"))
        self.confds.append(cd)
        return self._add("bgp", name, Recorder(cd), {})

    def _add(self, syncer_type: str, name: str, rec: Recorder, client: dict[str, Any]) -> Recorder:
        c = TyphaClient(TyphaConfig(addr=f"127.0.0.1:{self.port}", read_timeout=10), syncer_type, rec, hostname=name,
                        info=syncer_type, **client)
        self.clients.append(c)
        self.recorders.append(rec)
        self.tasks.append(asyncio.create_task(c.run(), name=f"typha-client-{name}"))
        return rec

    async def close(self) -> None:
        await cancel_all(list(self.tasks))


@contextlib.asynccontextmanager
async def consumers(port: int) -> AsyncIterator[Consumers]:
    made = Consumers(port)
    try:
        yield made
    finally:
        await made.close()


def a_node(name: str, i: int, **labels: str) -> KVPair:
    res = api.Node.model_validate({"metadata": {"name": name, "labels": labels},
                                   "spec": {"bgp": {"ipv4Address": f"192.0.2.{i}/24"}}})
    return KVPair(ResourceKey.for_resource(res), res)


def a_peer(name: str, asn: int) -> KVPair:
    res = api.BGPPeer.model_validate({"metadata": {"name": name}, "spec": {"peerIP": "198.51.100.1",
                                                                            "asNumber": asn}})
    return KVPair(ResourceKey.for_resource(res), res)


def big_policy(name: str, n: int, size: int = 20000) -> KVPair:
    res = api.GlobalNetworkPolicy.model_validate({"metadata": {"name": name, "annotations": {
        "fill": f"{n:06}" + "x" * size}}, "spec": {"selector": "all()"}})
    return KVPair(ResourceKey.for_resource(res), res)


async def churn(be: EtcdBackend, rounds: range) -> list[tuple[ResourceKey, str]]:
    """Writes to pools, nodes and peers (seen by Felix and confd alike); (key, revision or "deleted") of each."""
    out = []
    for i in rounds:
        kvs = [pool(f"pool{i % 5}", f"10.{i % 5}.0.0/16", blockSize=20 + i % 7), a_node(f"node{i % 10}", i % 10 + 1,
               round=str(i)), a_peer(f"peer{i % 3}", 64512 + i)]
        kv = await be.apply(kvs[i % 3])
        out.append((kv.key, kv.revision))
        if i % 17 == 16:
            await be.delete(kv.key)
            out.append((kv.key, "deleted"))
    return out


async def fresh_list(be: EtcdBackend, definition: syncers.SyncerDefinition) -> dict[ResourceKey, Any]:
    out: dict[ResourceKey, Any] = {}
    for opts in definition.types:
        out.update({kv.key: kv.value for kv in (await be.list(opts)).items})
    return out


@pytest.fixture
def etcd_be(etcd: EtcdServer) -> Iterator[EtcdBackend]:
    be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,), timeout=10))
    yield be


async def etcd_watchers(etcd: EtcdServer) -> float:
    """How many watchers etcd serves (its own gauge)."""
    def get() -> str:  # urllib: etcd answers in chunks
        with urllib.request.urlopen(f"{etcd.endpoint}/metrics", timeout=10) as resp:
            return str(resp.read().decode())
    text = await asyncio.to_thread(get)
    m = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
    assert m, "etcd has no watcher gauge"
    return float(m.group(1))


async def test_fifty_felix_and_confd_through_one_typha_see_every_update_once_in_order_and_a_stall_hurts_no_one(
        etcd: EtcdServer, etcd_be: EtcdBackend, tmp_path: Path) -> None:
    be = etcd_be
    try:
        await churn(be, range(30))  # a datastore that is not empty
        async with typha_process(etcd.endpoint, tmp_path / "typha.log", servermaxfallbehindsecs="2",
                                 servernewclientfallbehindgraceperiod="0.01", serverpingintervalsecs="1") as typha, \
                consumers(typha.port) as cs:
            # One watcher per resource type of Typha's pipelines...
            types = sum(len(syncers.for_typha(t).types) for t in syncers.ALL_TYPES)

            async def watching() -> bool:
                return await etcd_watchers(etcd) == types
            await wait_until_async(watching, 20, f"{types} watchers on etcd")
            felixes = [cs.felix(f"node{i}") for i in range(50)]
            confd = cs.confd("node1", tmp_path)
            stalled = cs.felix("stalled", compression=())
            await wait_for(lambda: all(r.in_sync for r in cs.recorders), 60, "every client in sync")
            # ... however many clients there are.
            assert await etcd_watchers(etcd) == types
            starts = [len(r.updates) for r in cs.recorders]
            written = await churn(be, range(30, 130))
            await wait_for(lambda: all(len(r.updates) - s >= len(written) for r, s in zip(cs.recorders, starts)), 60,
                           "every update at every client")
            streams = []
            for r, s in zip(cs.recorders, starts):
                seen = [(u.key, "deleted" if u.kv.value is None else u.kv.revision) for u in r.updates[s:]]
                assert len(seen) == len(written) and not r.errors  # each once
                for key in {k for k, _ in written}:  # and each key's in order
                    assert [rv for k, rv in seen if k == key] == [rv for k, rv in written if k == key]
                streams.append(tuple(seen))
            # Every client got the same stream, in the same order (one breadcrumb chain).
            assert len(set(streams)) == 1
            felix_state = await fresh_list(be, syncers.felix())
            assert all(r.state == felix_state for r in felixes)
            pools = {k.name: v for k, v in felix_state.items() if k.kind == "IPPool"}
            assert all(fx.graph.routes.pools == pools for fx in cs.felixes)
            assert cs.confds[0].inputs.peers == {k.name: v for k, v in felix_state.items() if k.kind == "BGPPeer"}
            assert confd.state == await fresh_list(be, syncers.bgp())

            # The stalled client: it stops reading; the others keep up; it is dropped past 2 s behind.
            stalled_client = cs.clients[-1]
            stalled_client.reading.clear()
            streaming = await typha.metric("typha_connections_streaming", '{syncer="felix"}')
            n = 0
            loop = asyncio.get_running_loop()
            started = loop.time()
            while await typha.metric("typha_connections_streaming", '{syncer="felix"}') == streaming:
                for _ in range(10):
                    kv = await be.apply(big_policy(f"gnp{n % 40}", n))
                    n += 1
                await wait_for(lambda: all(r.revisions.get(kv.key) == kv.revision for r in felixes), 20,
                               f"write {n} at every running Felix")
                assert loop.time() - started < 60, "the stalled client was never dropped"
            assert loop.time() - started >= 2 and "fell behind" in typha.logs()
            stalled_client.reading.set()
            final = await fresh_list(be, syncers.felix())
            await wait_for(lambda: stalled.state == final and all(r.state == final for r in felixes), 60,
                           "the stalled client resynced")
            assert stalled_client.relists == 1 and not stalled.errors
            assert all(c.relists == 0 for c in cs.clients[:-1])  # nobody else was disturbed

            # A client that joins now ends with the state of a fresh list.
            late = cs.felix("late")
            await churn(be, range(130, 160))
            final = await fresh_list(be, syncers.felix())
            await wait_for(lambda: late.state == final and felixes[0].state == final, 30, "the late client")

            # Calico's metrics, by name.
            text = await typha.scrape()
            for name in ("typha_connections_active", "typha_connections_accepted",
                         "typha_connections_dropped", 'typha_connections_streaming{syncer="bgp"}',
                         'typha_updates_total{syncer="felix"}', 'typha_breadcrumb_block{syncer="felix"}',
                         'typha_breadcrumb_non_block{syncer="felix"}', 'typha_cache_size{syncer="felix"}',
                         'typha_client_snapshot_send_secs_count{syncer="felix"}',
                         'typha_ping_latency_count{syncer="felix"}', 'typha_kvs_per_msg_count{syncer="felix"}',
                         'typha_breadcrumb_seq_number{syncer="felix"}'):
                assert re.search(rf"^{re.escape(name)} ", text, re.M), name
            assert await typha.metric("typha_connections_active") == 53

            # SIGTERM: the clients are shed, the process exits 0.
            typha.kill(signal.SIGTERM)
            assert await typha.wait() == 0
            assert "graceful shutdown" in typha.logs() and "Traceback" not in typha.logs()
            await wait_for(lambda: all(r.statuses[-1] is SyncStatus.WAIT_FOR_DATASTORE for r in cs.recorders), 10,
                           "every client disconnected")
    finally:
        await be.close()


# Each metric Calico's Typha registers (typha/pkg/snapcache, typha/pkg/syncserver) and its type, as the Go
# client exposes it: a counter under the name it was given (only typha_updates_total ends in "_total").
CALICO_METRICS = {
    "typha_breadcrumb_seq_number": "gauge", "typha_breadcrumb_non_block": "counter",
    "typha_breadcrumb_block": "counter", "typha_updates_total": "counter", "typha_updates_skipped": "counter",
    "typha_cache_size": "gauge", "typha_breadcrumb_size": "summary", "typha_snapshots_generated": "counter",
    "typha_snapshots_reused": "counter", "typha_snapshot_raw_bytes": "gauge",
    "typha_snapshot_compressed_bytes": "gauge", "typha_connections_accepted": "counter",
    "typha_connections_dropped": "counter", "typha_connections_active": "gauge",
    "typha_connections_streaming": "gauge", "typha_connections_grace_used": "counter",
    "typha_client_snapshot_send_secs": "summary", "typha_client_latency_secs": "summary",
    "typha_client_write_latency_secs": "summary", "typha_next_breadcrumb_latency_secs": "summary",
    "typha_ping_latency": "summary", "typha_kvs_per_msg": "summary",
}


async def test_typhas_metrics_endpoint_exposes_calicos_names_and_types_and_no_total_suffix_calico_lacks(
        etcd: EtcdServer, etcd_be: EtcdBackend, tmp_path: Path) -> None:
    try:
        await churn(etcd_be, range(10))
        async with typha_process(etcd.endpoint, tmp_path / "typha.log") as typha, consumers(typha.port) as cs:
            recs = [cs.felix("node1"), cs.confd("node1", tmp_path)]
            await wait_for(lambda: all(r.in_sync for r in recs), 30, "the clients in sync")
            status, text = await http(typha.metrics, "/metrics")  # the port of TYPHA_PROMETHEUSMETRICSPORT
            assert status == 200
            types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
            samples = set(re.findall(r"^([a-z_]+)[{ ]", text, re.M))
            assert types == CALICO_METRICS
            for name in samples:  # every series belongs to one of Calico's families, under its name
                family = name.removesuffix("_sum").removesuffix("_count") if name not in types else name
                assert family in types, name
                assert types[family] == "summary" or name == family, name
            assert not any(n.endswith(("_total", "_created")) and n not in CALICO_METRICS for n in samples)
            assert set(CALICO_METRICS) <= {n.removesuffix("_count").removesuffix("_sum") for n in samples}
            assert await typha.metric("typha_connections_accepted") == 2
            assert await typha.metric("typha_connections_active") == 2
            assert await typha.metric("typha_connections_streaming", '{syncer="bgp"}') == 1
            assert await typha.metric("typha_snapshots_generated", '{syncer="felix"}') >= 1
            assert await typha.metric("typha_updates_total", '{syncer="felix"}') > 0
            assert (await http(typha.metrics, "/other"))[0] == 404
    finally:
        await etcd_be.close()


async def test_killing_typha_and_the_datastore_mid_churn_leaves_every_client_in_sync(tmp_path: Path) -> None:
    etcd = EtcdServer()
    etcd.start()
    be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,), timeout=5))
    try:
        await churn(be, range(20))
        typha = TyphaProcess(etcd.endpoint, tmp_path / "typha.log")
        try:
            await typha.start()
            async with consumers(typha.port) as cs:
                recs = [cs.felix(f"node{i}") for i in range(10)] + [cs.confd("node1", tmp_path)]
                await wait_for(lambda: all(r.in_sync for r in recs), 30, "in sync")
                await churn(be, range(20, 60))
                typha.kill()  # SIGKILL mid-churn
                await typha.wait()
                await churn(be, range(60, 100))  # written while Typha is down
                await typha.start()
                await churn(be, range(100, 120))
                etcd.stop()  # and the datastore goes too, then comes back
                etcd.start()
                await churn(be, range(120, 160))
                felix_state, bgp_state = await fresh_list(be, syncers.felix()), await fresh_list(be, syncers.bgp())
                await wait_for(lambda: all(r.state == felix_state for r in recs[:-1]) and recs[-1].state == bgp_state
                               and all(r.in_sync for r in recs), 60, "every client in sync with the datastore")
                assert not any(r.errors for r in recs)
                assert all(c.relists >= 1 for c in cs.clients)  # they resynced after the kill
        finally:
            typha.kill()
            if typha.proc is not None:
                typha.proc.wait(10)
    finally:
        await be.close()
        etcd.cleanup()
