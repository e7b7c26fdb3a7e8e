"""WorkloadEndpoint: a Pod is its endpoint, named ``<node>-k8s-<pod>-<endpoint>``.

Reads convert the Pod (:func:`conversion.pod_to_wire`; pods on the host
network, or finished, are no endpoints). Writes are what Calico's CNI plugin
does on this datastore: a patch of the Pod's status annotations
(``cni.projectcalico.org/podIP(s)``, containerID), with the resourceVersion for
the compare-and-swap; a delete clears them. The Pod itself stays Kubernetes'.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio import client as k8s

from libcalico.api.endpoints import WorkloadEndpoint
from libcalico.backend.kubernetes import conversion
from libcalico.backend.kubernetes.connection import JSON
from libcalico.backend.kubernetes.errors import map_error
from libcalico.backend.kubernetes.resources.base import ResourceClient, Source
from libcalico.errors import NotFound, OperationNotSupported
from libcalico.model import KVPair, ResourceKey
from libcalico.names import parse_workload_endpoint_name


def _pod_wep(pod: JSON) -> JSON | None:
    return conversion.pod_to_wire(pod) if conversion.pod_is_workload(pod) else None


class WorkloadEndpointClient(ResourceClient):
    async def sources(self) -> list[Source]:
        core = k8s.CoreV1Api(await self.conn.api())

        def args(ns: str) -> tuple[tuple[Any, ...], JSON]:
            return ((ns,), {}) if ns else ((), {})

        def pods(*a: Any, **kw: Any) -> Awaitable[Any]:
            return core.list_namespaced_pod(*a, **kw) if a else core.list_pod_for_all_namespaces(**kw)

        return [Source("pods", True, pods, args, _pod_wep)]

    def _pod_name(self, key: ResourceKey, operation: str) -> str:
        ids = parse_workload_endpoint_name(key.name)
        if ids is None or ids.orchestrator != "k8s":
            if operation == "Get":
                raise NotFound(key, "not the name of a Kubernetes pod's endpoint")
            raise OperationNotSupported(operation, key, "on the Kubernetes datastore a WorkloadEndpoint is "
                                                        "named <node>-k8s-<pod>-<endpoint> after its pod")
        return ids.pod

    async def get(self, key: ResourceKey) -> KVPair:
        pod_name = self._pod_name(key, "Get")
        api = await self.conn.api()
        try:
            pod = self.conn.plain(await k8s.CoreV1Api(api).read_namespaced_pod(pod_name, key.namespace))
        except Exception as exc:
            raise map_error(exc, key, "get pod") from exc
        wire = _pod_wep(pod)
        if wire is None or wire["metadata"]["name"] != key.name:
            raise NotFound(key)
        return self.conn.pair(key.kind, wire)

    async def create(self, kv: KVPair) -> KVPair:
        return await self._patch(kv, "", "Create")

    async def update(self, kv: KVPair) -> KVPair:
        return await self._patch(kv, kv.revision, "Update")

    async def apply(self, kv: KVPair) -> KVPair:
        return await self.update(kv.with_revision(""))

    async def delete(self, key: ResourceKey, revision: str) -> KVPair:
        current = await self.get(key)
        cleared = current.value.model_copy(update={"spec": current.value.spec.model_copy(
            update={"ip_networks": [], "container_id": ""})})
        await self._patch(KVPair(key, cleared, revision), revision, "Delete")
        return current

    async def _patch(self, kv: KVPair, revision: str, operation: str) -> KVPair:
        pod_name = self._pod_name(kv.key, operation)
        api = await self.conn.api()
        patch = conversion.wep_pod_patch(kv.value.to_wire(), revision) if operation != "Delete" else {
            "metadata": {"annotations": {conversion.POD_IP: "", conversion.POD_IPS: ""},
                         **({"resourceVersion": revision} if revision else {})}}
        try:
            pod = await k8s.CoreV1Api(api).patch_namespaced_pod_status(pod_name, kv.key.namespace, patch)
        except Exception as exc:
            raise map_error(exc, kv.key, f"{operation.lower()} (patch pod {kv.key.namespace}/{pod_name})") from exc
        return self.conn.pair(WorkloadEndpoint.KIND, conversion.pod_to_wire(self.conn.plain(pod)))
