"""NetworkPolicy: Calico's own (a custom resource) *and* Kubernetes NetworkPolicies.

A Kubernetes NetworkPolicy shows as a read-only ``knp.default.<name>`` policy
(converted as Calico's ``k8s/conversion`` does, :func:`conversion.knp_to_wire`),
so the policy engine sees both; it is changed through networking.k8s.io only.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio import client as k8s

from libcalico.backend.kubernetes import conversion
from libcalico.backend.kubernetes.resources.base import Source
from libcalico.backend.kubernetes.resources.custom import CustomResourceClient
from libcalico.errors import OperationNotSupported
from libcalico.model import KVPair, ResourceKey


def _refuse_knp(key: ResourceKey, operation: str) -> None:
    if key.name.startswith(conversion.KNP_PREFIX):
        raise OperationNotSupported(operation, key, "Kubernetes NetworkPolicies are changed through the "
                                                    "Kubernetes API (networking.k8s.io)")


class NetworkPolicyClient(CustomResourceClient):
    async def sources(self) -> list[Source]:
        net = k8s.NetworkingV1Api(await self.conn.api())

        def knp_list(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            return net.list_namespaced_network_policy(*args, **kwargs) if args else \
                net.list_network_policy_for_all_namespaces(**kwargs)

        return [await self.custom_source(),
                Source("networkpolicies.networking.k8s.io", True, knp_list,
                       lambda ns: (((ns,), {}) if ns else ((), {})), conversion.knp_to_wire)]

    async def create(self, kv: KVPair) -> KVPair:
        _refuse_knp(kv.key, "Create")
        return await super().create(kv)

    async def update(self, kv: KVPair) -> KVPair:
        _refuse_knp(kv.key, "Update")
        return await super().update(kv)

    async def delete(self, key: ResourceKey, revision: str) -> KVPair:
        _refuse_knp(key, "Delete")
        return await super().delete(key, revision)
