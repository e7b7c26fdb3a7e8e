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

Felix runs under the one daemon runner (:mod:`libcalico.daemon`): the
syncer and the apply loop are its roots, so if either ends, Felix exits and is
restarted rather than running half-alive; a signal stops it without touching
the kernel (routes, devices and rules stay as programmed until the next Felix
reconciles them).

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
import time
from typing import Any

import prometheus_client as prom

from felix import calc
from felix.config import FelixSettings, settings
from felix.dataplane.ipip import IPIPDevice
from felix.dataplane.nat import NATOutgoing
from felix.dataplane.routes import RouteTable
from felix.dataplane.vxlan import VXLANDevice
from libcalico import api, backend, daemon
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
HEALTH_NAME = "int_dataplane"  # Calico's name for the dataplane's health reporter
_STATE_VALUE = {SyncStatus.WAIT_FOR_DATASTORE: 1, SyncStatus.RESYNC_IN_PROGRESS: 2, SyncStatus.IN_SYNC: 3}


class Felix:
    def __init__(self, be: Backend, cfg: FelixSettings, *, health: daemon.Health | None = None) -> None:
        self.be = be
        self.cfg = cfg
        self.health = health or daemon.Health()
        self.health.register(HEALTH_NAME)
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
        self.report_health()
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
                self.report_health()
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

    def report_health(self) -> None:
        """Ready after the first in-sync apply, while in sync and while nothing configured is impossible."""
        ready = self.ready and self.status is SyncStatus.IN_SYNC and not self.problems
        detail = "\n".join(self.problems) if self.problems else (
            "" if ready else f"datastore {self.status.value}" if self.status is not SyncStatus.IN_SYNC
            else "waiting for the first apply")
        self.health.report(HEALTH_NAME, ready=ready, detail=detail)


def build(cfg: FelixSettings, ds: DatastoreConfig) -> daemon.Daemon:
    """Felix under the one daemon runner: the syncer and the apply loop are its roots."""
    d = daemon.Daemon("felix")
    be = backend.connect(ds)
    felix = Felix(be, cfg, health=d.health)
    d.root("syncer", felix.syncer.run)
    d.root("apply", felix.apply_loop)
    d.cleanup("datastore", be.close)
    d.serve_health(cfg.health_host, cfg.health_port)
    if cfg.prometheus_metrics_enabled:
        d.serve_metrics(cfg.prometheus_metrics_host, cfg.prometheus_metrics_port, REGISTRY)
    log.info("Felix starting on node %s (health %s:%d)", cfg.hostname, cfg.health_host, cfg.health_port)
    return d


def main_settings() -> tuple[FelixSettings, DatastoreConfig]:
    import os

    env = dict(os.environ)
    for felix_name, name in (("FELIX_DATASTORETYPE", "DATASTORE_TYPE"), ("FELIX_ETCDENDPOINTS", "ETCD_ENDPOINTS"),
                             ("FELIX_ETCDCAFILE", "ETCD_CA_CERT_FILE"), ("FELIX_ETCDCERTFILE", "ETCD_CERT_FILE"),
                             ("FELIX_ETCDKEYFILE", "ETCD_KEY_FILE")):
        if env.get(felix_name):
            env[name] = env[felix_name]
    return settings(env), from_environment(env)


__all__ = ["Felix", "FelixSettings", "build", "main_settings"]
