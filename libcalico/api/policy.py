"""NetworkPolicy and GlobalNetworkPolicy: rules, entity matches, ports, ICMP.

Shapes follow api/pkg/apis/projectcalico/v3 (policy_common.go,
networkpolicy.go, globalnetworkpolicy.go); rules follow ``validateRule``,
``validateEntityRule`` and the (Global)NetworkPolicySpec validators.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from libcalico.api import fields
from libcalico.api.fields import CalicoModel, WireEnum
from libcalico.api.meta import Resource


class Action(WireEnum):
    ALLOW = "Allow"
    DENY = "Deny"
    LOG = "Log"
    PASS = "Pass"


class PolicyType(WireEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class ICMPFields(CalicoModel):
    type: int | None = Field(default=None, ge=0, le=254)
    code: int | None = Field(default=None, ge=0, le=255)

    @model_validator(mode="after")
    def _code_needs_type(self) -> ICMPFields:
        if self.code is not None and self.type is None:
            raise fields.field_error("code", "ICMP code specified without an ICMP type", self.code)
        return self


class ServiceAccountMatch(CalicoModel):
    names: list[str] = Field(default_factory=list)
    selector: fields.SelectorText = ""


class ServiceMatch(CalicoModel):
    name: str = ""
    namespace: str = ""


class EntityRule(CalicoModel):
    nets: list[str] = Field(default_factory=list)
    selector: fields.SelectorText = ""
    namespace_selector: fields.SelectorText = ""
    ports: list[fields.Port] = Field(default_factory=list)
    not_nets: list[str] = Field(default_factory=list)
    not_selector: fields.SelectorText = ""
    not_ports: list[fields.Port] = Field(default_factory=list)
    service_accounts: ServiceAccountMatch | None = None
    services: ServiceMatch | None = None

    @model_validator(mode="after")
    def _rules(self) -> EntityRule:
        if "global(" in self.selector:
            raise fields.field_error("selector", "global() cannot be used in an entity selector", self.selector)
        if "global(" in self.namespace_selector and self.namespace_selector.strip() != "global()":
            raise fields.field_error("namespaceSelector", "global() cannot be combined with other selectors",
                                     self.namespace_selector)
        if self.services is not None:
            if not self.services.name:
                raise fields.field_error("services.name", "must specify a service name")
            if self.namespace_selector or self.selector or self.not_selector or self.service_accounts:
                raise fields.field_error("services", "cannot be combined with selectors or service accounts")
            if self.nets or self.not_nets:
                raise fields.field_error("services", "cannot be combined with nets or notNets")
        return self


class HTTPMatch(CalicoModel):
    methods: list[str] = Field(default_factory=list)
    paths: list[dict[str, str]] = Field(default_factory=list)


class RuleMetadata(CalicoModel):
    annotations: dict[str, str] = Field(default_factory=dict)


def _check_nets(nets: list[str], name: str) -> set[int]:
    versions: set[int] = set()
    for n in nets:
        try:
            _, net = fields.parse_cidr_or_ip(n)
        except ValueError:
            raise fields.field_error(name, "invalid CIDR", n) from None
        versions.add(net.version)
        if name.endswith("notNets") and net.prefixlen == 0:
            raise fields.field_error(
                name, "catch-all CIDR in negation creates logical contradiction (matches no traffic)", n)
    return versions


class Rule(CalicoModel):
    action: Action
    ip_version: int | None = Field(default=None, alias="ipVersion")
    protocol: fields.Protocol | None = None
    icmp: ICMPFields | None = None
    not_protocol: fields.Protocol | None = None
    not_icmp: ICMPFields | None = Field(default=None, alias="notICMP")
    source: EntityRule = Field(default_factory=EntityRule)
    destination: EntityRule = Field(default_factory=EntityRule)
    http: HTTPMatch | None = None
    metadata: RuleMetadata | None = None

    @field_validator("ip_version")
    @classmethod
    def _ip_version(cls, v: int | None) -> int | None:
        if v not in (None, 4, 6):
            raise ValueError("ipVersion must be 4 or 6")
        return v

    @model_validator(mode="after")
    def _rules(self) -> Rule:
        for side_name in ("source", "destination"):
            side: EntityRule = getattr(self, side_name)
            for attr, wire in (("ports", "ports"), ("not_ports", "notPorts")):
                ports: list[int | str] = getattr(side, attr)
                if self.protocol is None:
                    if any(not fields.port_is_named(p) for p in ports):
                        raise fields.field_error(
                            f"{side_name}.{wire}",
                            "rules with numeric port or port range must set protocol to TCP or UDP or SCTP", ports)
                elif ports and self.protocol not in fields.PORT_PROTOCOLS:
                    raise fields.field_error(f"{side_name}.{wire}",
                                             "rules that specify ports must set protocol to TCP or UDP or SCTP", ports)
        if self.icmp is not None or self.not_icmp is not None:
            icmp_protocols = ("ICMP", "ICMPv6", 1, 58)
            if self.protocol not in icmp_protocols:
                raise fields.field_error("icmp", "ICMP match requires protocol ICMP or ICMPv6",
                                         self.protocol)
        if self.protocol in ("ICMP", 1) and self.ip_version == 6:
            raise fields.field_error("ipVersion", "protocol ICMP requires ipVersion 4", 6)
        if self.protocol in ("ICMPv6", 58) and self.ip_version == 4:
            raise fields.field_error("ipVersion", "protocol ICMPv6 requires ipVersion 6", 4)
        seen: set[int] = set()
        for side_name in ("source", "destination"):
            side = getattr(self, side_name)
            for attr, wire in (("nets", "nets"), ("not_nets", "notNets")):
                name = f"{side_name}.{wire}"
                versions = _check_nets(getattr(side, attr), name)
                if self.ip_version is not None and versions - {self.ip_version}:
                    raise fields.field_error(name, "rule IP version doesn't match CIDR version",
                                             getattr(side, attr))
                seen |= versions
                if len(seen) > 1:
                    raise fields.field_error(name, "rule contains both IPv4 and IPv6 CIDRs", getattr(side, attr))
        return self


def _check_policy_types(types: list[PolicyType]) -> None:
    seen: set[PolicyType] = set()
    for t in types:
        if t in seen:
            raise fields.field_error("types", f"'{t.value}' type specified more than once", [x.value for x in types])
        seen.add(t)


def _check_services(ingress: list[Rule], egress: list[Rule]) -> None:
    for i, r in enumerate(egress):
        if r.source.services is not None:
            raise fields.field_error(f"egress[{i}].source.services", "not allowed in egress rule source")
        if r.http is not None:
            raise fields.field_error(f"egress[{i}].http", "not allowed in egress rule")
    for i, r in enumerate(ingress):
        if r.destination.services is not None:
            raise fields.field_error(f"ingress[{i}].destination.services", "not allowed in ingress rule destination")


class _PolicySpecBase(CalicoModel):
    tier: str = ""
    order: float | None = None
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    selector: fields.SelectorText = ""
    types: list[PolicyType] = Field(default_factory=list)
    service_account_selector: fields.SelectorText = ""
    performance_hints: list[str] = Field(default_factory=list)

    @field_validator("tier")
    @classmethod
    def _tier(cls, v: str) -> str:
        if v and (len(v) > fields.DNS1123_LABEL_MAX or not fields.LABEL_NAME_RE.match(v)):
            raise ValueError("tier must consist of lower case alphanumeric characters or '-' "
                             f"(regex: {fields.NAME_LABEL_FMT})")
        return v

    @field_validator("order", mode="before")
    @classmethod
    def _order(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("order must be a number")
        return v

    @field_validator("performance_hints")
    @classmethod
    def _hints(cls, v: list[str]) -> list[str]:
        for h in v:
            if h != "AssumeNeededOnEveryNode":
                raise ValueError(f"unknown performance hint {h!r}")
        return v

    def _common_rules(self) -> None:
        _check_policy_types(self.types)
        _check_services(self.ingress, self.egress)
        if "global(" in self.selector:
            raise fields.field_error("selector", "global() cannot be used in a policy selector", self.selector)


class NetworkPolicySpec(_PolicySpecBase):
    @model_validator(mode="after")
    def _rules(self) -> NetworkPolicySpec:
        self._common_rules()
        return self


class GlobalNetworkPolicySpec(_PolicySpecBase):
    namespace_selector: fields.SelectorText = ""
    do_not_track: bool = False
    pre_dnat: bool = Field(default=False, alias="preDNAT")
    apply_on_forward: bool = False

    @model_validator(mode="after")
    def _rules(self) -> GlobalNetworkPolicySpec:
        self._common_rules()
        for direction, rules, side in (("egress", self.egress, "destination"), ("ingress", self.ingress, "source")):
            for i, r in enumerate(rules):
                svc = getattr(r, side).services
                if svc is not None and not svc.namespace:
                    raise fields.field_error(f"{direction}[{i}].{side}.services.namespace", "must specify a namespace")
        if self.do_not_track and self.pre_dnat:
            raise fields.field_error("preDNAT", "PreDNAT and DoNotTrack cannot both be true, for a given PolicySpec",
                                     True)
        if self.pre_dnat and self.egress:
            raise fields.field_error("egress", "PreDNAT PolicySpec cannot have any Egress rules")
        if self.pre_dnat and PolicyType.EGRESS in self.types:
            raise fields.field_error("types", "PreDNAT PolicySpec types field cannot contain 'Egress'")
        if (self.do_not_track or self.pre_dnat) and self.apply_on_forward is False and (
                "applyOnForward" in self.model_fields_set or "apply_on_forward" in self.model_fields_set):
            raise fields.field_error("applyOnForward",
                                     "ApplyOnForward must be true if either PreDNAT or DoNotTrack is true", False)
        return self


_NP_NAME_RE = re.compile(
    "^((" + fields.NAME_LABEL_FMT + r")(\." + fields.NAME_LABEL_FMT + r")?|((?:knp|ossg)\.default\.("
    + fields.NAME_SUBDOMAIN_FMT + ")))$")
_GNP_NAME_RE = re.compile("^(" + fields.NAME_LABEL_FMT + r"\.)?" + fields.NAME_LABEL_FMT + "$")


def _policy_name_checker(regex: re.Pattern[str], what: str) -> Any:
    def check(name: str) -> str:
        if len(name) > fields.DNS1123_SUBDOMAIN_MAX:
            raise ValueError(f"name is too long by {len(name) - fields.DNS1123_SUBDOMAIN_MAX} bytes")
        if not regex.match(name):
            raise ValueError(f"{what} name must be a DNS-1123 label with at most one dot (regex: {regex.pattern})")
        return name

    return staticmethod(check)


class NetworkPolicy(Resource):
    KIND = "NetworkPolicy"
    PLURAL = "networkpolicies"
    NAMESPACED = True
    NAME_CHECK = _policy_name_checker(_NP_NAME_RE, KIND)
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)


class GlobalNetworkPolicy(Resource):
    KIND = "GlobalNetworkPolicy"
    PLURAL = "globalnetworkpolicies"
    NAME_CHECK = _policy_name_checker(_GNP_NAME_RE, KIND)
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)


# --- Tier ---------------------------------------------------------------------------------

DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0      # api/pkg/apis/projectcalico/v3/tier.go DefaultTierOrder
KUBE_ADMIN_TIER_ORDER = 1_000.0
KUBE_BASELINE_TIER_ORDER = 10_000_000.0
_WELL_KNOWN_TIERS = {DEFAULT_TIER: (DEFAULT_TIER_ORDER, Action.DENY),
                     "kube-admin": (KUBE_ADMIN_TIER_ORDER, Action.PASS),
                     "kube-baseline": (KUBE_BASELINE_TIER_ORDER, Action.PASS)}


class TierSpec(CalicoModel):
    order: float | None = None
    default_action: Action | None = None

    @field_validator("order", mode="before")
    @classmethod
    def _order(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("order must be a number")
        return v

    @field_validator("default_action")
    @classmethod
    def _default_action(cls, v: Action | None) -> Action | None:
        if v not in (None, Action.DENY, Action.PASS):
            raise ValueError("defaultAction must be one of Deny, Pass")
        return v


def _check_tier_name(name: str) -> str:
    """``validateTier``: a DNS-1123 label (tier names appear inside policy names and labels)."""
    if len(name) > fields.DNS1123_LABEL_MAX:
        raise ValueError(f"name is too long by {len(name) - fields.DNS1123_LABEL_MAX} bytes")
    if not fields.LABEL_NAME_RE.match(name):
        raise ValueError(f"name must consist of lower case alphanumeric characters or '-' (regex: "
                         f"{fields.NAME_LABEL_FMT})")
    return name


class Tier(Resource):
    """A tier of policies: tiers apply in order, a tier's policies in theirs; the end of a tier
    that had policies for an endpoint is its ``defaultAction`` (Deny, or Pass to the next tier).

    The CEL rules of Calico's CRD pin the well-known tiers: ``default`` has order 1,000,000 and
    defaultAction Deny, ``kube-admin`` 1,000 and Pass, ``kube-baseline`` 10,000,000 and Pass."""

    KIND = "Tier"
    PLURAL = "tiers"
    NAME_CHECK = staticmethod(_check_tier_name)
    spec: TierSpec = Field(default_factory=TierSpec)

    @model_validator(mode="after")
    def _well_known(self) -> Tier:
        known = _WELL_KNOWN_TIERS.get(self.metadata.name)
        if known is not None:
            order, action = known
            if self.spec.default_action not in (None, action):
                raise fields.field_error("spec.defaultAction",
                                         f"The '{self.metadata.name}' tier must have default action '{action.value}'",
                                         self.spec.default_action.value if self.spec.default_action else None)
            if self.spec.order != order:
                raise fields.field_error("spec.order", f"{self.metadata.name} tier order must be {order:.0f}",
                                         self.spec.order)
        return self


# --- Profile ------------------------------------------------------------------------------


class ProfileSpec(CalicoModel):
    ingress: list[Rule] = Field(default_factory=list)
    egress: list[Rule] = Field(default_factory=list)
    labels_to_apply: fields.Labels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rules(self) -> ProfileSpec:
        _check_services(self.ingress, self.egress)
        return self


class Profile(Resource):
    """Rules that apply after every tier to the endpoints that list the profile, and labels those
    endpoints inherit (Kubernetes namespaces and service accounts become ``kns.``/``ksa.`` profiles)."""

    KIND = "Profile"
    PLURAL = "profiles"
    spec: ProfileSpec = Field(default_factory=ProfileSpec)
