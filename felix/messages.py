"""The typed, incremental messages from Felix's calculation graph to its dataplane managers.

Calico sends these as protobuf between its calc graph and dataplane driver
(``felix/proto/felixbackend.proto``: RouteUpdate, IPSetDeltaUpdate,
ActivePolicyUpdate, WorkloadEndpointUpdate...). Here they are frozen
dataclasses passed in process. Each one says what changed, never the whole
state, so a manager's work is proportional to the change.
"""

from __future__ import annotations

from dataclasses import dataclass

from felix.calc import VTEP, Route
from felix.policy import ParsedPolicy, ParsedRules, PolicyID

# --- routes and tunnels --------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteUpdate:
    route: Route


@dataclass(frozen=True)
class RouteRemove:
    dst: str


@dataclass(frozen=True)
class VXLANUpdate:
    """This node's VTEP (None: no VXLAN) and every other node's."""

    local: VTEP | None
    remotes: tuple[VTEP, ...]


@dataclass(frozen=True)
class IPIPUpdate:
    enabled: bool
    address: str


@dataclass(frozen=True)
class NATPoolsUpdate:
    """Pools with natOutgoing (masqueraded from) and all pools (not masqueraded to)."""

    masquerade: tuple[str, ...]
    all_pools: tuple[str, ...]


# --- IP sets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IPSetUpdate:
    """An IP set is needed: ``kind`` "net" (addresses and CIDRs) or "ipport" (address, protocol, port)."""

    id: str
    kind: str


@dataclass(frozen=True)
class IPSetRemove:
    id: str


@dataclass(frozen=True)
class IPSetDelta:
    """Members added to and removed from a set: "a.b.c.d/len" or ("a.b.c.d", proto, port)."""

    id: str
    added: frozenset[object]
    removed: frozenset[object]


# --- policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivePolicyUpdate:
    policy: ParsedPolicy


@dataclass(frozen=True)
class ActivePolicyRemove:
    id: PolicyID


@dataclass(frozen=True)
class ActiveProfileUpdate:
    name: str
    rules: ParsedRules


@dataclass(frozen=True)
class ActiveProfileRemove:
    name: str


@dataclass(frozen=True)
class TierInfo:
    """One tier of an endpoint's policies, in order (Calico's TierInfo)."""

    name: str
    default_action: str            # Deny | Pass
    ingress: tuple[PolicyID, ...]
    egress: tuple[PolicyID, ...]


@dataclass(frozen=True)
class EndpointUpdate:
    """A local endpoint: a workload's ``cali*`` interface, or a host endpoint's interface."""

    key: str                       # "wep:<ns>/<name>" or "hep:<name>"
    host: bool
    iface: str
    tiers: tuple[TierInfo, ...]
    profiles: tuple[str, ...]
    # Host endpoints: the applyOnForward policies, for forwarded traffic (Calico's ForwardTiers).
    forward_tiers: tuple[TierInfo, ...] = ()


@dataclass(frozen=True)
class EndpointRemove:
    key: str
    host: bool
    iface: str


Message = (RouteUpdate | RouteRemove | VXLANUpdate | IPIPUpdate | NATPoolsUpdate | IPSetUpdate | IPSetRemove
           | IPSetDelta | ActivePolicyUpdate | ActivePolicyRemove | ActiveProfileUpdate | ActiveProfileRemove
           | EndpointUpdate | EndpointRemove)
