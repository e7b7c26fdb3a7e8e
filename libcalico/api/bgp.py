"""BGPConfiguration, BGPPeer and BGPFilter: what confd turns into BIRD's configuration.

Field names, enums and rules follow api/pkg/apis/projectcalico/v3
(bgpconfig.go, bgppeer.go, bgpfilter.go) and their CEL rules.
"""

from __future__ import annotations

import re
from pydantic import Field, field_validator, model_validator

from libcalico.api import fields
from libcalico.api.fields import CalicoModel, WireEnum
from libcalico.api.meta import Resource


class SecretKeyRef(CalicoModel):
    name: str
    key: str
    optional: bool | None = None


class BGPPassword(CalicoModel):
    secret_key_ref: SecretKeyRef | None = None


class CIDRBlock(CalicoModel):
    # A service range to advertise: Calico's "net" tag, so no host bits ("omitempty": "" is ignored).
    cidr: fields.Net = ""


class Community(CalicoModel):
    name: str = ""
    value: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v:
            raise ValueError("community name is required")
        return fields.check_name(v)


class PrefixAdvertisement(CalicoModel):
    # Both required, as Calico validates them ("required,net" and "required": a list, maybe empty).
    cidr: fields.Net
    communities: list[str]


class ProgramClusterRoutes(WireEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    ENABLED_IPIP_ONLY = "EnabledIPIPOnly"
    ENABLED_NO_ENCAP_ONLY = "EnabledNoEncapOnly"


class BindMode(WireEnum):
    NONE = "None"
    NODE_IP = "NodeIP"


# BGPConfiguration.logSeverityScreen: Calico's CRD pattern (any case; "" is unset).
_LOG_SEVERITY = re.compile(r"^(?i:Trace|Debug|Info|Warning|Error|Fatal)?\Z")


# Go's regexp: \d is ASCII and $ is the end of the text.
_STANDARD_COMMUNITY = re.compile(r"^([0-9]+):([0-9]+)\Z")
_LARGE_COMMUNITY = re.compile(r"^([0-9]+):([0-9]+):([0-9]+)\Z")
# The ``ignoredInterface`` tag: a BIRD interface pattern, but not "*" (that would ignore them all).
_IGNORED_INTERFACE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}\Z")


def valid_community(value: str) -> bool:
    """A standard community ``aa:nn`` (16-bit parts) or a large one ``aa:nn:mm`` (32-bit)."""
    m = _STANDARD_COMMUNITY.match(value)
    if m:
        return all(int(g) <= 0xFFFF for g in m.groups())
    m = _LARGE_COMMUNITY.match(value)
    if m:
        return all(int(g) <= 0xFFFFFFFF for g in m.groups())
    return False


