"""The kinds pycalico knows: kind name -> model class, plural, scope.

One table, so the etcd key layout, the CRD generator, calicoctl and the
Kubernetes backend all agree on names. Plurals are Calico's
(libcalico-go ``backend/model/resource.go``).
"""

from __future__ import annotations

from libcalico.api.bgp import BGPConfiguration, BGPFilter, BGPPeer
from libcalico.api.endpoints import ClusterInformation, HostEndpoint, Node, WorkloadEndpoint
from libcalico.api.felixconfig import FelixConfiguration
from libcalico.api.ipam import IPAM_KINDS
from libcalico.api.ippool import IPPool
from libcalico.api.kubecontrollers import KubeControllersConfiguration
from libcalico.api.meta import Resource
from libcalico.api.nodestatus import CalicoNodeStatus
from libcalico.api.networkset import GlobalNetworkSet, NetworkSet
from libcalico.api.policy import GlobalNetworkPolicy, NetworkPolicy, Profile, Tier

KINDS: dict[str, type[Resource]] = {
    cls.KIND: cls
    for cls in (
        IPPool,
        BGPPeer,
        BGPConfiguration,
        BGPFilter,
        Node,
        WorkloadEndpoint,
        NetworkPolicy,
        GlobalNetworkPolicy,
        Tier,
        Profile,
        NetworkSet,
        GlobalNetworkSet,
        FelixConfiguration,
        HostEndpoint,
        ClusterInformation,
        CalicoNodeStatus,
        KubeControllersConfiguration,
        *IPAM_KINDS,
    )
}
_BY_LOWER = {k.lower(): cls for k, cls in KINDS.items()}
_BY_PLURAL = {cls.PLURAL: cls for cls in KINDS.values()}


def by_kind(kind: str) -> type[Resource] | None:
    """Look a kind up by name (case-insensitive) or by plural."""
    low = kind.lower()
    return _BY_LOWER.get(low) or _BY_PLURAL.get(low)


def by_plural(plural: str) -> type[Resource] | None:
    return _BY_PLURAL.get(plural.lower())
