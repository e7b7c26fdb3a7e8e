"""The Felix daemon: syncer -> calculation -> dataplane, with health, metrics and resync.

Shape (``felix/dataplane/linux/int_dataplane.go``): updates from the syncer only
record state and mark the dataplane dirty (cheap). The apply loop calculates
the desired state (:mod:`felix.calc`) and hands it to the managers, only when
the datastore is in sync, in one fixed order:

1. the VXLAN device and its peers' ARP/FDB entries (a route via a VTEP needs them);
2. routes (workloads, blackholes, tunnel routes);
3. the natOutgoing table.

Each manager reads the kernel back and reconciles, so an apply after a restart,
or the periodic resync, repairs whatever drifted. A failed apply stays dirty
and is retried with backoff. The managers use pyroute2's synchronous API in a
worker thread, outside the event loop.

Felix also gives the node its VXLAN tunnel address (from the node's IPAM
block) and VTEP MAC, on its Node, when a pool uses VXLAN: the other nodes
build their routes from them. Health on :9099 (``/liveness``, ``/readiness``:
ready after the first in-sync apply, and not while the dataplane cannot do
what is configured, e.g. IPIP on a kernel without the ipip module; the 503's
body says why), Prometheus metrics on :9091 with Felix's
names. SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

import prometheus_client as prom

from felix import calc
from felix.config import FelixSettings, settings
from felix.dataplane.ipip import IPIPDevice
from felix.dataplane.nat import NATOutgoing
from felix.dataplane.routes import RouteTable
from felix.dataplane.vxlan import VXLANDevice
from libcalico import api, backend
from libcalico.backend.api import Backend
from libcalico.backend.config import DatastoreConfig, from_environment
from libcalico.errors import CalicoError, Conflict, NotFound
from libcalico.ipam import IPAM
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from libcalico.watching import Syncer, SyncStatus, Update

log = logging.getLogger("felix")

REGISTRY = prom.CollectorRegistry()
ACTIVE_LOCAL_ENDPOINTS = prom.Gauge("felix_active_local_endpoints", "Number of active endpoints on this host.",
                                    registry=REGISTRY)
CLUSTER_NUM_HOSTS = prom.Gauge("felix_cluster_num_hosts", "Total number of Calico hosts in the cluster.",
                               registry=REGISTRY)
RESYNC_STATE = prom.Gauge("felix_resync_state", "Current datastore state (1 wait-for-ready, 2 resync, 3 in-sync).",
                          registry=REGISTRY)
APPLY_TIME = prom.Summary("felix_int_dataplane_apply_time_seconds", "Time in seconds that it took to apply a "
                          "dataplane update.", registry=REGISTRY)
FAILURES = prom.Counter("felix_int_dataplane_failures", "Number of times dataplane updates failed and will be "
                        "retried.", registry=REGISTRY)
ROUTES = prom.Gauge("felix_route_table_routes", "Routes Felix owns in the main table.", registry=REGISTRY)
_STATE_VALUE = {SyncStatus.WAIT_FOR_DATASTORE: 1, SyncStatus.RESYNC_IN_PROGRESS: 2, SyncStatus.IN_SYNC: 3}


class Felix:
    def __init__(self, be: Backend, cfg: FelixSettings) -> None:
        self.be = be
        self.cfg = cfg
        self.state = calc.ClusterState()
        self.felix_configs: dict[str, api.FelixConfiguration] = {}
        self.dirty = asyncio.Event()
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.ready = False
        self.applies = 0
        self.routes = RouteTable((cfg.interface_prefix,))
        self.vxlan = VXLANDevice(vni=cfg.vxlan_vni, port=cfg.vxlan_port, mtu=cfg.vxlan_mtu)
        self.nat = NATOutgoing()
        self.ipip = IPIPDevice()
        self.problems: list[str] = []  # shown by /readiness; Felix is not ready while there are any
        self.syncer = Syncer(be, [ResourceListOptions(k) for k in
                                  ("IPPool", "Node", "IPAMBlock", "WorkloadEndpoint", "FelixConfiguration")], self)

    # --- syncer callbacks (cheap: record and mark dirty) --------------------------------------

    def on_status(self, status: SyncStatus) -> None:
        self.status = status
        RESYNC_STATE.set(_STATE_VALUE[status])
        log.info("datastore status: %s", status.value)
        self.dirty.set()

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            key, value = u.key, u.kv.value
            tables: dict[str, dict[Any, Any]] = {
                "IPPool": self.state.pools, "Node": self.state.nodes, "IPAMBlock": self.state.blocks,
                "FelixConfiguration": self.felix_configs}
            table = tables.get(key.kind)
            k: Any = key.name
            if key.kind == "WorkloadEndpoint":
                table, k = self.state.endpoints, (key.namespace, key.name)
            if table is None:
                continue
            if value is None:
                table.pop(k, None)
            else:
                table[k] = value
        self.dirty.set()

    # --- the node's own VTEP -----------------------------------------------------------------

    async def ensure_vtep(self) -> None:
        """Give this node its tunnel addresses (IPIP, VXLAN) and VTEP MAC when pools use them,
        as calico-node's tunnel address allocation does."""
        me = self.cfg.hostname
        node = self.state.nodes.get(me)
        if node is None:
            return
        if any(p.spec.ipip != "Never" for p in self.state.pools.values()) and not (
                node.spec.bgp and node.spec.bgp.ipv4_ipip_tunnel_addr):
            ip = await IPAM(self.be).ensure_tunnel_address(me, "ipip")
            log.info("IPIP tunnel address of %s: %s", me, ip)
        wants = any(p.spec.vxlan != "Never" for p in self.state.pools.values())
        if not wants:
            return
        if not node.spec.ipv4_vxlan_tunnel_addr:
            ip = await IPAM(self.be).ensure_tunnel_address(me, "vxlan")
            log.info("VXLAN tunnel address of %s: %s", me, ip)
        if not node.spec.vxlan_tunnel_mac_addr:
            for _ in range(10):
                kv = await self.be.get(ResourceKey("Node", me))
                spec = kv.value.spec.model_copy(update={"vxlan_tunnel_mac_addr": calc.vxlan_mac(me)})
                try:
                    await self.be.update(KVPair(kv.key, kv.value.model_copy(update={"spec": spec}), kv.revision))
                    break
                except Conflict:
                    continue

    # --- apply --------------------------------------------------------------------------------

    def effective(self) -> FelixSettings:
        return settings(default=self.felix_configs.get("default"),
                        node=self.felix_configs.get(f"node.{self.cfg.hostname}")) if self.felix_configs else self.cfg

    def _apply_sync(self, desired: calc.Desired, force_nat: bool) -> None:
        problem = self.ipip.apply(desired.ipip, desired.ipip_address)
        if problem and problem not in self.problems:
            log.error("%s", problem)
        self.problems = [problem] if problem else []
        self.vxlan.apply(desired.vxlan, desired.remote_vteps)
        stats = self.routes.apply(desired.routes)
        self.nat.apply(desired.nat_sources, desired.all_pools, force=force_nat)
        ROUTES.set(len(desired.routes))
        if stats.added or stats.removed:
            log.info("routes: %d programmed, %d removed, %d waiting for their interface", stats.added,
                     stats.removed, stats.pending)

    async def apply_once(self, force_nat: bool = False) -> None:
        await self.ensure_vtep()
        cfg = self.effective()
        desired = calc.calculate(self.state, self.cfg.hostname, interface_prefix=cfg.interface_prefix,
                                 program_cluster_routes=cfg.program_cluster_routes)
        started = time.monotonic()
        await asyncio.to_thread(self._apply_sync, desired, force_nat)
        APPLY_TIME.observe(time.monotonic() - started)
        ACTIVE_LOCAL_ENDPOINTS.set(desired.local_endpoints)
        CLUSTER_NUM_HOSTS.set(len(self.state.nodes))
        self.applies += 1

    async def apply_loop(self) -> None:
        backoff = 0.1
        last_full = time.monotonic()
        while True:
            timeout = max(0.1, self.cfg.route_refresh_interval - (time.monotonic() - last_full))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), timeout)
            resync = time.monotonic() - last_full >= self.cfg.route_refresh_interval
            if self.status is not SyncStatus.IN_SYNC:
                self.dirty.clear()
                continue
            self.dirty.clear()
            try:
                await self.apply_once(force_nat=resync)
                backoff = 0.1
                if resync:
                    last_full = time.monotonic()
                if not self.ready:
                    self.ready = True
                    log.info("first in-sync apply done; ready")
            except (OSError, RuntimeError, CalicoError, NotFound) as exc:
                FAILURES.inc()
                log.warning("dataplane apply failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self.dirty.set()
            except Exception as exc:  # a netlink error of a kind we did not foresee: retry, loudly
                FAILURES.inc()
                log.exception("dataplane apply failed unexpectedly: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                self.dirty.set()

    # --- health ---------------------------------------------------------------------------------

    async def serve_health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace")
            path = line.split(" ")[1] if len(line.split(" ")) > 1 else "/"
            ready = self.ready and self.status is SyncStatus.IN_SYNC and not self.problems
            ok = {"/liveness": True, "/readiness": ready}.get(path)
            code = "404 Not Found" if ok is None else ("204 No Content" if ok else "503 Service Unavailable")
            body = "\n".join(self.problems).encode() if path == "/readiness" and not ok else b""
            writer.write(f"HTTP/1.1 {code}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (OSError, TimeoutError, IndexError):
            pass
        finally:
            writer.close()


async def run(cfg: FelixSettings, ds: DatastoreConfig) -> None:
    be = backend.connect(ds)
    felix = Felix(be, cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health = await asyncio.start_server(felix.serve_health, cfg.health_host, cfg.health_port)
    metrics = None
    if cfg.prometheus_metrics_enabled:
        metrics, _ = prom.start_http_server(cfg.prometheus_metrics_port, cfg.prometheus_metrics_host,
                                            registry=REGISTRY)
    log.info("Felix starting on node %s (health %s:%d)", cfg.hostname, cfg.health_host, cfg.health_port)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(felix.syncer.run(), name="syncer"),
                     tg.create_task(felix.apply_loop(), name="apply")]
            await stop.wait()
            log.info("shutting down")
            for t in tasks:
                t.cancel()
    finally:
        health.close()
        await health.wait_closed()
        if metrics is not None:
            metrics.shutdown()
        await be.close()


def main_settings() -> tuple[FelixSettings, DatastoreConfig]:
    import os

    env = dict(os.environ)
    for felix_name, name in (("FELIX_DATASTORETYPE", "DATASTORE_TYPE"), ("FELIX_ETCDENDPOINTS", "ETCD_ENDPOINTS"),
                             ("FELIX_ETCDCAFILE", "ETCD_CA_CERT_FILE"), ("FELIX_ETCDCERTFILE", "ETCD_CERT_FILE"),
                             ("FELIX_ETCDKEYFILE", "ETCD_KEY_FILE")):
        if env.get(felix_name):
            env[name] = env[felix_name]
    return settings(env), from_environment(env)


__all__ = ["Felix", "FelixSettings", "main_settings", "run"]