class BGPConfigurationSpec(CalicoModel):
    log_severity_screen: str = ""
    node_to_node_mesh_enabled: bool | None = None
    as_number: fields.ASNumber | None = Field(default=None, alias="asNumber")
    service_load_balancer_ips: list[CIDRBlock] = Field(default_factory=list, alias="serviceLoadBalancerIPs")
    service_external_ips: list[CIDRBlock] = Field(default_factory=list, alias="serviceExternalIPs")
    service_cluster_ips: list[CIDRBlock] = Field(default_factory=list, alias="serviceClusterIPs")
    service_load_balancer_aggregation: str | None = None
    communities: list[Community] = Field(default_factory=list)
    prefix_advertisements: list[PrefixAdvertisement] = Field(default_factory=list)
    listen_port: int = Field(default=0, ge=0, le=65535)
    node_mesh_password: BGPPassword | None = None
    node_mesh_max_restart_time: fields.Duration | None = None
    bind_mode: BindMode | None = None
    ignored_interfaces: list[str] = Field(default_factory=list)
    local_workload_peering_ipv4: fields.IPv4Addr = Field(default="", alias="localWorkloadPeeringIPV4")
    local_workload_peering_ipv6: fields.IPv6Addr = Field(default="", alias="localWorkloadPeeringIPV6")
    program_cluster_routes: ProgramClusterRoutes | None = None
    ipv4_normal_route_priority: int | None = Field(default=None, ge=1, le=2147483646,
                                                   alias="ipv4NormalRoutePriority")
    ipv6_normal_route_priority: int | None = Field(default=None, ge=1, le=2147483646,
                                                   alias="ipv6NormalRoutePriority")

    @field_validator("log_severity_screen")
    @classmethod
    def _log_severity(cls, v: str) -> str:
        if not _LOG_SEVERITY.match(v):
            raise ValueError("must be one of Trace, Debug, Info, Warning, Error, Fatal (any case)")
        return v

    @field_validator("service_load_balancer_aggregation")
    @classmethod
    def _aggregation(cls, v: str | None) -> str | None:
        if v not in (None, "Enabled", "Disabled"):
            raise ValueError("must be Enabled or Disabled")
        return v

    @model_validator(mode="after")
    def _rules(self) -> BGPConfigurationSpec:
        for i, iface in enumerate(self.ignored_interfaces):
            if iface == "*" or not _IGNORED_INTERFACE.match(iface):
                raise fields.field_error(f"ignoredInterfaces[{i}]", "invalid interface name or pattern (1-15 of "
                                         "a-z A-Z 0-9 _ . - *, and not \"*\" alone)", iface)
        for i, c in enumerate(self.communities):
            if not valid_community(c.value):
                raise fields.field_error(f"communities[{i}].value", "invalid community value or format used.",
                                         c.value)
        defined = {c.name for c in self.communities}
        for i, pa in enumerate(self.prefix_advertisements):
            try:
                fields.parse_cidr_or_ip(pa.cidr)
            except ValueError:
                raise fields.field_error(f"prefixAdvertisements[{i}].cidr", "invalid CIDR value.", pa.cidr) from None
            for used in pa.communities:
                if not valid_community(used) and used not in defined:
                    raise fields.field_error(f"prefixAdvertisements[{i}].communities",
                                             "community used is invalid or not defined.", used)
        if self.communities and not self.prefix_advertisements:
            raise fields.field_error("communities", "communities are defined but not used in prefixAdvertisements")
        if self.node_to_node_mesh_enabled is False:
            if self.node_mesh_password is not None:
                raise fields.field_error("nodeMeshPassword",
                                         "nodeMeshPassword cannot be set when nodeToNodeMeshEnabled is false")
            if self.node_mesh_max_restart_time is not None:
                raise fields.field_error("nodeMeshMaxRestartTime",
                                         "nodeMeshMaxRestartTime cannot be set when nodeToNodeMeshEnabled is false")
        return self


class BGPConfiguration(Resource):
    KIND = "BGPConfiguration"
    PLURAL = "bgpconfigurations"
    spec: BGPConfigurationSpec = Field(default_factory=BGPConfigurationSpec)


def _peer_port(text: str) -> int:
    port = int(text)
    if port > 65535:
        raise ValueError(f"peerIP port {port} is out of range (0-65535)")
    return port


