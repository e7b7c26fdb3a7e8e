"""Automatic host endpoints: one ``<node>-auto-hep`` per Calico Node, as Calico's kube-controllers makes them.

As ``kube-controllers/pkg/controllers/node/hostendpoints.go``: when the
KubeControllersConfiguration says ``node.hostEndpoint.autoCreate: Enabled``,
every Calico Node gets a HostEndpoint named ``<node>-auto-hep`` (hashed when
longer than 253 characters) with the node's labels plus
``projectcalico.org/created-by: calico-kube-controllers``, ``spec.node``,
``interfaceName: "*"`` (all of the host's interfaces), the node's addresses as
``expectedIPs`` (:func:`expected_ips` keeps Calico's order) and the profile
``projectcalico-default-allow``, so traffic keeps flowing until a policy selects
the endpoint. Templates (``hostEndpoint.templates``) add one more endpoint per
matching template, with the node addresses inside its ``interfaceCIDRs``.

The controller follows Calico Nodes and HostEndpoints with the one syncer
(:class:`libcalico.watching.Syncer`), as Calico's follows them through its
data feed: the callbacks only update the caches and put keys on the work
queue (``hostendpoints`` once in sync, ``hostendpoints/<node>`` when a node or
one of its automatic endpoints changes); the reconcilers compare what each
node should have with what it has and write the difference. A HostEndpoint is
the controller's own only when it carries the ``created-by`` label
(``isAutoHostEndpoint``): those of a node that is gone, or all of them when
``autoCreate`` is turned off, are deleted; no other HostEndpoint is touched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable

from libcalico import api
from libcalico import client as calico_client
from libcalico.api import kubecontrollers as kcc
from libcalico.backend.static import DEFAULT_ALLOW_PROFILE_NAME
from libcalico.errors import AlreadyExists, NotFound
from libcalico.model import ResourceListOptions
from libcalico.selector import SelectorError, parse
from libcalico.watching import SyncStatus, Update, UpdateType

log = logging.getLogger(__name__)

HOST_ENDPOINT_NAME_SUFFIX = "auto-hep"
DEFAULT_HOST_ENDPOINT_INTERFACE = "*"
CREATED_BY_LABEL = "projectcalico.org/created-by"
CREATED_BY_VALUE = "calico-kube-controllers"
DNS1123_SUBDOMAIN_MAX = 253
KEY_HOST_ENDPOINTS = "hostendpoints"
HOST_ENDPOINTS_PREFIX = "hostendpoints/"
SYNC_PERIOD = 300.0   # controller.go ``timer``: the periodic full HostEndpoint sync, 5 minutes
SYNCER_TYPES = (ResourceListOptions(api.Node), ResourceListOptions(api.HostEndpoint))


def is_auto_host_endpoint(hep: api.HostEndpoint) -> bool:
    """``isAutoHostEndpoint``: made (and so owned) by this controller."""
    return hep.metadata.labels.get(CREATED_BY_LABEL) == CREATED_BY_VALUE


def _hash_name_if_too_long(name: str) -> str:
    """``hashNameIfTooLong``: a name past the DNS-1123 subdomain limit becomes its hash."""
    if len(name) <= DNS1123_SUBDOMAIN_MAX:
        return name
    digest = base64.urlsafe_b64encode(hashlib.sha256(name.encode()).digest()).decode().rstrip("=")
    digest = re.sub(r"[-_.]", "", digest)
    return f"{digest}-{HOST_ENDPOINT_NAME_SUFFIX}".lower()[:DNS1123_SUBDOMAIN_MAX]


def auto_host_endpoint_name(node: str, template: str = "") -> str:
    """``generateAutoHostEndpointName`` (no interface part: templates by pattern are not supported)."""
    if not template:
        return _hash_name_if_too_long(f"{node}-{HOST_ENDPOINT_NAME_SUFFIX}")
    return _hash_name_if_too_long(f"{node}-{template}-{HOST_ENDPOINT_NAME_SUFFIX}")


def _ip_of(cidr_or_ip: str) -> str:
    return str(ipaddress.ip_interface(cidr_or_ip).ip)


def _valid(text: str) -> bool:
    try:
        ipaddress.ip_interface(text)
    except ValueError:
        return False
    return True


def expected_ips(node: api.Node) -> list[str]:
    """``getExpectedIPs``: BGP v4 and v6 (without prefix), the IPIP tunnel, VXLAN v4 and v6, the
    WireGuard v4 and v6 addresses, then the InternalIP addresses not seen yet; unparseable ones dropped."""
    spec = node.spec
    ips: list[str] = []
    if spec.bgp is not None:
        if spec.bgp.ipv4_address:
            ips.append(_ip_of(spec.bgp.ipv4_address))
        if spec.bgp.ipv6_address:
            ips.append(_ip_of(spec.bgp.ipv6_address))
        if spec.bgp.ipv4_ipip_tunnel_addr:
            ips.append(spec.bgp.ipv4_ipip_tunnel_addr)
    if spec.ipv4_vxlan_tunnel_addr:
        ips.append(spec.ipv4_vxlan_tunnel_addr)
    if spec.ipv6_vxlan_tunnel_addr:
        ips.append(spec.ipv6_vxlan_tunnel_addr)
    if spec.wireguard is not None and spec.wireguard.interface_ipv4_address:
        ips.append(spec.wireguard.interface_ipv4_address)
    if spec.wireguard is not None and spec.wireguard.interface_ipv6_address:
        ips.append(spec.wireguard.interface_ipv6_address)
    seen = set(ips)
    for addr in spec.addresses:
        if addr.type == "InternalIP" and addr.address not in seen:
            seen.add(addr.address)
            ips.append(addr.address)
    out = []
    for ip in ips:
        if _valid(ip):
            out.append(ip)
        else:
            log.error("failed to parse ip %s, removing from expectedIPs", ip)
    return out


def _in_cidrs(ips: Iterable[str], cidrs: Iterable[str]) -> list[str]:
    """``getExpectedIPsMatchingInterfaceCIDRs``."""
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    out = []
    for text in ips:
        ip = ipaddress.ip_interface(text).ip
        if any(ip.version == n.version and ip in n for n in nets):
            out.append(str(ip))
    return out


def auto_host_endpoint(node: api.Node, *, name: str, ips: list[str], interface: str,
                       labels: dict[str, str] | None = None,
                       annotations: dict[str, str] | None = None) -> api.HostEndpoint:
    """``generateAutoHostEndpoint``: the node's labels (template labels over them), the created-by label."""
    hep_labels = dict(node.metadata.labels)
    for k, v in (labels or {}).items():
        if k in hep_labels:
            log.warning("overwriting label from underlying Node resource (key %s, node %s, template %s)",
                        k, hep_labels[k], v)
        hep_labels[k] = v
    hep_labels[CREATED_BY_LABEL] = CREATED_BY_VALUE
    return api.HostEndpoint.model_validate({
        "metadata": {"name": name, "labels": hep_labels, "annotations": dict(annotations or {})},
        "spec": {"node": node.name, "expectedIPs": ips, "profiles": [DEFAULT_ALLOW_PROFILE_NAME],
                 "interfaceName": interface}})


