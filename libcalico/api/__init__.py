"""projectcalico.org/v3 resource models with Calico's field names, defaults and validation.

Import the kinds from here (``from libcalico import api; api.IPPool``). The
static per-object rules live on the models; rules that need the datastore live
in :mod:`libcalico.client`.
"""

from libcalico.api.bgp import BGPConfiguration, BGPConfigurationSpec, BGPFilter, BGPFilterSpec, BGPPeer, BGPPeerSpec
from libcalico.api.endpoints import (
    ClusterInformation,
    ClusterInformationSpec,
    HostEndpoint,
    HostEndpointSpec,
    Node,
    NodeBGPSpec,
    NodeSpec,
    WorkloadEndpoint,
    WorkloadEndpointSpec,
)
from libcalico.api.felixconfig import FelixConfiguration, FelixConfigurationSpec
from libcalico.api.ipam import BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle
from libcalico.api.ippool import IPPool, IPPoolSpec
from libcalico.api.kubecontrollers import KubeControllersConfiguration, KubeControllersConfigurationSpec
from libcalico.api.loading import load_documents, load_resources, parse_resource
from libcalico.api.meta import API_VERSION, ObjectMeta, Resource
from libcalico.api.nodestatus import CalicoNodeStatus, CalicoNodeStatusSpec
from libcalico.api.networkset import GlobalNetworkSet, NetworkSet, NetworkSetSpec
from libcalico.api.policy import (
    GlobalNetworkPolicy,
    GlobalNetworkPolicySpec,
    NetworkPolicy,
    NetworkPolicySpec,
    Profile,
    ProfileSpec,
    Rule,
    Tier,
    TierSpec,
)
from libcalico.api.registry import KINDS, by_kind, by_plural

__all__ = [
    "API_VERSION", "KINDS", "BlockAffinity", "IPAMBlock", "IPAMConfig", "IPAMHandle", "BGPConfiguration", "BGPConfigurationSpec", "BGPFilter", "BGPFilterSpec", "BGPPeer", "BGPPeerSpec",
    "CalicoNodeStatus", "CalicoNodeStatusSpec",
    "ClusterInformation", "ClusterInformationSpec", "FelixConfiguration", "FelixConfigurationSpec",
    "GlobalNetworkPolicy", "GlobalNetworkPolicySpec", "GlobalNetworkSet", "NetworkSet", "NetworkSetSpec",
    "Profile", "ProfileSpec", "Rule", "Tier", "TierSpec", "HostEndpoint", "HostEndpointSpec", "IPPool", "IPPoolSpec",
    "KubeControllersConfiguration", "KubeControllersConfigurationSpec",
    "NetworkPolicy", "NetworkPolicySpec", "Node", "NodeBGPSpec", "NodeSpec", "ObjectMeta", "Resource",
    "WorkloadEndpoint", "WorkloadEndpointSpec", "by_kind", "by_plural", "load_documents", "load_resources",
    "parse_resource",
]
