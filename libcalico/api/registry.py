"""The kinds pycalico knows, keyed by the model class.

Each model class carries what Calico knows about its kind (``KIND``,
``PLURAL``, ``NAMESPACED``; the key layout follows from them, see
:mod:`libcalico.model`), and this module is the one table of them, so the etcd
key layout, the CRD generator, calicoctl and the Kubernetes backend all agree on
names. Plurals are Calico's (libcalico-go ``backend/model/resource.go``).

Code names a kind by its class (``ResourceListOptions(api.IPPool)``,
``kind_of(api.IPPool)``), so a misspelt kind is a name error that mypy
reports, and a datastore call typed by the class returns that class. A kind
*string* is looked up only at the edges where strings come in: YAML manifests,
calicoctl arguments, etcd and Kubernetes keys, Typha's wire. :func:`class_of`
is that lookup; it raises :class:`UnknownKind` with Calico's message
(calicoctl ``resourcemgr``: "resource type '%s' is not supported").
"""

from __future__ import annotations

from typing import Any

from typing_extensions import TypeVar

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

# A model class as a type parameter (KVPair[ModelT], ResourceKey[ModelT]). Unparametrised, it is
# Any: a key built from a string at an edge holds a value of whichever kind the string named.
ModelT = TypeVar("ModelT", bound=Resource, default=Any)


class UnknownKind(ValueError):
    """A kind string that names no kind pycalico knows (raised at the edges that take strings)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"resource type '{kind}' is not supported")
        self.kind = kind


def kind_of(cls: type[Resource]) -> str:
    """The kind name of a model class, as Calico writes it (``IPPool``)."""
    return cls.KIND


def class_of(kind: str) -> type[Resource]:
    """The model class for a kind name (case-insensitive) or plural; :class:`UnknownKind` if none."""
    cls = by_kind(kind)
    if cls is None:
        raise UnknownKind(kind)
    return cls


def by_kind(kind: str) -> type[Resource] | None:
    """Look a kind up by name (case-insensitive) or by plural."""
    exact = KINDS.get(kind)
    if exact is not None:
        return exact
    low = kind.lower()
    return _BY_LOWER.get(low) or _BY_PLURAL.get(low)


def by_plural(plural: str) -> type[Resource] | None:
    return _BY_PLURAL.get(plural.lower())