def needs_update(current: api.HostEndpoint, expected: api.HostEndpoint) -> bool:
    """``hostEndpointNeedsUpdate``: labels, annotations, expectedIPs, interfaceName."""
    return (dict(current.metadata.labels) != dict(expected.metadata.labels)
            or dict(current.metadata.annotations) != dict(expected.metadata.annotations)
            or list(current.spec.expected_ips) != list(expected.spec.expected_ips)
            or current.spec.interface_name != expected.spec.interface_name)


def wanted_host_endpoints(node: api.Node, *, default: bool,
                          templates: Iterable[kcc.Template]) -> list[api.HostEndpoint]:
    """Every automatic HostEndpoint ``node`` should have (``syncHostEndpointsForNode``'s plan)."""
    out = []
    if default:
        out.append(auto_host_endpoint(node, name=auto_host_endpoint_name(node.name), ips=expected_ips(node),
                                      interface=DEFAULT_HOST_ENDPOINT_INTERFACE))
    for t in templates:
        gen = t.generate_name or ""
        try:
            matches = parse(t.node_selector or "").evaluate(node.metadata.labels)
        except SelectorError as exc:
            log.error("failed to parse node selector, skipping host endpoint creation for %s template: %s", gen, exc)
            return out
        if not matches:
            continue
        if t.interface_pattern:
            log.warning("template %s: interfacePattern is not supported (Calico Nodes here carry no interfaces);"
                        " skipped", gen)
            continue
        ips = _in_cidrs(expected_ips(node), t.interface_cidrs or ())
        if not ips:
            log.debug("template InterfaceCIDRs do not match any Node IPs (template %s, node %s)", gen, node.name)
            continue
        out.append(auto_host_endpoint(node, name=auto_host_endpoint_name(node.name, gen), ips=ips, interface="",
                                      labels=t.labels, annotations=t.annotations))
    return out


