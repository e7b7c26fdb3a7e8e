"""The Kubernetes datastore (``DATASTORE_TYPE=kubernetes``), through kubernetes-asyncio.

Most Calico clusters keep Calico's state in the Kubernetes API. This backend
meets the same contract as the etcd one (:mod:`libcalico.backend.api`, one
parametrised test suite), mapping each kind onto one or more Kubernetes
*sources*:

* the CRD kinds onto custom resources in ``crd.projectcalico.org/v1`` or, in
  Calico's no-API-server mode, ``projectcalico.org/v3``. The group is chosen as
  libcalico-go chooses it: ``CALICO_API_GROUP`` if set, else discovery (v3
  when only projectcalico.org is served);
* Node onto Kubernetes Nodes, WorkloadEndpoint onto Pods (see
  :mod:`.conversion`); writes become patches of the Node's annotations and
  labels and of the Pod's status annotations, as Calico's CNI plugin does;
* NetworkPolicy onto Calico's CRD *and* Kubernetes NetworkPolicies, which show
  as read-only ``knp.default.<name>`` policies.

Revisions are resourceVersions. Writes with a revision carry it (PUT body,
patch metadata, DeleteOptions preconditions) so the API server does the
compare-and-swap and answers 409. A kind served from two sources has a
composite revision ``<rv1>/<rv2>`` for its lists and watch events, as in
libcalico-go; a plain revision applies to each source. A watch whose
resourceVersion is too old (410 Gone, sent as an ERROR event) raises
:class:`WatchCompacted`, and :mod:`libcalico.watching` re-lists. Server-side
watch timeouts and BOOKMARK events just move the watch on.

The official client is used as an async library (kubernetes-asyncio, its
generated twin), because every daemon here is asyncio; no HTTP is spoken by
hand.

Layout, as libcalico-go's ``k8s`` package: :mod:`.connection` (the client,
the API group), :mod:`.errors` (the one error mapping), :mod:`.conversion`
(pure: Kubernetes objects to and from v3 wire), and :mod:`.resources`, one
client per kind behind :class:`.resources.base.ResourceClient`; this module
only dispatches by kind.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

from kubernetes_asyncio import client as k8s

from libcalico.api.registry import ModelT
from libcalico.backend import static
from libcalico.backend.api import WatchEvent
from libcalico.backend.kubernetes import resources
from libcalico.backend.kubernetes.connection import API_GROUPS, Connection, KubeConfig
from libcalico.backend.kubernetes.errors import map_error
from libcalico.backend.kubernetes.resources.base import WATCH_TIMEOUT_SECONDS
from libcalico.model import KVList, KVPair, ResourceKey, ResourceListOptions


class KubernetesBackend:
    """A :class:`~libcalico.backend.api.Backend` on the Kubernetes API (see the module docstring)."""

    def __init__(self, config: KubeConfig) -> None:
        self._conn = Connection(config)
        self._clients: dict[str, resources.ResourceClient] = {}

    def _for(self, kind: str) -> resources.ResourceClient:
        client = self._clients.get(kind)
        if client is None:
            client = self._clients[kind] = resources.for_kind(self._conn, kind)
        return client

    @property
    def api_group(self) -> str:
        """The group custom resources are stored in (known after the first request)."""
        return self._conn.group

    async def create(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        return await self._for(kv.key.kind).create(kv)

    async def update(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        return await self._for(kv.key.kind).update(kv)

    async def apply(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        return await self._for(kv.key.kind).apply(kv)

    async def delete(self, key: ResourceKey[ModelT], revision: str = "") -> KVPair[ModelT]:
        return await self._for(key.kind).delete(key, revision)

    async def get(self, key: ResourceKey[ModelT]) -> KVPair[ModelT]:
        if static.is_default_allow(key):  # k8s/resources/profile.go: the static profile
            return static.default_allow_profile()
        return await self._for(key.kind).get(key)

    async def list(self, opts: ResourceListOptions[ModelT]) -> KVList[ModelT]:
        return static.with_default_allow(opts, await self._for(opts.kind).list(opts))

    def watch(self, opts: ResourceListOptions, revision: str) -> AsyncIterator[WatchEvent]:
        return self._for(opts.kind).watch(opts, revision)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded (BGPPeer passwords refer to keys of secrets)."""
        api = await self._conn.api()
        try:
            secret = self._conn.plain(await k8s.CoreV1Api(api).read_namespaced_secret(name, namespace))
        except Exception as exc:
            raise map_error(exc, f"Secret({namespace}/{name})", "read secret") from exc
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    async def close(self) -> None:
        await self._conn.close()


__all__ = ["API_GROUPS", "KubeConfig", "KubernetesBackend", "WATCH_TIMEOUT_SECONDS"]
