"""One client per Calico kind on the Kubernetes API (libcalico-go's ``k8s/resources``), chosen by kind.

Every kind not listed here is a custom resource (:mod:`.custom`).
"""

from __future__ import annotations

from libcalico.api import registry
from libcalico.api.endpoints import Node, WorkloadEndpoint
from libcalico.api.meta import Resource
from libcalico.api.policy import NetworkPolicy, Profile
from libcalico.backend.kubernetes.connection import Connection
from libcalico.backend.kubernetes.resources.base import ResourceClient, Source
from libcalico.backend.kubernetes.resources.custom import CustomResourceClient
from libcalico.backend.kubernetes.resources.networkpolicy import NetworkPolicyClient
from libcalico.backend.kubernetes.resources.node import NodeClient
from libcalico.backend.kubernetes.resources.profile import ProfileClient
from libcalico.backend.kubernetes.resources.workloadendpoint import WorkloadEndpointClient

BY_KIND: dict[type[Resource], type[ResourceClient]] = {
    Node: NodeClient,
    WorkloadEndpoint: WorkloadEndpointClient,
    NetworkPolicy: NetworkPolicyClient,
    Profile: ProfileClient,
}


def for_kind(conn: Connection, kind: str) -> ResourceClient:
    """The client for a key's kind (its name, as keys carry it)."""
    cls = registry.by_kind(kind)
    return (BY_KIND.get(cls, CustomResourceClient) if cls is not None else CustomResourceClient)(conn, kind)


__all__ = ["BY_KIND", "ResourceClient", "Source", "for_kind"]
