"""IPAM garbage collection: leaked addresses and the affinities of deleted nodes, with Calico's rules.

Calico's node controller (kube-controllers/pkg/controllers/node/ipam.go,
``syncIPAM``) decides per allocation, and carries what it learnt from one sync to
the next:

* An allocation is **valid** while its pod exists on the allocation's node and
  holds that address (or has not reported an address yet); a tunnel address is
  valid while its node exists; an allocation with no pod attributes, or from an
  unknown source, is never touched (and keeps its node's blocks).
* An invalid allocation on a node that still exists is a **candidate** (pod gone,
  moved to another node, evicted, or no longer holding that address). It is
  **confirmed** once it stayed a candidate for ``leakGracePeriod``; with a
  period of 0 candidates are never confirmed (GC disabled). When the node is
  gone as well, the leak is confirmed at once.
* Before a confirmed leak is released, the pod is **re-read from the live API**
  (not the list this sync started with), unless its node is gone; and the
  address goes only when **every address under its handle** is a confirmed leak,
  so a pod with two addresses is released whole or not at all.
* A node gone from Kubernetes with no valid allocation left has its tunnel
  addresses released and its **block affinities** dropped.

Releasing is libcalico's IPAM (:meth:`libcalico.ipam.IPAM.release_by_handle`,
:meth:`~libcalico.ipam.IPAM.release_host_affinities`): compare-and-swap writes,
nothing re-implemented here. The log lines are Calico's.

The ``ipam_*`` metrics (:class:`IPAMMetrics`) are computed from the same scan,
with Calico's names, help texts and labels (``ippool``, ``node``).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import prometheus_client.core as prom_core
import prometheus_client.registry as prom_registry
import prometheus_client.samples as prom_samples

from libcalico import api, ipam
from libcalico.backend.api import Backend
from libcalico.backend.kubernetes import conversion
from libcalico.model import ResourceListOptions

from controller.kube import JSON, KubeClient

log = logging.getLogger(__name__)

UNKNOWN_NODE = "unknown_node"     # Calico's unknownNodeLabel
NO_AFFINITY = "no_affinity"
TUNNEL_TYPES = frozenset({ipam.IPIP_TUNNEL_TYPE, ipam.VXLAN_TUNNEL_TYPE, "vxlanV6TunnelAddress",
                          "wireguardTunnelAddress", "wireguardV6TunnelAddress"})


@dataclass
class Allocation:
    """One allocated address and what the GC knows of it across syncs."""

    ip: str
    handle: str
    attrs: dict[str, str]
    block: str
    knode: str = ""                  # the Kubernetes node, "" when it is gone
    leaked_at: float | None = None
    confirmed: bool = False

    @property
    def id(self) -> str:
        return f"{self.handle}/{self.ip}"

    @property
    def node(self) -> str:
        return self.attrs.get(ipam.ATTR_NODE, "")

    @property
    def is_pod(self) -> bool:
        return bool(self.attrs.get(ipam.ATTR_NAMESPACE) and self.attrs.get(ipam.ATTR_POD))

    @property
    def is_tunnel(self) -> bool:
        return self.attrs.get(ipam.ATTR_TYPE, "") in TUNNEL_TYPES

    def fields(self) -> str:
        out = f"ip={self.ip} handle={self.handle} node={self.node}"
        if self.is_pod:
            out += f" pod={self.attrs[ipam.ATTR_NAMESPACE]}/{self.attrs[ipam.ATTR_POD]}"
        return out

    def mark_leak(self, grace: float, now: float) -> None:
        if self.leaked_at is None:
            self.leaked_at = now
            log.info("Candidate IP leak %s", self.fields())
        if now - self.leaked_at >= grace and not self.confirmed and grace > 0:
            self.mark_confirmed(now)

    def mark_confirmed(self, now: float) -> None:
        if self.confirmed:
            return
        if self.leaked_at is None:
            log.warning("Confirmed IP leak %s", self.fields())
        else:
            log.warning("Confirmed IP leak after %.3gs %s", now - self.leaked_at, self.fields())
        self.confirmed = True

    def mark_valid(self, now: float) -> None:
        if self.leaked_at is not None:
            log.info("Confirmed valid IP after %.3gs %s", now - self.leaked_at, self.fields())
        self.confirmed = False
        self.leaked_at = None


def allocation_is_valid(a: Allocation, pod: JSON | None) -> bool:
    """Calico's ``allocationIsValid`` given the pod the allocation names (``None``: not found)."""
    if a.is_tunnel:
        return a.knode != ""
    if not a.is_pod:
        log.debug("IP allocation is missing metadata, cannot confirm or deny validity. Assume valid. %s", a.fields())
        return True
    if pod is None:
        return False
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if spec.get("nodeName") and a.knode and spec["nodeName"] != a.knode:
        log.info("Pod rescheduled on new node. Allocation no longer valid old=%s new=%s %s", a.knode,
                 spec["nodeName"], a.fields())
        return False
    if not status.get("podIP") and not status.get("podIPs") and not (pod.get("metadata") or {}).get(
            "annotations", {}).get(conversion.POD_IP):
        log.debug("Pod IP has not yet been reported, consider allocation valid")
        return True
    if status.get("phase") == "Failed" and status.get("reason") == "Evicted":
        log.debug("Pod has failed with Evicted. Allocation no longer valid %s", a.fields())
        return False
    try:
        addrs = {ipaddress.ip_interface(cidr).ip for cidr in conversion.pod_ips(pod)}
        mine = ipaddress.ip_address(a.ip)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("Failed to parse pod into WEP, consider allocation valid. %s: %s", a.fields(), exc)
        return True
    if mine in addrs:
        return True
    log.debug("Allocated IP no longer in-use by pod %s", a.fields())
    return False


