"""The syncer definitions: which resource types each kind of datastore client follows.

Calico defines these once, in libcalico-go (``backend/syncersv1/felixsyncer``,
``bgpsyncer``, ``tunnelipsyncer``, ``nodestatussyncer``), and Felix, confd,
calico-node and Typha all build their syncers from them. Here too: a component
asks for ``syncers.felix()`` or ``syncers.bgp(node)`` and never lists kinds by
hand, so Felix direct, Felix through Typha and Typha's own upstream follow the
same types and cannot drift apart.

Each definition carries its Typha syncer type (the name a client puts in its
hello: ``felix``, ``bgp``, ``tunnel-ip-allocation``, ``node-status``) and its
list options. The types are Calico's, mapped to the kinds pycalico has:

* ``felix``: ClusterInformation, FelixConfiguration, GlobalNetworkPolicy,
  IPPool, Node, WorkloadEndpoint, NetworkPolicy, HostEndpoint,
  BGPConfiguration, BGPPeer, and the IPAM blocks (unless the pod CIDRs come
  from Kubernetes, ``use_pod_cidr``). Calico's kinds we do not have (Profile,
  Tier, NetworkSet, GlobalNetworkSet, the staged policies, LiveMigration) are
  left out; on the Kubernetes datastore the Kubernetes network policies come
  through our NetworkPolicy (the backend converts them), so Calico's extra
  KDD-only types are not needed.
* ``bgp``: IPPool, BGPConfiguration, Node, BGPPeer, BGPFilter, and the block affinities
  of one node (``node``; all nodes' when ``node`` is empty, as Typha runs it).
* ``tunnel-ip-allocation``: IPPool and one Node (all when ``node`` is empty).
* ``node-status``: CalicoNodeStatus.

Typha serves every client of a type from one upstream syncer, so it runs each
definition without a node (:func:`for_typha`); a client that gets its data
through Typha therefore sees every node's affinities and filters by its own
node, which is what Calico's confd does too.

:func:`ipam_inputs` is ours, not Calico's: the inputs a long-running allocator
keeps current (see :class:`libcalico.ipam.WatchedInputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

from libcalico import api
from libcalico.api.meta import Resource
from libcalico.backend.api import Backend
from libcalico.model import ResourceListOptions
from libcalico.watching import Syncer, SyncerCallbacks

# Calico's syncproto.SyncerType values.
FELIX = "felix"
BGP = "bgp"
TUNNEL_IP_ALLOCATION = "tunnel-ip-allocation"
NODE_STATUS = "node-status"
ALL_TYPES = (FELIX, BGP, TUNNEL_IP_ALLOCATION, NODE_STATUS)


@dataclass(frozen=True, slots=True)
class SyncerDefinition:
    """One kind of syncer: its Typha type name and the resource types it follows."""

    type: str
    types: tuple[ResourceListOptions, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(o.kind for o in self.types)

    def syncer(self, backend: Backend, callbacks: SyncerCallbacks) -> Syncer:
        """A direct syncer on ``backend`` (list + watch of each type, :mod:`libcalico.watching`)."""
        return Syncer(backend, self.types, callbacks)


def _opts(*kinds: type[Resource]) -> tuple[ResourceListOptions, ...]:
    return tuple(ResourceListOptions(k) for k in kinds)


def felix(*, use_pod_cidr: bool = False) -> SyncerDefinition:
    """Calico's felixsyncer (as the node's active Felix runs it)."""
    types = _opts(api.ClusterInformation, api.FelixConfiguration, api.Tier, api.GlobalNetworkPolicy,
                  api.NetworkPolicy, api.Profile, api.IPPool, api.Node, api.WorkloadEndpoint, api.HostEndpoint,
                  api.NetworkSet, api.GlobalNetworkSet, api.BGPConfiguration, api.BGPPeer)
    if not use_pod_cidr:  # Calico IPAM: Felix routes by the blocks
        types += _opts(api.IPAMBlock)
    return SyncerDefinition(FELIX, types)


def bgp(node: str = "", *, use_pod_cidr: bool = False) -> SyncerDefinition:
    """Calico's bgpsyncer: confd's inputs; ``node`` narrows the block affinities to that node's."""
    types = _opts(api.IPPool, api.BGPConfiguration, api.Node, api.BGPPeer, api.BGPFilter)
    if not use_pod_cidr:
        types += (ResourceListOptions(api.BlockAffinity, node=node),)
    return SyncerDefinition(BGP, types)


def tunnel_ip_allocation(node: str = "") -> SyncerDefinition:
    """Calico's tunnelipsyncer: the pools and the node whose tunnel addresses are allocated."""
    return SyncerDefinition(TUNNEL_IP_ALLOCATION,
                            (ResourceListOptions(api.IPPool), ResourceListOptions(api.Node, name=node)))


def node_status() -> SyncerDefinition:
    """Calico's nodestatussyncer."""
    return SyncerDefinition(NODE_STATUS, _opts(api.CalicoNodeStatus))


def for_typha(syncer_type: str) -> SyncerDefinition:
    """The definition Typha runs for ``syncer_type``: cluster-wide (no node). ValueError if unknown."""
    if syncer_type == FELIX:
        return felix()
    if syncer_type == BGP:
        return bgp()
    if syncer_type == TUNNEL_IP_ALLOCATION:
        return tunnel_ip_allocation()
    if syncer_type == NODE_STATUS:
        return node_status()
    raise ValueError(f"unknown syncer type {syncer_type!r} (one of {', '.join(ALL_TYPES)})")


def ipam_inputs() -> SyncerDefinition:
    """What a long-running IPAM allocator watches: pools, the IPAM configuration, nodes' labels (ours)."""
    return SyncerDefinition("ipam", _opts(api.IPPool, api.IPAMConfig, api.Node))


__all__ = ["ALL_TYPES", "BGP", "FELIX", "NODE_STATUS", "SyncerDefinition", "TUNNEL_IP_ALLOCATION", "bgp", "felix",
           "for_typha", "ipam_inputs", "node_status", "tunnel_ip_allocation"]
