"""Node, WorkloadEndpoint, HostEndpoint and ClusterInformation.

Node and WorkloadEndpoint are Calico's "internal API" kinds: on the
Kubernetes datastore they are derived from Kubernetes Nodes and Pods, on etcd
they are stored like any other resource. Their shapes follow libcalico-go's
``lib/apis/internalapi``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from libcalico.api import fields
from libcalico.api.fields import CalicoModel
from libcalico.api.meta import Resource

# --- Node ---------------------------------------------------------------------------


class NodeBGPSpec(CalicoModel):
    as_number: fields.ASNumber | None = Field(default=None, alias="asNumber")
    ipv4_address: fields.CIDRv4 = Field(default="", alias="ipv4Address")
    ipv6_address: fields.CIDRv6 = Field(default="", alias="ipv6Address")
    ipv4_ipip_tunnel_addr: fields.IPv4Addr = Field(default="", alias="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: fields.IPv4Addr = Field(default="", alias="routeReflectorClusterID")


class OrchRef(CalicoModel):
    orchestrator: str = ""
    node_name: str = ""


class NodeAddress(CalicoModel):
    address: fields.CIDR
    type: str = ""

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in ("", "CalicoNodeIP", "InternalIP", "ExternalIP"):
            raise ValueError("type must be CalicoNodeIP, InternalIP or ExternalIP")
        return v


class NodeWireguardSpec(CalicoModel):
    interface_ipv4_address: fields.IPv4Addr = Field(default="", alias="interfaceIPv4Address")
    interface_ipv6_address: fields.IPv6Addr = Field(default="", alias="interfaceIPv6Address")


class NodeSpec(CalicoModel):
    bgp: NodeBGPSpec | None = None
    ipv4_vxlan_tunnel_addr: fields.IPv4Addr = Field(default="", alias="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: fields.MAC = Field(default="", alias="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: fields.IPv6Addr = Field(default="", alias="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: fields.MAC = Field(default="", alias="vxlanTunnelMACAddrV6")
    orch_refs: list[OrchRef] = Field(default_factory=list)
    wireguard: NodeWireguardSpec | None = None
    addresses: list[NodeAddress] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> NodeSpec:
        if self.bgp is not None and self.bgp == NodeBGPSpec():
            raise fields.field_error("bgp", "Spec.BGP should not be empty")
        return self


class Node(Resource):
    KIND = "Node"
    PLURAL = "nodes"
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: dict[str, Any] = Field(default_factory=dict)


# --- WorkloadEndpoint -----------------------------------------------------------------


class IPNAT(CalicoModel):
    internal_ip: fields.IPAddr = Field(alias="internalIP")
    external_ip: fields.IPAddr = Field(alias="externalIP")

    @model_validator(mode="after")
    def _versions(self) -> IPNAT:
        v_in = fields.parse_cidr_or_ip(self.internal_ip)[0].version
        v_ext = fields.parse_cidr_or_ip(self.external_ip)[0].version
        if v_in != v_ext:
            raise fields.field_error("externalIP", "mismatched IP versions", self.external_ip)
        return self


class WorkloadEndpointPort(CalicoModel):
    name: str = ""
    protocol: fields.Protocol = "TCP"
    port: int = Field(default=0, ge=0, le=65535)
    host_port: int = Field(default=0, ge=0, le=65535)
    host_ip: str = Field(default="", alias="hostIP")

    @model_validator(mode="after")
    def _rules(self) -> WorkloadEndpointPort:
        if self.protocol not in fields.PORT_PROTOCOLS:
            raise fields.field_error("protocol", "WorkloadEndpointPort protocol does not support ports.",
                                     self.protocol)
        if not self.name and self.host_port == 0:
            raise fields.field_error("name", "WorkloadEndpointPort name must not be empty if no HostPort is specified")
        return self


class WorkloadEndpointSpec(CalicoModel):
    orchestrator: str = ""
    workload: str = ""
    node: str = ""
    container_id: str = Field(default="", alias="containerID")
    pod: str = ""
    endpoint: str = ""
    service_account_name: str = ""
    ip_networks: list[str] = Field(default_factory=list, alias="ipNetworks")
    ip_nats: list[IPNAT] = Field(default_factory=list, alias="ipNATs")
    ipv4_gateway: fields.IPv4Addr = Field(default="", alias="ipv4Gateway")
    ipv6_gateway: fields.IPv6Addr = Field(default="", alias="ipv6Gateway")
    profiles: list[str] = Field(default_factory=list)
    interface_name: fields.InterfaceName = ""
    mac: fields.MAC = ""
    ports: list[WorkloadEndpointPort] = Field(default_factory=list)
    allow_spoofed_source_prefixes: list[fields.CIDR] = Field(default_factory=list)

    @field_validator("ip_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        out = []
        for text in v:
            try:
                _, net = fields.parse_cidr_or_ip(text)
            except ValueError:
                raise ValueError(f"invalid CIDR {text!r}") from None
            if net.prefixlen != net.max_prefixlen:
                raise ValueError(f"IP network contains multiple addresses ({text})")
            out.append(str(net))
        return out

    @model_validator(mode="after")
    def _nats(self) -> WorkloadEndpointSpec:
        nets = [fields.parse_cidr_or_ip(n)[1] for n in self.ip_networks]
        for nat in self.ip_nats:
            internal = fields.parse_cidr_or_ip(nat.internal_ip)[0]
            if not any(internal in n for n in nets):
                raise fields.field_error("ipNATs", "NAT is not in the endpoint networks", nat.internal_ip)
        return self


class WorkloadEndpoint(Resource):
    KIND = "WorkloadEndpoint"
    PLURAL = "workloadendpoints"
    NAMESPACED = True
    spec: WorkloadEndpointSpec = Field(default_factory=WorkloadEndpointSpec)


# --- HostEndpoint ------------------------------------------------------------------------


class EndpointPort(CalicoModel):
    name: str
    protocol: fields.Protocol
    port: int = Field(ge=1, le=65535)

    @model_validator(mode="after")
    def _rules(self) -> EndpointPort:
        if self.protocol not in fields.PORT_PROTOCOLS:
            raise fields.field_error("protocol", "EndpointPort protocol does not support ports.", self.protocol)
        return self


class HostEndpointSpec(CalicoModel):
    node: str = ""
    interface_name: str = ""
    expected_ips: list[fields.IPAddr] = Field(default_factory=list, alias="expectedIPs")
    profiles: list[str] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)

    @field_validator("interface_name")
    @classmethod
    def _iface(cls, v: str) -> str:
        # "*" means all interfaces of the host.
        return v if v == "*" else fields.check_interface(v)

    @model_validator(mode="after")
    def _rules(self) -> HostEndpointSpec:
        if not self.interface_name and not self.expected_ips:
            raise fields.field_error("interfaceName", "at least one of interfaceName or expectedIPs must be set")
        return self


class HostEndpoint(Resource):
    KIND = "HostEndpoint"
    PLURAL = "hostendpoints"
    # Not validated: an empty spec is invalid, and serialising with exclude_defaults builds the default.
    spec: HostEndpointSpec = Field(default_factory=HostEndpointSpec.model_construct)


# --- ClusterInformation -------------------------------------------------------------------


class ClusterInformationSpec(CalicoModel):
    cluster_guid: str = Field(default="", alias="clusterGUID")
    cluster_type: str = ""
    calico_version: str = ""
    datastore_ready: bool | None = None
    variant: str = ""


class ClusterInformation(Resource):
    KIND = "ClusterInformation"
    PLURAL = "clusterinformations"
    spec: ClusterInformationSpec = Field(default_factory=ClusterInformationSpec)
