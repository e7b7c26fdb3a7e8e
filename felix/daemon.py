"""The Felix daemon: syncer -> calculation graph -> dataplane managers, with health, metrics and resync.

Shape (``felix/calc/calc_graph.go``, ``felix/dataplane/linux/int_dataplane.go``):
each syncer update goes, by kind, through the calculation graph
(:mod:`felix.graph`), which emits only what changed (a route, an IP set member,
an active policy, an endpoint's chains); the messages queue up, cheaply. The
apply loop hands them to the managers (:mod:`felix.dataplane.manager`) and runs
every manager, in one fixed order, only when the datastore is in sync:
tunnels, routes, then the nftables managers and the one transaction on the
``ip calico`` table. A manager that fails is retried with backoff and resyncs
(reads the kernel back); the others still program. Every
``routeRefreshInterval`` a full resync repairs drift.

The managers run in a worker thread, outside the event loop; the graph runs on
the loop as updates arrive, so an apply's cost follows the size of the change.

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
from dataclasses import dataclass
from typing import Any

import prometheus_client as prom

from felix import calc, graph, messages
from felix.config import FelixSettings, settings
from felix.dataplane import manager, nft
from felix.dataplane.ipip import IPIPDevice
from felix.dataplane.routes import RouteTable
from felix.dataplane.vxlan import VXLANDevice
from libcalico import api, backend, daemon, metrics, syncers, typha_client
from libcalico.backend.api import Backend
from libcalico.backend.config import DatastoreConfig, from_environment
from libcalico.errors import CalicoError, Conflict, NotFound
from libcalico.ipam import IPAM
from libcalico.model import KVPair, ResourceKey
from libcalico.watching import SyncStatus, Update

log = logging.getLogger("felix")

REGISTRY = prom.CollectorRegistry()
ACTIVE_LOCAL_ENDPOINTS = prom.Gauge("felix_active_local_endpoints", "Number of active endpoints on this host.",
                                    registry=REGISTRY)
CLUSTER_NUM_HOSTS = prom.Gauge("felix_cluster_num_hosts", "Total number of Calico hosts in the cluster.",
                               registry=REGISTRY)
RESYNC_STATE = prom.Gauge("felix_resync_state", "Current datastore state (1 wait-for-ready, 2 resync, 3 in-sync).",
                          registry=REGISTRY)
APPLY_TIME = metrics.Summary("felix_int_dataplane_apply_time_seconds", "Time in seconds that it took to apply a "
                          "dataplane update.", registry=REGISTRY)
# A counter exposed under Calico's name (libcalico.metrics: no "_total" added).
FAILURES = metrics.counter("felix_int_dataplane_failures", "Number of times dataplane updates failed and will be "
                           "retried.", registry=REGISTRY)
ROUTES = prom.Gauge("felix_route_table_routes", "Routes Felix owns in the main table.", registry=REGISTRY)
ACTIVE_LOCAL_POLICIES = prom.Gauge("felix_active_local_policies", "Number of active policies on this host.",
                                   registry=REGISTRY)
ACTIVE_LOCAL_SELECTORS = prom.Gauge("felix_active_local_selectors", "Number of active selectors on this host.",
                                    registry=REGISTRY)
IPSETS_CALICO = prom.Gauge("felix_ipsets_calico", "Number of active Calico IP sets.", registry=REGISTRY)
CLUSTER_NUM_POLICIES = prom.Gauge("felix_cluster_num_policies", "Total number of policies cluster-wide.",
                                  registry=REGISTRY)
CLUSTER_NUM_PROFILES = prom.Gauge("felix_cluster_num_profiles", "Total number of profiles cluster-wide.",
                                  registry=REGISTRY)
CLUSTER_NUM_TIERS = prom.Gauge("felix_cluster_num_tiers", "Total number of tiers cluster-wide.", registry=REGISTRY)
CLUSTER_NUM_WEPS = prom.Gauge("felix_cluster_num_workload_endpoints",
                              "Total number of workload endpoints cluster-wide.", registry=REGISTRY)
CLUSTER_NUM_HEPS = prom.Gauge("felix_cluster_num_host_endpoints", "Total number of host endpoints cluster-wide.",
                              registry=REGISTRY)
HEALTH_NAME = "int_dataplane"  # Calico's name for the dataplane's health reporter
_STATE_VALUE = {SyncStatus.WAIT_FOR_DATASTORE: 1, SyncStatus.RESYNC_IN_PROGRESS: 2, SyncStatus.IN_SYNC: 3}


# The kinds Felix follows (Calico's felixsyncer): routes and tunnels, then policy.
@dataclass
class Handles:
    """The kernel handles Felix's managers use; tests pass fakes."""

    nft: nft.NftHandle | None = None
    route_table: RouteTable | None = None
    vxlan: VXLANDevice | None = None
    ipip: IPIPDevice | None = None