# --- metrics ----------------------------------------------------------------------------------

_HELP = {
    "ipam_allocations_in_use": "IPs currently allocated in IPAM to a workload or tunnel endpoint.",
    "ipam_allocations_borrowed": "IPs currently allocated in IPAM to a workload or tunnel endpoint, where the "
                                 "allocation was borrowed from a block affine to another node.",
    "ipam_blocks": "IPAM blocks currently allocated for the IP pool.",
    "ipam_allocations_gc_candidates": "Allocations that are currently marked by the garbage collector as potential "
                                      "candidates to reclaim. Under normal operation, this metric should return to "
                                      "zero after the garbage collector confirms that this allocation can be "
                                      "reclaimed and reclaims it, or the allocation is confirmed as valid.",
    "ipam_allocations_gc_reclamations": "The total allocations that have been reclaimed by the garbage collector "
                                        "over time. Under normal operation, this counter should increase, and "
                                        "increases of this counter should align to a return to zero for the "
                                        "candidate gauge.",
    "ipam_ippool_size": "Total number of addresses in the IP Pool",
    "ipam_allocations_per_node": "Number of IPs allocated",
    "ipam_allocations_borrowed_per_node": "Number of allocated IPs that are from non-affine blocks.",
    "ipam_blocks_per_node": "Number of blocks in IPAM",
}


@dataclass(eq=False)  # a collector is registered by identity
class IPAMMetrics:
    """The numbers of the last scan, exported with Calico's names (a collector, so one registry per controller)."""

    by_pool: dict[str, dict[str, int]] = field(default_factory=dict)  # metric -> 'pool\0node' -> count
    pool_size: dict[str, int] = field(default_factory=dict)
    per_node: dict[str, dict[str, int]] = field(default_factory=dict)            # legacy metric -> node -> n
    reclamations: dict[tuple[str, str], int] = field(default_factory=dict)       # (pool, node) -> total

    def collect(self) -> Iterable[prom_core.Metric]:
        for name in ("ipam_allocations_in_use", "ipam_allocations_borrowed", "ipam_blocks",
                     "ipam_allocations_gc_candidates"):
            g = prom_core.GaugeMetricFamily(name, _HELP[name], labels=["ippool", "node"])
            for key, value in sorted(self.by_pool.get(name, {}).items()):
                pool, node = key.split("\0")
                g.add_metric([pool, node], value)
            yield g
        # Calico's counter is named without _total (client_golang adds none): write the sample as named.
        c = prom_core.Metric("ipam_allocations_gc_reclamations", _HELP["ipam_allocations_gc_reclamations"], "counter")
        for (pool, node), n in sorted(self.reclamations.items()):
            c.samples.append(prom_samples.Sample("ipam_allocations_gc_reclamations", {"ippool": pool, "node": node},
                                                 float(n)))
        yield c
        size = prom_core.GaugeMetricFamily("ipam_ippool_size", _HELP["ipam_ippool_size"], labels=["ippool"])
        for pool, n in sorted(self.pool_size.items()):
            size.add_metric([pool], n)
        yield size
        for name in ("ipam_allocations_per_node", "ipam_allocations_borrowed_per_node", "ipam_blocks_per_node"):
            g = prom_core.GaugeMetricFamily(name, _HELP[name], labels=["node"])
            for node, n in sorted(self.per_node.get(name, {}).items()):
                g.add_metric([node], n)
            yield g

    def register(self, registry: prom_registry.CollectorRegistry) -> None:
        registry.register(self)


def _pool_of(block: str, pools: list[api.IPPool]) -> str:
    net = ipaddress.ip_network(block)
    for p in pools:
        pn = ipaddress.ip_network(p.spec.cidr)
        if net.version == pn.version and net.subnet_of(pn):  # type: ignore[arg-type]
            return p.name
    return ""


