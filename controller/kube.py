"""The controllers' reads of Kubernetes, through the official client (kubernetes-asyncio).

Objects come back as the JSON the API server sent (``_preload_content=False``):
the reconcilers only need a few fields of each, and building the client's model
classes for ten thousand pods costs more than the GC itself. Every call is
counted in :attr:`KubeClient.calls` so tests and the benchmark can say how many
requests a sync made.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

JSON = dict[str, Any]


async def load_configuration(kubeconfig: str = "") -> k8s.Configuration:
    """The client configuration: the kubeconfig file if given, else the pod's service account."""
    cfg = k8s.Configuration()
    if kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return cfg


class KubeClient:
    """Nodes and pods, read as plain JSON; 404 is ``None``."""

    def __init__(self, configuration: k8s.Configuration) -> None:
        self.configuration = configuration
        self._api: k8s.ApiClient | None = None
        self.calls = 0

    @property
    def api(self) -> k8s.ApiClient:
        """The client, made on first use (it needs the running event loop)."""
        if self._api is None:
            self._api = k8s.ApiClient(self.configuration)
        return self._api

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def _json(self, call: Any, *args: Any, **kwargs: Any) -> JSON | None:
        self.calls += 1
        try:
            resp = await call(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        try:
            body = await resp.read()
            if resp.status == 404:  # without preloading, the client hands errors back as responses
                return None
            if resp.status >= 400:
                raise ApiException(status=resp.status, reason=resp.reason)
            out: JSON = json.loads(body)
        finally:
            resp.release()
        return out

    async def list_nodes(self) -> list[JSON]:
        got = await self._json(self.core.list_node)
        return list((got or {}).get("items") or [])

    async def get_node(self, name: str) -> JSON | None:
        return await self._json(self.core.read_node, name)

    async def list_pods(self) -> list[JSON]:
        got = await self._json(self.core.list_pod_for_all_namespaces)
        return list((got or {}).get("items") or [])

    async def get_pod(self, namespace: str, name: str) -> JSON | None:
        return await self._json(self.core.read_namespaced_pod, name, namespace)

    async def list_namespaces(self) -> list[JSON]:
        got = await self._json(self.core.list_namespace)
        return list((got or {}).get("items") or [])

    async def get_namespace(self, name: str) -> JSON | None:
        return await self._json(self.core.read_namespace, name)

    async def list_serviceaccounts(self) -> list[JSON]:
        got = await self._json(self.core.list_service_account_for_all_namespaces)
        return list((got or {}).get("items") or [])

    async def get_serviceaccount(self, namespace: str, name: str) -> JSON | None:
        return await self._json(self.core.read_namespaced_service_account, name, namespace)

    @property
    def networking(self) -> k8s.NetworkingV1Api:
        return k8s.NetworkingV1Api(self.api)

    async def list_networkpolicies(self) -> list[JSON]:
        got = await self._json(self.networking.list_network_policy_for_all_namespaces)
        return list((got or {}).get("items") or [])

    async def get_networkpolicy(self, namespace: str, name: str) -> JSON | None:
        return await self._json(self.networking.read_namespaced_network_policy, name, namespace)


__all__ = ["JSON", "KubeClient", "load_configuration"]
