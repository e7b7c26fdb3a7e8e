"""Node: Calico's Node is the Kubernetes Node, its BGP and tunnel fields in Calico's annotations.

Nodes come from Kubernetes (the kubelet registers them), so Calico can neither
create nor delete one here; an update is a patch of the Node's Calico
annotations and labels, with its resourceVersion for the compare-and-swap
(:func:`conversion.node_patch`), as calico-node writes them.
"""

from __future__ import annotations

from kubernetes_asyncio import client as k8s

from libcalico.api.endpoints import Node
from libcalico.backend.kubernetes import conversion
from libcalico.backend.kubernetes.errors import map_error
from libcalico.backend.kubernetes.resources.base import ResourceClient, Source
from libcalico.errors import OperationNotSupported
from libcalico.model import KVPair, ResourceKey

WHY = "Nodes come from Kubernetes Nodes"


class NodeClient(ResourceClient):
    async def sources(self) -> list[Source]:
        core = k8s.CoreV1Api(await self.conn.api())
        return [Source("nodes", False, core.list_node, lambda ns: ((), {}), conversion.k8s_node_to_wire,
                       lambda ns, name: core.read_node(name))]

    async def create(self, kv: KVPair) -> KVPair:
        raise OperationNotSupported("Create", kv.key, WHY)

    async def delete(self, key: ResourceKey, revision: str) -> KVPair:
        raise OperationNotSupported("Delete", key, WHY)

    async def apply(self, kv: KVPair) -> KVPair:
        return await self.update(kv.with_revision(""))

    async def update(self, kv: KVPair) -> KVPair:
        api = await self.conn.api()
        wire = kv.value.to_wire()
        wire.setdefault("metadata", {})["resourceVersion"] = kv.revision
        try:
            node = await k8s.CoreV1Api(api).patch_node(kv.key.name, conversion.node_patch(wire))
        except Exception as exc:
            raise map_error(exc, kv.key, "update (patch node)") from exc
        return self.conn.pair(Node.KIND, conversion.k8s_node_to_wire(self.conn.plain(node)))
