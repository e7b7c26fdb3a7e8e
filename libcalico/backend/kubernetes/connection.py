"""One connection to the Kubernetes API, shared by every resource kind's client.

Loads the kubeconfig (or the in-cluster service account), applies
``K8S_API_ENDPOINT``, and chooses Calico's API group as libcalico-go does:
``CALICO_API_GROUP`` if set, else discovery (projectcalico.org/v3 only when
that group is served and crd.projectcalico.org is not). Connecting is lazy and
happens once; a stored object's conversion into a Calico resource
(:meth:`Connection.pair`) lives here too, because every kind needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
import pydantic
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from libcalico.api import crds
from libcalico.api.meta import Resource
from libcalico.backend import codec
from libcalico.backend.kubernetes import conversion
from libcalico.errors import CorruptEntry, DatastoreUnavailable, ErroredField, ValidationError
from libcalico.model import KVPair, ResourceKey, resource_class

log = logging.getLogger(__name__)

JSON = dict[str, Any]
V1 = conversion.V1_API_VERSION
V3 = conversion.V3_API_VERSION
API_GROUPS = (V1, V3)


@dataclass(frozen=True, slots=True)
class KubeConfig:
    kubeconfig: str = ""          # path; "" = in-cluster service account
    api_endpoint: str = ""        # overrides the kubeconfig's server (K8S_API_ENDPOINT)
    api_group: str = ""           # CALICO_API_GROUP: crd.projectcalico.org/v1 or projectcalico.org/v3; "" = discover


class Connection:
    """The API client, the chosen group, and conversions every kind's client shares."""

    def __init__(self, config: KubeConfig) -> None:
        self.config = config
        self._api: k8s.ApiClient | None = None
        self.group = ""
        self._lock = asyncio.Lock()

    async def api(self) -> k8s.ApiClient:
        async with self._lock:
            if self._api is not None:
                return self._api
            cfg = k8s.Configuration()
            try:
                if self.config.kubeconfig:
                    await k8s_config.load_kube_config(config_file=self.config.kubeconfig, client_configuration=cfg)
                else:
                    k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except (k8s_config.ConfigException, OSError, ValueError, TypeError) as exc:
                raise DatastoreUnavailable(f"cannot load the Kubernetes client configuration "
                                           f"({self.config.kubeconfig or 'in-cluster'}): {exc}") from exc
            if self.config.api_endpoint:
                cfg.host = self.config.api_endpoint
            api = k8s.ApiClient(cfg)
            try:
                self.group = self.config.api_group or await self._discover(api)
            except BaseException:
                await api.close()
                raise
            if self.group not in API_GROUPS:
                await api.close()
                raise ValidationError([ErroredField("calicoAPIGroup", f"must be one of {', '.join(API_GROUPS)}",
                                                    self.group)])
            self._api = api
            return api

    @staticmethod
    async def _discover(api: k8s.ApiClient) -> str:
        """libcalico-go's UsingV3CRDs: v3 only when projectcalico.org is served and crd.projectcalico.org not."""
        try:
            groups = await k8s.ApisApi(api).get_api_versions()
        except (ApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            log.warning("cannot discover Calico's API group (%s); using %s", exc, V1)
            return V1
        names = {g.name for g in groups.groups or []}
        if crds.V3_GROUP in names and crds.V1_GROUP not in names:
            return V3
        return V1

    def plain(self, obj: Any) -> JSON:
        """A client model (or a dict already) as the JSON the server sent."""
        if isinstance(obj, dict):
            return obj
        assert self._api is not None
        out: JSON = self._api.sanitize_for_serialization(obj)
        return out

    def pair(self, kind: str, wire: JSON) -> KVPair:
        """A v3 wire object as a stored pair; :class:`CorruptEntry` when it is not a valid ``kind``."""
        cls = resource_class(kind)
        try:
            value: Resource = cls.model_validate(wire)
        except pydantic.ValidationError as exc:
            meta = wire.get("metadata") or {}
            key = ResourceKey(cls, str(meta.get("name", "")), str(meta.get("namespace", "") or ""))
            raise CorruptEntry(key, codec.reasons(exc)) from exc
        return KVPair(ResourceKey.for_resource(value), value, value.metadata.resource_version)

    async def close(self) -> None:
        if self._api is not None:
            with contextlib.suppress(Exception):
                await self._api.close()
            self._api = None
