"""The kinds Calico keeps as custom resources (IPPool, BGPPeer, FelixConfiguration, IPAM's kinds, ...).

In ``crd.projectcalico.org/v1`` or, in Calico's no-API-server mode,
``projectcalico.org/v3`` (the group the connection chose). Writes carry the
revision as the object's resourceVersion (PUT) or as a DeleteOptions
precondition, so the API server does the compare-and-swap and answers 409.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio import client as k8s

from libcalico.api.meta import Resource
from libcalico.backend.kubernetes import conversion
from libcalico.backend.kubernetes.connection import JSON
from libcalico.backend.kubernetes.errors import map_error
from libcalico.backend.kubernetes.resources.base import ResourceClient, Source
from libcalico.model import KVPair, ResourceKey, resource_class


class CustomResourceClient(ResourceClient):
    async def custom_source(self) -> Source:
        custom = k8s.CustomObjectsApi(await self.conn.api())
        cls = resource_class(self.kind)
        group, version = self.conn.group.split("/")

        def args(ns: str) -> tuple[tuple[Any, ...], JSON]:
            if cls.NAMESPACED and ns:
                return (group, version, ns, cls.PLURAL), {}
            return (group, version, cls.PLURAL), {}

        def listing(*a: Any, **kw: Any) -> Awaitable[Any]:
            if len(a) == 4:
                return custom.list_namespaced_custom_object(*a, **kw)
            return custom.list_cluster_custom_object(*a, **kw)

        return Source(f"{cls.PLURAL}.{group}", cls.NAMESPACED, listing, args, conversion.crd_to_wire, by_name=True)

    async def sources(self) -> list[Source]:
        return [await self.custom_source()]

    def _body(self, kv: KVPair) -> JSON:
        value: Resource = kv.value
        meta = value.metadata.model_copy(update={"resource_version": kv.revision})
        return conversion.resource_to_crd(value.model_copy(update={"metadata": meta}), self.conn.group)

    async def _path(self, key: ResourceKey) -> tuple[k8s.CustomObjectsApi, str, str, str]:
        custom = k8s.CustomObjectsApi(await self.conn.api())
        group, version = self.conn.group.split("/")
        return custom, group, version, key.resource_class.PLURAL

    async def create(self, kv: KVPair) -> KVPair:
        custom, group, version, plural = await self._path(kv.key)
        body = self._body(kv.with_revision(""))
        try:
            if kv.key.namespaced:
                out = await custom.create_namespaced_custom_object(group, version, kv.key.namespace, plural, body)
            else:
                out = await custom.create_cluster_custom_object(group, version, plural, body)
        except Exception as exc:
            raise map_error(exc, kv.key, "create") from exc
        return self.conn.pair(kv.key.kind, conversion.crd_to_wire(out))

    async def update(self, kv: KVPair) -> KVPair:
        custom, group, version, plural = await self._path(kv.key)
        body = self._body(kv)
        try:
            if kv.key.namespaced:
                out = await custom.replace_namespaced_custom_object(group, version, kv.key.namespace, plural,
                                                                    kv.key.name, body)
            else:
                out = await custom.replace_cluster_custom_object(group, version, plural, kv.key.name, body)
            if body.get("status") and out.get("status") != body["status"]:
                # The kind has a status subresource (its CRD says so), where the API server ignores
                # .status in a PUT of the object: write it through /status, as Calico's UpdateStatus.
                body = {**body, "metadata": {**body["metadata"], "resourceVersion": out["metadata"]["resourceVersion"]}}
                if kv.key.namespaced:
                    out = await custom.replace_namespaced_custom_object_status(group, version, kv.key.namespace,
                                                                               plural, kv.key.name, body)
                else:
                    out = await custom.replace_cluster_custom_object_status(group, version, plural, kv.key.name, body)
        except Exception as exc:
            raise map_error(exc, kv.key, "update") from exc
        return self.conn.pair(kv.key.kind, conversion.crd_to_wire(out))

    async def delete(self, key: ResourceKey, revision: str) -> KVPair:
        custom, group, version, plural = await self._path(key)
        body = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(resource_version=revision) if revision
                                   else None)
        try:
            if key.namespaced:
                out = await custom.delete_namespaced_custom_object(group, version, key.namespace, plural, key.name,
                                                                   body=body)
            else:
                out = await custom.delete_cluster_custom_object(group, version, plural, key.name, body=body)
        except Exception as exc:
            raise map_error(exc, key, "delete") from exc
        return self.conn.pair(key.kind, conversion.crd_to_wire(out))