class Felix:
    def __init__(self, be: Backend, cfg: FelixSettings, *, health: daemon.Health | None = None,
                 handles: Handles | None = None) -> None:
        self.be = be
        self.cfg = cfg
        self.health = health or daemon.Health()
        self.health.register(HEALTH_NAME)
        self.felix_configs: dict[str, api.FelixConfiguration] = {}
        self.nodes: dict[str, api.Node] = {}
        self.pools: dict[str, api.IPPool] = {}
        self.counts: dict[type[api.Resource], set[tuple[str, str]]] = {}
        self.dirty = asyncio.Event()
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.ready = False
        self.applies = 0
        self.pending: list[messages.Message] = []
        self.graph = graph.CalcGraph(cfg.hostname, self.pending.append, interface_prefix=cfg.interface_prefix,
                                     program_cluster_routes=cfg.program_cluster_routes)
        h = handles or Handles()
        self.ipip = h.ipip or IPIPDevice()
        self.dataplane, self.table, self.managers = manager.build(
            nft_handle=h.nft or nft.default_handle(),
            route_table=h.route_table or RouteTable((cfg.interface_prefix,)),
            vxlan=h.vxlan or VXLANDevice(vni=cfg.vxlan_vni, port=cfg.vxlan_port, mtu=cfg.vxlan_mtu),
            ipip=self.ipip, interface_prefix=cfg.interface_prefix, legacy_cleanup=handles is None,
            ipv6=cfg.ipv6_support)
        self.dataplane.on_failure = lambda name, exc: FAILURES.inc()
        self.problems: list[str] = []  # shown by /readiness; Felix is not ready while there are any
        self.syncer = typha_client.syncer_for(syncers.felix(), be, self, hostname=cfg.hostname, info="felix",
                                              prefixes=typha_client.FELIX_PREFIXES)

    # --- syncer callbacks (cheap: calculate the change and mark dirty) -------------------------

    def on_status(self, status: SyncStatus) -> None:
        self.status = status
        RESYNC_STATE.set(_STATE_VALUE[status])
        log.info("datastore status: %s", status.value)
        self.report_health()
        self.dirty.set()

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            key, value = u.key, u.kv.value
            kind = key.kind
            if kind == api.FelixConfiguration.KIND:
                if value is None:
                    self.felix_configs.pop(key.name, None)
                else:
                    self.felix_configs[key.name] = value
                self._configure()
                continue
            if kind == api.Node.KIND:
                _set(self.nodes, key.name, value)
            elif kind == api.IPPool.KIND:
                _set(self.pools, key.name, value)
            members = self.counts.setdefault(key.resource_class, set())
            if value is None:
                members.discard((key.namespace, key.name))
            else:
                members.add((key.namespace, key.name))
            self.graph.on_update(kind, key.namespace, key.name, value)
        self.dirty.set()

    def _configure(self) -> None:
        cfg = self.effective()
        self.graph.routes.configure(interface_prefix=cfg.interface_prefix,
                                    program_cluster_routes=cfg.program_cluster_routes)

    # --- the node's own VTEP -----------------------------------------------------------------

    async def ensure_vtep(self) -> None:
        """Give this node its tunnel addresses (IPIP, VXLAN) and VTEP MAC when pools use them,
        as calico-node's tunnel address allocation does."""
        me = self.cfg.hostname
        node = self.nodes.get(me)
        if node is None:
            return
        if any(p.spec.ipip != "Never" for p in self.pools.values()) and not (
                node.spec.bgp and node.spec.bgp.ipv4_ipip_tunnel_addr):
            ip = await IPAM(self.be).ensure_tunnel_address(me, "ipip")
            log.info("IPIP tunnel address of %s: %s", me, ip)
        wants = any(p.spec.vxlan != "Never" for p in self.pools.values())
        if not wants:
            return
        if not node.spec.ipv4_vxlan_tunnel_addr:
            ip = await IPAM(self.be).ensure_tunnel_address(me, "vxlan")
            log.info("VXLAN tunnel address of %s: %s", me, ip)
        if not node.spec.vxlan_tunnel_mac_addr:
            for _ in range(10):
                kv = await self.be.get(ResourceKey(api.Node, me))
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

    def _apply_sync(self, msgs: list[messages.Message], resync: bool) -> list[str]:
        for m in msgs:
            self.dataplane.on_update(m)
        if resync:
            self.dataplane.resync()
        failed = self.dataplane.apply()
        problem = self.managers["ipip"].problem  # type: ignore[attr-defined]
        if problem and problem not in self.problems:
            log.error("%s", problem)
        self.problems = [problem] if problem else []
        return failed

    async def apply_once(self, resync: bool = False) -> list[str]:
        """Hand the queued changes to the managers and run them all; return the managers that failed."""
        await self.ensure_vtep()
        msgs, self.pending[:] = list(self.pending), []
        started = time.monotonic()
        failed = await asyncio.to_thread(self._apply_sync, msgs, resync)
        APPLY_TIME.observe(time.monotonic() - started)
        self._metrics()
        self.applies += 1
        return failed

    def _metrics(self) -> None:
        ACTIVE_LOCAL_ENDPOINTS.set(len(self.graph.policy.endpoints_sent) or self.graph.routes.local_endpoints)
        ACTIVE_LOCAL_POLICIES.set(self.graph.policy.active_policies)
        ACTIVE_LOCAL_SELECTORS.set(self.graph.policy.active_selectors)
        IPSETS_CALICO.set(len(self.graph.policy.sets))
        CLUSTER_NUM_HOSTS.set(len(self.nodes))
        CLUSTER_NUM_POLICIES.set(len(self.counts.get(api.NetworkPolicy, ())) + len(self.counts.get(
            api.GlobalNetworkPolicy, ())))
        CLUSTER_NUM_PROFILES.set(len(self.counts.get(api.Profile, ())))
        CLUSTER_NUM_TIERS.set(len(self.counts.get(api.Tier, ())))
        CLUSTER_NUM_WEPS.set(len(self.counts.get(api.WorkloadEndpoint, ())))
        CLUSTER_NUM_HEPS.set(len(self.counts.get(api.HostEndpoint, ())))
        ROUTES.set(len(self.graph.routes.routes))

    async def apply_loop(self) -> None:
        last_full = time.monotonic()
        first = True
        while True:
            timeout = max(0.05, self.cfg.route_refresh_interval - (time.monotonic() - last_full))
            retry = self.dataplane.next_retry()
            if retry is not None:
                timeout = min(timeout, max(0.05, retry))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), timeout)
            self.dirty.clear()
            if self.status is not SyncStatus.IN_SYNC:
                continue
            resync = first or time.monotonic() - last_full >= self.cfg.route_refresh_interval
            try:
                failed = await self.apply_once(resync=resync)
            except (OSError, RuntimeError, CalicoError, NotFound) as exc:
                # Only the VTEP allocation can end up here (the managers isolate their own failures).
                FAILURES.inc()
                log.warning("tunnel address allocation failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                self.dirty.set()
                continue
            if resync:
                last_full = time.monotonic()
                first = False
            if not failed and not self.ready:
                self.ready = True
                log.info("first in-sync apply done; ready")
            self.report_health()

    # --- health ---------------------------------------------------------------------------------

    def report_health(self) -> None:
        """Ready after the first in-sync apply, while in sync and while nothing configured is impossible."""
        ready = self.ready and self.status is SyncStatus.IN_SYNC and not self.problems
        detail = "\n".join(self.problems) if self.problems else (
            "" if ready else f"datastore {self.status.value}" if self.status is not SyncStatus.IN_SYNC
            else "waiting for the first apply")
        self.health.report(HEALTH_NAME, ready=ready, detail=detail)


def _set(table: dict[str, Any], name: str, value: Any) -> None:
    if value is None:
        table.pop(name, None)
    else:
        table[name] = value


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