def split_ip_port(text: str) -> tuple[str, int | None]:
    """BGPPeer.peerIP: ``<IP>``, ``<IPv4>:<port>`` or ``[<IPv6>]:<port>``."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not fields.is_decimal(port):
            raise ValueError("peerIP must be <IP>, <IPv4>:<port> or [<IPv6>]:<port>")
        fields.check_ip(host, version=6)
        return host, _peer_port(port)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not fields.is_decimal(port):
            raise ValueError("peerIP must be <IP>, <IPv4>:<port> or [<IPv6>]:<port>")
        fields.check_ip(host, version=4)
        return host, _peer_port(port)
    fields.check_ip(text)
    return text, None


class NextHopMode(WireEnum):
    AUTO = "Auto"
    SELF = "Self"
    KEEP = "Keep"


class BGPPeerSpec(CalicoModel):
    node: str = ""
    node_selector: fields.SelectorText = ""
    peer_ip: str = Field(default="", alias="peerIP")
    as_number: fields.ASNumber = Field(default=0, alias="asNumber")
    local_as_number: fields.ASNumber | None = Field(default=None, alias="localASNumber")
    peer_selector: fields.SelectorText = ""
    keep_original_next_hop: bool = False
    next_hop_mode: NextHopMode | None = None
    password: BGPPassword | None = None
    source_address: str = ""
    max_restart_time: fields.Duration | None = None
    keepalive_time: fields.Duration | None = None
    num_allowed_local_as_numbers: int | None = Field(default=None, ge=0, alias="numAllowedLocalASNumbers")
    ttl_security: int | None = Field(default=None, ge=0, le=255)
    reachable_by: str = ""
    filters: list[str] = Field(default_factory=list)
    local_workload_selector: fields.SelectorText = ""
    reverse_peering: str | None = None

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        return fields.check_name(v) if v else v

    @field_validator("peer_ip")
    @classmethod
    def _peer_ip(cls, v: str) -> str:
        if v:
            split_ip_port(v)
        return v

    @field_validator("reachable_by")
    @classmethod
    def _reachable_by(cls, v: str) -> str:
        return fields.check_ip(v) if v else v

    @field_validator("source_address")
    @classmethod
    def _source_address(cls, v: str) -> str:
        if v not in ("", "UseNodeIP", "None"):
            raise ValueError("sourceAddress must be UseNodeIP or None")
        return v

    @field_validator("filters")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        for name in v:
            fields.check_name(name)
        return v

    @field_validator("reverse_peering")
    @classmethod
    def _reverse_peering(cls, v: str | None) -> str | None:
        if v not in (None, "Auto", "Manual"):
            raise ValueError("reversePeering must be Auto or Manual")
        return v

    @model_validator(mode="after")
    def _rules(self) -> BGPPeerSpec:
        if self.node and self.node_selector:
            raise fields.field_error("nodeSelector", "node and nodeSelector cannot both be set", self.node_selector)
        if self.peer_ip and self.peer_selector:
            raise fields.field_error("peerSelector", "peerIP and peerSelector cannot both be set", self.peer_selector)
        if self.peer_selector and self.as_number:
            raise fields.field_error("asNumber", "asNumber must be empty when peerSelector is set", self.as_number)
        if self.local_workload_selector:
            if self.peer_ip:
                raise fields.field_error("peerIP", "peerIP must be empty when localWorkloadSelector is set",
                                         self.peer_ip)
            if self.peer_selector:
                raise fields.field_error("peerSelector", "peerSelector must be empty when localWorkloadSelector is "
                                         "set", self.peer_selector)
            if not self.as_number:
                raise fields.field_error("asNumber", "asNumber is required when localWorkloadSelector is set", 0)
        if self.reachable_by:
            if not self.peer_ip:
                raise fields.field_error("reachableBy", "reachableBy requires peerIP", self.reachable_by)
            peer_host, _ = split_ip_port(self.peer_ip)
            if fields.parse_cidr_or_ip(peer_host)[0].version != fields.parse_cidr_or_ip(self.reachable_by)[0].version:
                raise fields.field_error("reachableBy", "ReachableBy and PeerIP address family mismatched",
                                         self.reachable_by)
        if self.keep_original_next_hop and self.next_hop_mode not in (None, NextHopMode.KEEP):
            raise fields.field_error("nextHopMode", "keepOriginalNextHop conflicts with nextHopMode",
                                     self.next_hop_mode.value if self.next_hop_mode else None)
        return self


class BGPPeer(Resource):
    KIND = "BGPPeer"
    PLURAL = "bgppeers"
    spec: BGPPeerSpec = Field(default_factory=BGPPeerSpec)


# --- BGPFilter (api/pkg/apis/projectcalico/v3/bgpfilter.go) ------------------------------------

_BGP_FILTER_INTERFACE = re.compile(r"^[a-zA-Z0-9_.*-]{1,15}\Z")
_PRIORITY_MAX = 2147483646


class BGPFilterMatchOperator(WireEnum):
    EQUAL = "Equal"
    NOT_EQUAL = "NotEqual"
    IN = "In"
    NOT_IN = "NotIn"


class BGPFilterAction(WireEnum):
    ACCEPT = "Accept"
    REJECT = "Reject"


class BGPFilterMatchSource(WireEnum):
    REMOTE_PEERS = "RemotePeers"


class BGPFilterPeerType(WireEnum):
    EBGP = "eBGP"
    IBGP = "iBGP"


def check_community_value(value: str) -> str:
    """BGPCommunityValue: ``aa:nn`` (16-bit parts) or ``aa:nn:mm`` (32-bit parts)."""
    if not valid_community(value):
        raise ValueError(f"invalid community value {value!r}: aa:nn (0-65535 each) or aa:nn:mm (0-4294967295 each)")
    return value


class BGPFilterPrefixLengthV4(CalicoModel):
    min: int | None = Field(default=None, ge=0, le=32)
    max: int | None = Field(default=None, ge=0, le=32)


class BGPFilterPrefixLengthV6(CalicoModel):
    min: int | None = Field(default=None, ge=0, le=128)
    max: int | None = Field(default=None, ge=0, le=128)


class BGPFilterCommunityMatch(CalicoModel):
    values: list[str] = Field(min_length=1, max_length=1)

    @field_validator("values")
    @classmethod
    def _values(cls, v: list[str]) -> list[str]:
        return [check_community_value(c) for c in v]


class BGPFilterAddCommunity(CalicoModel):
    value: str

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        return check_community_value(v)


class BGPFilterPrependASPath(CalicoModel):
    prefix: list[fields.ASNumber] = Field(min_length=1, max_length=10)


class BGPFilterSetPriority(CalicoModel):
    value: int = Field(ge=1, le=_PRIORITY_MAX)


class BGPFilterOperation(CalicoModel):
    """Exactly one of its fields (a discriminated union)."""
    add_community: BGPFilterAddCommunity | None = None
    prepend_as_path: BGPFilterPrependASPath | None = Field(default=None, alias="prependASPath")
    set_priority: BGPFilterSetPriority | None = None

    @model_validator(mode="after")
    def _one(self) -> BGPFilterOperation:
        if sum(x is not None for x in (self.add_community, self.prepend_as_path, self.set_priority)) != 1:
            raise ValueError("an operation sets exactly one of addCommunity, prependASPath, setPriority")
        return self


class _BGPFilterRule(CalicoModel):
    cidr: str = ""
    source: BGPFilterMatchSource | None = None
    interface: str = ""
    match_operator: BGPFilterMatchOperator | None = None
    peer_type: BGPFilterPeerType | None = None
    communities: BGPFilterCommunityMatch | None = None
    as_path_prefix: list[fields.ASNumber] = Field(default_factory=list, alias="asPathPrefix")
    priority: int | None = Field(default=None, ge=1, le=_PRIORITY_MAX)
    action: BGPFilterAction
    operations: list[BGPFilterOperation] = Field(default_factory=list, max_length=10)

    @field_validator("interface")
    @classmethod
    def _interface(cls, v: str) -> str:
        if v and not (v == "*" or _BGP_FILTER_INTERFACE.match(v)):
            raise ValueError("invalid interface name or pattern (1-15 of a-z A-Z 0-9 _ . - *)")
        return v

    @model_validator(mode="after")
    def _rules(self) -> _BGPFilterRule:
        if bool(self.cidr) != (self.match_operator is not None):
            raise fields.field_error("cidr", "cidr and matchOperator must both be set or both be empty", self.cidr)
        if getattr(self, "prefix_length", None) is not None and not self.cidr:
            raise fields.field_error("prefixLength", "cidr is required when prefixLength is set")
        if self.operations and self.action is not BGPFilterAction.ACCEPT:
            raise fields.field_error("operations", "operations may only be used with action Accept")
        return self


class BGPFilterRuleV4(_BGPFilterRule):
    cidr: fields.CIDRv4 = ""
    prefix_length: BGPFilterPrefixLengthV4 | None = None


class BGPFilterRuleV6(_BGPFilterRule):
    cidr: fields.CIDRv6 = ""
    prefix_length: BGPFilterPrefixLengthV6 | None = None


class BGPFilterSpec(CalicoModel):
    export_v4: list[BGPFilterRuleV4] = Field(default_factory=list, alias="exportV4")
    import_v4: list[BGPFilterRuleV4] = Field(default_factory=list, alias="importV4")
    export_v6: list[BGPFilterRuleV6] = Field(default_factory=list, alias="exportV6")
    import_v6: list[BGPFilterRuleV6] = Field(default_factory=list, alias="importV6")


class BGPFilter(Resource):
    KIND = "BGPFilter"
    PLURAL = "bgpfilters"
    spec: BGPFilterSpec = Field(default_factory=BGPFilterSpec)
