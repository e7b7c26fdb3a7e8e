"""Profile: on the Kubernetes datastore, Namespaces and ServiceAccounts are the profiles.

As libcalico-go's ``k8s/resources/profile.go``: each Namespace is the profile
``kns.<namespace>`` (allow all, the namespace's labels as ``pcns.`` labels),
each ServiceAccount ``ksa.<namespace>.<name>`` (its labels as ``pcsa.``
labels). Relabelling a namespace changes the profile, so every pod in it is
re-evaluated by policy without a restart. Read-only: they change through the
Kubernetes API.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio import client as k8s

from libcalico.backend.kubernetes import conversion
from libcalico.backend.kubernetes.connection import JSON
from libcalico.backend.kubernetes.resources.base import ResourceClient, Source


class ProfileClient(ResourceClient):
    async def sources(self) -> list[Source]:
        core = k8s.CoreV1Api(await self.conn.api())

        def everywhere(_ns: str) -> tuple[tuple[Any, ...], JSON]:
            return ((), {})

        def namespaces(*a: Any, **kw: Any) -> Awaitable[Any]:
            return core.list_namespace(**kw)

        def service_accounts(*a: Any, **kw: Any) -> Awaitable[Any]:
            return core.list_service_account_for_all_namespaces(**kw)

        return [Source("namespaces", False, namespaces, everywhere, conversion.k8s_namespace_to_wire),
                Source("serviceaccounts", False, service_accounts, everywhere,
                       conversion.k8s_serviceaccount_to_wire)]
