"""What calicoctl knows about each kind: the names it accepts and its table columns.

Taken from calicoctl's ``resourcemgr`` registrations: the aliases
(``ippool``, ``ippools``, ``ipp``, ``pool`` ...), the default and ``-o wide``
headings in Calico's order, and how each column is computed. One deliberate
difference: ``get ippool -o wide`` prints the columns of the seed document
(Calico v3.25, NAME ... SELECTOR) and not the ASSIGNMENTMODE column that
Calico added later; docs/calicoctl.md says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from calicoctl.printing import go_value
from libcalico import api
from libcalico.api.meta import Resource

Column = Callable[[Resource, "Context"], str]


@dataclass
class Context:
    """Values a column may need beyond the resource (Calico's ``config`` template function)."""

    default_asn: str = "64512"


@dataclass(frozen=True)
class ResourceInfo:
    cls: type[Resource]
    aliases: tuple[str, ...]
    headings: tuple[str, ...]
    wide_headings: tuple[str, ...]
    columns: dict[str, Column]

    @property
    def kind(self) -> str:
        return self.cls.KIND


def _spec(res: Resource) -> Any:
    return getattr(res, "spec")


def _join(items: list[Any]) -> str:
    return ",".join(go_value(i) for i in items)


def _join_map(items: dict[str, str]) -> str:
    """calicoctl's ``join`` of a map: ``k=v`` pairs, sorted by key, comma-separated."""
    return ",".join(f"{k}={v}" for k, v in sorted(items.items()))


def _join_truncate(items: list[str], length: int) -> str:
    """calicoctl's ``joinAndTruncate``: joined, cut to ``length`` with ``...`` at the end."""
    text = ",".join(items)
    return text if len(text) <= length else text[:length - 3] + "..."


def _name(res: Resource, _: Context) -> str:
    return res.metadata.name


def _namespace(res: Resource, _: Context) -> str:
    return res.metadata.namespace


def _node_asn(res: Resource, ctx: Context) -> str:
    bgp = _spec(res).bgp
    if bgp is None:
        return ""
    return str(bgp.as_number) if bgp.as_number is not None else f"({ctx.default_asn})"


def _peer_node(res: Resource, _: Context) -> str:
    spec = _spec(res)
    if spec.node:
        return str(spec.node)
    return str(spec.node_selector) if spec.node_selector else "(global)"


def _col(getter: Callable[[Any], Any]) -> Column:
    return lambda res, _ctx: go_value(getter(_spec(res)))


_INFOS = [
    ResourceInfo(
        api.IPPool, ("ippool", "ippools", "ipp", "ipps", "pool", "pools"),
        ("NAME", "CIDR", "SELECTOR"),
        ("NAME", "CIDR", "NAT", "IPIPMODE", "VXLANMODE", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"),
        {
            "NAME": _name,
            "CIDR": _col(lambda s: s.cidr),
            "NAT": _col(lambda s: s.nat_outgoing),
            "IPIPMODE": _col(lambda s: s.ipip_mode or "Never"),
            "VXLANMODE": _col(lambda s: s.vxlan_mode or "Never"),
            "DISABLED": _col(lambda s: s.disabled),
            "DISABLEBGPEXPORT": _col(lambda s: s.disable_bgp_export),
            "SELECTOR": _col(lambda s: s.node_selector),
            "ASSIGNMENTMODE": _col(lambda s: s.assignment_mode or ""),
        },
    ),
    ResourceInfo(
        api.Node, ("node", "nodes", "no", "nos"),
        ("NAME",), ("NAME", "ASN", "IPV4", "IPV6"),
        {
            "NAME": _name,
            "ASN": _node_asn,
            "IPV4": _col(lambda s: s.bgp.ipv4_address if s.bgp else ""),
            "IPV6": _col(lambda s: s.bgp.ipv6_address if s.bgp else ""),
        },
    ),
    ResourceInfo(
        api.BGPPeer, ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"),
        ("NAME", "PEERIP", "NODE", "ASN"), ("NAME", "PEERIP", "NODE", "ASN"),
        {"NAME": _name, "PEERIP": _col(lambda s: s.peer_ip), "NODE": _peer_node,
         "ASN": _col(lambda s: s.as_number)},
    ),
    ResourceInfo(
        api.BGPConfiguration, ("bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"),
        ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"), ("NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"),
        {
            "NAME": _name,
            "LOGSEVERITY": _col(lambda s: s.log_severity_screen or ""),
            "MESHENABLED": _col(lambda s: s.node_to_node_mesh_enabled if s.node_to_node_mesh_enabled else "-"),
            "ASNUMBER": _col(lambda s: s.as_number if s.as_number else "-"),
        },
    ),
    ResourceInfo(
        api.BGPFilter, ("bgpfilter", "bgpfilters", "bgpf", "bgpfs", "bf", "bfs"),
        ("NAME", "NUMEXPORTV4", "NUMIMPORTV4", "NUMEXPORTV6", "NUMIMPORTV6"),
        ("NAME", "NUMEXPORTV4", "NUMIMPORTV4", "NUMEXPORTV6", "NUMIMPORTV6"),
        {"NAME": _name, "NUMEXPORTV4": _col(lambda s: len(s.export_v4)),
         "NUMIMPORTV4": _col(lambda s: len(s.import_v4)), "NUMEXPORTV6": _col(lambda s: len(s.export_v6)),
         "NUMIMPORTV6": _col(lambda s: len(s.import_v6))},
    ),
    ResourceInfo(
        api.FelixConfiguration, ("felixconfiguration", "felixconfigurations", "felixconfig", "felixconfigs"),
        ("NAME",), ("NAME",), {"NAME": _name},
    ),
    ResourceInfo(
        api.KubeControllersConfiguration,
        ("kubecontrollersconfiguration", "kubecontrollersconfigurations", "kcc", "kccs"),
        ("NAME",), ("NAME",), {"NAME": _name},
    ),
    ResourceInfo(
        api.HostEndpoint, ("hostendpoint", "hostendpoints", "hep", "heps"),
        ("NAME", "NODE"), ("NAME", "NODE", "INTERFACE", "IPS", "PROFILES"),
        {"NAME": _name, "NODE": _col(lambda s: s.node), "INTERFACE": _col(lambda s: s.interface_name),
         "IPS": _col(lambda s: _join(s.expected_ips)), "PROFILES": _col(lambda s: _join(s.profiles))},
    ),
    ResourceInfo(
        api.WorkloadEndpoint, ("workloadendpoint", "workloadendpoints", "wep", "weps"),
        ("WORKLOAD", "NODE", "NETWORKS", "INTERFACE"),
        ("NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"),
        {
            "NAME": _name,
            "NAMESPACE": _namespace,
            "NODE": _col(lambda s: s.node),
            "ORCHESTRATOR": _col(lambda s: s.orchestrator),
            "WORKLOAD": _col(lambda s: s.workload or s.pod),
            "NETWORKS": _col(lambda s: _join(s.ip_networks)),
            "NATS": _col(lambda s: _join([f"{n.internal_ip}:{n.external_ip}" for n in s.ip_nats])),
            "PROFILES": _col(lambda s: _join(s.profiles)),
            "INTERFACE": _col(lambda s: s.interface_name),
        },
    ),
    ResourceInfo(
        api.NetworkPolicy, ("networkpolicy", "networkpolicies", "policy", "np", "policies", "pol", "pols"),
        ("NAME", "TIER"), ("NAME", "TIER", "ORDER", "SELECTOR"),
        {"NAME": _name, "NAMESPACE": _namespace, "ORDER": _col(lambda s: s.order),
         "SELECTOR": _col(lambda s: s.selector), "TIER": _col(lambda s: s.tier)},
    ),
    ResourceInfo(
        api.GlobalNetworkPolicy, ("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"),
        ("NAME", "TIER"), ("NAME", "TIER", "ORDER", "SELECTOR"),
        {"NAME": _name, "ORDER": _col(lambda s: s.order), "SELECTOR": _col(lambda s: s.selector),
         "TIER": _col(lambda s: s.tier)},
    ),
    ResourceInfo(
        api.Tier, ("tier", "tiers"), ("NAME", "ORDER"), ("NAME", "ORDER"),
        {"NAME": _name, "ORDER": _col(lambda s: s.order)},
    ),
    ResourceInfo(
        api.Profile, ("profile", "profiles", "pro", "pros"), ("NAME",), ("NAME", "LABELS"),
        {"NAME": _name, "LABELS": _col(lambda s: _join_map(s.labels_to_apply))},
    ),
    ResourceInfo(
        api.NetworkSet, ("networkset", "networksets", "netsets"), ("NAME",), ("NAME", "NETS"),
        {"NAME": _name, "NAMESPACE": _namespace, "NETS": _col(lambda s: _join_truncate(s.nets, 80))},
    ),
    ResourceInfo(
        api.GlobalNetworkSet, ("globalnetworkset", "globalnetworksets", "gnetsets"), ("NAME",), ("NAME", "NETS"),
        {"NAME": _name, "NETS": _col(lambda s: _join_truncate(s.nets, 80))},
    ),
    ResourceInfo(
        api.ClusterInformation, ("clusterinformation", "clusterinformations", "clusterinfo", "clusterinfos"),
        ("NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"),
        ("NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"),
        {"NAME": _name, "CLUSTERGUID": _col(lambda s: s.cluster_guid), "CLUSTERTYPE": _col(lambda s: s.cluster_type),
         "CALICOVERSION": _col(lambda s: s.calico_version), "DATASTOREREADY": _col(lambda s: s.datastore_ready)},
    ),
]

BY_KIND = {info.kind: info for info in _INFOS}
_BY_ALIAS = {alias: info for info in _INFOS for alias in info.aliases}


def lookup(name: str) -> ResourceInfo | None:
    """The kind for a name typed on the command line (``ippool``, ``pools``, ``IPPool`` ...)."""
    low = name.lower()
    info = _BY_ALIAS.get(low)
    if info is None:
        info = next((i for i in _INFOS if i.kind.lower() == low), None)
    return info