# --- the collector ---------------------------------------------------------------------------

@dataclass
class SyncResult:
    released: list[str] = field(default_factory=list)     # addresses freed this sync
    nodes_released: list[str] = field(default_factory=list)
    candidates: int = 0
    requeue_after: float | None = None


class IPAMGarbageCollector:
    """One full scan per :meth:`sync` (Calico's ``syncIPAM``); leak state carried between scans."""

    def __init__(self, *, ipam_: ipam.IPAM, backend: Backend, kube: KubeClient, datastore_type: str,
                 leak_grace_period: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.ipam = ipam_
        self.backend = backend
        self.kube = kube
        self.datastore_type = datastore_type
        self.leak_grace_period = leak_grace_period
        self.clock = clock
        self.tracked: dict[str, Allocation] = {}
        self.metrics = IPAMMetrics()

    async def _kubernetes_nodes_by_calico(self, knodes: set[str]) -> dict[str, str | None]:
        """Calico node -> Kubernetes node ("" when gone; None when the Calico node is not a Kubernetes one)."""
        if self.datastore_type == "kubernetes":
            return {n: n for n in knodes}
        out: dict[str, str | None] = {}
        for kv in (await self.backend.list(ResourceListOptions(api.Node))).items:
            node: api.Node = kv.value
            refs = [r.node_name for r in node.spec.orch_refs if r.orchestrator.lower() == "k8s"]
            out[node.name] = refs[0] if refs else None
        return out

    async def sync(self) -> SyncResult:
        now = self.clock()
        result = SyncResult()
        blocks = await self.ipam.blocks()
        pools = [kv.value for kv in (await self.backend.list(ResourceListOptions(api.IPPool))).items]
        knodes = {n["metadata"]["name"] for n in await self.kube.list_nodes()}
        cnode_map = await self._kubernetes_nodes_by_calico(knodes)
        pods = {((p.get("metadata") or {}).get("namespace", ""), (p.get("metadata") or {}).get("name", "")): p
                for p in await self.kube.list_pods()}

        # The allocations as they are now, keeping what earlier syncs learnt of each.
        current: dict[str, Allocation] = {}
        by_node: dict[str, list[Allocation]] = {}
        affine_nodes: set[str] = set()
        for b in blocks:
            if b.affinity and b.affinity.startswith("host:"):
                affine_nodes.add(b.affinity.removeprefix("host:"))
            for alloc in b.allocations:
                a = Allocation(alloc.ip, alloc.handle_id or "", dict(alloc.attrs), b.cidr)
                old = self.tracked.get(a.id)
                if old is not None:
                    a.leaked_at, a.confirmed = old.leaked_at, old.confirmed
                current[a.id] = a
                by_node.setdefault(a.node, []).append(a)
        self.tracked = current

        nodes_to_release: list[str] = []
        for cnode in sorted(affine_nodes | set(by_node)):
            if not cnode:
                continue
            knode = cnode_map.get(cnode, "")
            if knode is None:
                log.debug("Skipping non-kubernetes node %s", cnode)
                continue
            if cnode not in cnode_map and self.datastore_type != "kubernetes":
                log.info("Calico Node referenced in IPAM data does not exist node=%s", cnode)
            node_exists = bool(knode) and knode in knodes
            can_delete = True
            tunnels: list[Allocation] = []
            for a in by_node.get(cnode, []):
                a.knode = knode if node_exists else ""
                if not a.is_pod and not a.is_tunnel:
                    log.info("IP allocation on node is from an unknown source. Will be unable to cleanup block "
                             "until it is removed. %s", a.fields())
                    can_delete = False
                    continue
                if a.is_tunnel:
                    tunnels.append(a)
                    continue
                pod = pods.get((a.attrs[ipam.ATTR_NAMESPACE], a.attrs[ipam.ATTR_POD]))
                if allocation_is_valid(a, pod):
                    can_delete = False
                    a.mark_valid(now)
                    continue
                if not node_exists:
                    a.mark_confirmed(now)
                elif self.leak_grace_period is not None:
                    a.mark_leak(self.leak_grace_period, now)
            if not node_exists:
                if not can_delete:
                    log.info("Can't cleanup node yet - IPs still in use on this node node=%s", cnode)
                    continue
                for a in tunnels:
                    a.mark_confirmed(now)
                nodes_to_release.append(cnode)

        await self._release_confirmed(pools, pods, now, result)
        if nodes_to_release:
            log.info("Found a batch of nodes to release num=%d", len(nodes_to_release))
        for cnode in nodes_to_release:
            log.info("Cleaning up IPAM affinities for deleted node node=%s", cnode)
            await self.ipam.release_host_affinities(cnode)
            result.nodes_released.append(cnode)
            for key in [k for k in self.metrics.reclamations if k[1] == cnode]:
                del self.metrics.reclamations[key]   # Calico's clearReclaimedIPCountForNode

        # Candidates still waiting out their grace period: come back when the first one ends.
        waits = [a.leaked_at + self.leak_grace_period - now for a in self.tracked.values()
                 if a.leaked_at is not None and not a.confirmed and self.leak_grace_period]
        result.candidates = sum(1 for a in self.tracked.values() if a.leaked_at is not None or a.confirmed)
        if waits:
            result.requeue_after = max(min(waits), 0.0) + 0.01
        self._update_metrics(blocks if not result.released and not result.nodes_released
                             else await self.ipam.blocks(), pools)
        return result

    async def _release_confirmed(self, pools: list[api.IPPool], pods: dict[tuple[str, str], JSON], now: float,
                                 result: SyncResult) -> None:
        by_handle: dict[str, list[Allocation]] = {}
        for a in self.tracked.values():
            by_handle.setdefault(a.handle, []).append(a)
        to_release: dict[str, list[Allocation]] = {}
        for a in list(self.tracked.values()):
            if not a.confirmed or a.handle in to_release:
                continue
            # The last check: the live API unless the node is gone (then the list is trusted, as Calico does).
            pod = None
            if a.is_pod:
                ns_name = (a.attrs[ipam.ATTR_NAMESPACE], a.attrs[ipam.ATTR_POD])
                pod = pods.get(ns_name) if not a.knode else await self.kube.get_pod(*ns_name)
            if not a.is_tunnel and a.is_pod and allocation_is_valid(a, pod):
                log.info("Leaked IP has been resurrected after querying latest state %s", a.fields())
                a.mark_valid(now)
                continue
            if not all(other.confirmed for other in by_handle[a.handle]):
                log.debug("Some IPs with this handle are still valid, skipping %s", a.fields())
                continue
            to_release[a.handle] = by_handle[a.handle]
        if not to_release:
            return
        log.info("Garbage collecting leaked IP addresses num=%d", sum(len(v) for v in to_release.values()))
        for handle, allocs in to_release.items():
            try:
                await self.ipam.release_by_handle(handle)
            except Exception as exc:
                for a in allocs:
                    log.warning("Leaked IP address was not successfully garbage collected %s: %s", a.fields(), exc)
                raise
            for a in allocs:
                log.info("Successfully garbage collected leaked IP address %s", a.fields())
                key = (_pool_of(a.block, pools), a.node or UNKNOWN_NODE)
                self.metrics.reclamations[key] = self.metrics.reclamations.get(key, 0) + 1
                result.released.append(a.ip)
                self.tracked.pop(a.id, None)

    def _update_metrics(self, blocks: list[ipam.BlockUsage], pools: list[api.IPPool]) -> None:
        m = self.metrics
        counts: dict[str, dict[str, int]] = {k: {} for k in ("ipam_allocations_in_use", "ipam_allocations_borrowed",
                                                            "ipam_blocks", "ipam_allocations_gc_candidates")}
        legacy: dict[str, dict[str, int]] = {k: {} for k in ("ipam_allocations_per_node",
                                                            "ipam_allocations_borrowed_per_node",
                                                            "ipam_blocks_per_node")}

        def bump(d: dict[str, int], key: str) -> None:
            d[key] = d.get(key, 0) + 1

        for b in blocks:
            pool = _pool_of(b.cidr, pools)
            affine = b.affinity.removeprefix("host:") if b.affinity and b.affinity.startswith("host:") \
                else NO_AFFINITY
            bump(legacy["ipam_blocks_per_node"], affine)
            if pool:
                bump(counts["ipam_blocks"], f"{pool}\0{affine}")
            for alloc in b.allocations:
                node = alloc.attrs.get(ipam.ATTR_NODE) or UNKNOWN_NODE
                bump(legacy["ipam_allocations_per_node"], node)
                borrowed = node != UNKNOWN_NODE and (b.affinity is None or node != affine)
                if borrowed:
                    bump(legacy["ipam_allocations_borrowed_per_node"], node)
                if not pool:
                    continue
                bump(counts["ipam_allocations_in_use"], f"{pool}\0{node}")
                if borrowed:
                    bump(counts["ipam_allocations_borrowed"], f"{pool}\0{node}")
                t = self.tracked.get(f"{alloc.handle_id or ''}/{alloc.ip}")
                if t is not None and (t.leaked_at is not None or t.confirmed):
                    bump(counts["ipam_allocations_gc_candidates"], f"{pool}\0{node}")
        m.by_pool, m.per_node = counts, legacy
        m.pool_size = {p.name: ipaddress.ip_network(p.spec.cidr).num_addresses for p in pools}


__all__ = ["Allocation", "IPAMGarbageCollector", "IPAMMetrics", "SyncResult", "allocation_is_valid"]
