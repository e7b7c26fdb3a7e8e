"""IPPool: the address ranges pods get their IPs from, and how they are routed.

Static rules (one object, no datastore) live here, following Calico's CEL
rules on the IPPool CRD and ``validateIPPoolSpec``. Rules that need the
datastore (overlap with other pools, immutability of cidr and blockSize) and
the defaults Calico's client fills in live in :mod:`libcalico.client`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from libcalico.api import fields
from libcalico.api.fields import CalicoModel, WireEnum
from libcalico.api.meta import Resource


class EncapMode(WireEnum):
    NEVER = "Never"
    ALWAYS = "Always"
    CROSS_SUBNET = "CrossSubnet"


class AllowedUse(WireEnum):
    WORKLOAD = "Workload"
    TUNNEL = "Tunnel"
    LOAD_BALANCER = "LoadBalancer"


class AssignmentMode(WireEnum):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


IPV4_BLOCK_SIZES = range(20, 33)
IPV6_BLOCK_SIZES = range(116, 129)
DEFAULT_BLOCK_SIZE_V4 = 26
DEFAULT_BLOCK_SIZE_V6 = 122

_LINK_LOCAL_V4 = fields.parse_cidr_or_ip("169.254.0.0/16")[1]
_LINK_LOCAL_V6 = fields.parse_cidr_or_ip("fe80::/10")[1]


class IPPoolSpec(CalicoModel):
    cidr: str = Field(default="", max_length=48)
    vxlan_mode: EncapMode | None = Field(default=None, alias="vxlanMode")
    ipip_mode: EncapMode | None = Field(default=None, alias="ipipMode")
    nat_outgoing: bool = Field(default=False, alias="natOutgoing")
    disabled: bool = False
    disable_bgp_export: bool = Field(default=False, alias="disableBGPExport")
    block_size: int = Field(default=0, ge=0, le=128)
    node_selector: fields.SelectorText = Field(default="", max_length=1024)
    namespace_selector: fields.SelectorText = Field(default="", max_length=1024)
    allowed_uses: list[AllowedUse] = Field(default_factory=list, max_length=10)
    assignment_mode: AssignmentMode | None = None

    @field_validator("vxlan_mode", "ipip_mode", mode="before")
    @classmethod
    def _empty_mode(cls, v: Any) -> Any:
        # Calico treats "" as unset (the CEL rules test size(...) == 0).
        return None if v == "" else v

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        if not v:
            raise ValueError("IPPool CIDR must be specified")
        try:
            addr, net = fields.parse_cidr_or_ip(v)
        except ValueError:
            raise ValueError("IPPool CIDR must be a valid subnet") from None
        if "/" not in v:
            raise ValueError("IPPool CIDR must be a valid subnet")
        if addr != net.network_address:
            # Calico normalises the CIDR, then refuses one that was not strictly masked,
            # showing the normalised value.
            raise fields.field_error("", f"IPPool CIDR is not strictly masked (did you mean {net}?)", v)
        return str(net)

    @property
    def ip_version(self) -> int:
        return fields.parse_cidr_or_ip(self.cidr)[1].version

    def effective_block_size(self) -> int:
        if self.block_size:
            return self.block_size
        return DEFAULT_BLOCK_SIZE_V4 if self.ip_version == 4 else DEFAULT_BLOCK_SIZE_V6

    @property
    def vxlan(self) -> str:
        """vxlanMode as text, unset meaning Never: what Felix and confd branch on."""
        return (self.vxlan_mode or EncapMode.NEVER).value

    @property
    def ipip(self) -> str:
        """ipipMode as text, unset meaning Never."""
        return (self.ipip_mode or EncapMode.NEVER).value

    @model_validator(mode="after")
    def _rules(self) -> IPPoolSpec:
        if not self.cidr:  # the cidr validator already reported it
            return self
        net = fields.parse_cidr_or_ip(self.cidr)[1]
        ipip = self.ipip_mode not in (None, EncapMode.NEVER)
        vxlan = self.vxlan_mode not in (None, EncapMode.NEVER)
        if ipip and vxlan:
            raise fields.field_error("ipipMode", "ipipMode and vxlanMode cannot both be enabled", self.ipip_mode.value
                                     if self.ipip_mode else None)
        if net.version == 6 and ipip:
            raise fields.field_error("ipipMode", "IPIP is not supported on IPv6 pools",
                                     self.ipip_mode.value if self.ipip_mode else None)
        link_local = _LINK_LOCAL_V4 if net.version == 4 else _LINK_LOCAL_V6
        if net.overlaps(link_local):
            raise fields.field_error(
                "cidr", f"IPPool CIDR overlaps with IPv{net.version} link local range {link_local}", self.cidr)
        if self.block_size:
            sizes = IPV4_BLOCK_SIZES if net.version == 4 else IPV6_BLOCK_SIZES
            if self.block_size not in sizes:
                raise fields.field_error(
                    "blockSize",
                    "blockSize must be between 20 and 32 for IPv4 pools, and between 116 and 128 for IPv6 pools",
                    self.block_size)
        if not self.disabled and net.prefixlen > self.effective_block_size():
            raise fields.field_error(
                "cidr",
                "IP pool size is too small for use with Calico IPAM. It must be equal to or greater than the "
                f"block size (/{self.effective_block_size()}).",
                self.cidr)
        if "global(" in self.node_selector:
            raise fields.field_error("nodeSelector", "global() selector is not valid for IPPool nodeSelector",
                                     self.node_selector)
        if "global(" in self.namespace_selector:
            raise fields.field_error("namespaceSelector",
                                     "global() selector is not valid for IPPool namespaceSelector",
                                     self.namespace_selector)
        uses = set(self.allowed_uses)
        if AllowedUse.LOAD_BALANCER in uses:
            if uses & {AllowedUse.WORKLOAD, AllowedUse.TUNNEL}:
                raise fields.field_error("allowedUses",
                                         "LoadBalancer cannot be combined with Workload or Tunnel allowed uses",
                                         [u.value for u in self.allowed_uses])
            if ipip or vxlan:
                raise fields.field_error("allowedUses", "LoadBalancer IP pool cannot have IPIP or VXLAN enabled",
                                         [u.value for u in self.allowed_uses])
            if self.disable_bgp_export:
                raise fields.field_error("disableBGPExport", "LoadBalancer IP pools cannot disable BGP export",
                                         True)
            if self.node_selector not in ("", "all()"):
                raise fields.field_error("nodeSelector",
                                         "IP Pool with AllowedUse LoadBalancer must have nodeSelector set to all()",
                                         self.node_selector)
        if AllowedUse.TUNNEL in uses and self.namespace_selector:
            raise fields.field_error("namespaceSelector",
                                     "IP Pool with AllowedUse Tunnel cannot have namespaceSelector",
                                     self.namespace_selector)
        return self


class IPPool(Resource):
    KIND = "IPPool"
    PLURAL = "ippools"
    spec: IPPoolSpec = Field(default_factory=IPPoolSpec)

    @model_validator(mode="after")
    def _cidr_given(self) -> IPPool:
        # A missing spec (or "spec": null, or a patch that removes it) has no CIDR: the
        # spec's own validator only sees a CIDR that was written.
        if not self.spec.cidr:
            raise fields.field_error("spec.cidr", "IPPool CIDR must be specified", "")
        return self