class AutoHostEndpoints:
    """The caches the syncer keeps and the reconcilers the work queue runs (see the module docstring)."""

    def __init__(self, *, calico: calico_client.Client, enqueue: Callable[[str], None], auto_create: bool,
                 create_default: bool = True, templates: Iterable[kcc.Template] = ()) -> None:
        self.calico = calico
        self.enqueue = enqueue
        self.auto_create = auto_create
        self.create_default = create_default
        self.templates = list(templates)
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.nodes: dict[str, api.Node] = {}
        self.owned: dict[str, api.HostEndpoint] = {}   # the automatic ones, by name
        self._lock = asyncio.Lock()                    # one reconcile writes at a time

    # --- syncer callbacks: cheap, only caches and keys ------------------------------------

    def on_status(self, status: SyncStatus) -> None:
        self.status = status
        if status is SyncStatus.IN_SYNC:
            log.info("Syncer is InSync, kicking sync channel")
            self.enqueue(KEY_HOST_ENDPOINTS)

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            in_sync = self.status is SyncStatus.IN_SYNC
            if u.key.kind == api.Node.KIND:
                if u.type is UpdateType.DELETED or u.kv.value is None:
                    self.nodes.pop(u.key.name, None)
                else:
                    assert isinstance(u.kv.value, api.Node)
                    self.nodes[u.key.name] = u.kv.value
                if in_sync:
                    self.enqueue(HOST_ENDPOINTS_PREFIX + u.key.name)
            elif u.key.kind == api.HostEndpoint.KIND:
                old = self.owned.get(u.key.name)
                hep = u.kv.value
                if u.type is UpdateType.DELETED or hep is None:
                    self.owned.pop(u.key.name, None)
                    if old is not None and in_sync:   # deleted by someone else: put it back
                        self.enqueue(HOST_ENDPOINTS_PREFIX + old.spec.node)
                    continue
                assert isinstance(hep, api.HostEndpoint)
                if is_auto_host_endpoint(hep):
                    self.owned[hep.name] = hep
                    if old is not None and in_sync and needs_update(old, hep):  # changed by someone else
                        self.enqueue(HOST_ENDPOINTS_PREFIX + hep.spec.node)

    # --- reconcilers -------------------------------------------------------------------------

    async def full_sync(self) -> None:
        """``syncHostEndpoints``: every node's, and those of nodes that are gone."""
        if self.status is not SyncStatus.IN_SYNC:
            return
        log.info("Syncing all HostEndpoints")
        async with self._lock:
            if not self.auto_create:
                for name in sorted(self.owned):
                    await self._delete(name)
                return
            for node in sorted({h.spec.node for h in self.owned.values()} - set(self.nodes)):
                await self._sync_node(node)
            for node in sorted(self.nodes):
                await self._sync_node(node)

    async def node(self, name: str) -> None:
        """``syncHostEndpointsForNode``."""
        if self.status is not SyncStatus.IN_SYNC:
            return
        async with self._lock:
            await self._sync_node(name)

    async def _sync_node(self, name: str) -> None:
        node = self.nodes.get(name)
        wanted = [] if node is None or not self.auto_create else \
            wanted_host_endpoints(node, default=self.create_default, templates=self.templates)
        for hep in wanted:
            await self._create_or_update(hep)
        keep = {h.name for h in wanted}
        for stale in sorted(n for n, h in self.owned.items() if h.spec.node == name and n not in keep):
            log.info("hostEndpoint %s no longer matches template", stale)
            await self._delete(stale)

    async def _create_or_update(self, expected: api.HostEndpoint) -> None:
        current = self.owned.get(expected.name)
        if current is None:
            try:
                stored = await self.calico.create(expected)
            except AlreadyExists as exc:   # not ours (no created-by label): left alone, as Calico does
                log.warning("could not create hostendpoint for node: %s", exc)
                return
            assert isinstance(stored, api.HostEndpoint)
            log.info("created hostendpoint %s", stored.name)
            self.owned[stored.name] = stored
            return
        if not needs_update(current, expected):
            return
        meta = expected.metadata.model_copy(update={"resource_version": current.metadata.resource_version})
        stored = await self.calico.update(expected.model_copy(update={"metadata": meta}))
        assert isinstance(stored, api.HostEndpoint)
        log.info("updated hostendpoint %s", stored.name)
        self.owned[stored.name] = stored

    async def _delete(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self.calico.delete(api.HostEndpoint, name)
            log.info("deleted hostendpoint %s", name)
        self.owned.pop(name, None)


__all__ = ["AutoHostEndpoints", "CREATED_BY_LABEL", "CREATED_BY_VALUE", "HOST_ENDPOINTS_PREFIX",
           "KEY_HOST_ENDPOINTS", "SYNCER_TYPES", "SYNC_PERIOD", "auto_host_endpoint", "auto_host_endpoint_name", "expected_ips",
           "is_auto_host_endpoint", "needs_update", "wanted_host_endpoints"]
