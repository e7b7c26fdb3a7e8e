"""etcd mode: Kubernetes Namespaces and ServiceAccounts mirrored as Calico Profiles.

On the Kubernetes datastore the backend derives ``kns.<namespace>`` and
``ksa.<namespace>.<account>`` from the Kubernetes objects themselves. On etcd,
Calico's namespace and serviceaccount controllers write them
(kube-controllers/pkg/controllers/namespace, serviceaccount; the converters in
pkg/converter). The profile is the one the Kubernetes backend derives
(:func:`libcalico.backend.kubernetes.conversion.namespace_profile`), so the policy
engine sees the same labels on both datastores. A reconcile makes one profile
match its object (written when it differs, deleted when the object is gone); a
full sync also deletes the ``kns.``/``ksa.`` profiles whose object is gone.
"""

from __future__ import annotations

import logging

from libcalico import api
from libcalico import client as calico_client
from libcalico.backend.kubernetes import conversion
from libcalico.errors import AlreadyExists, Conflict, NotFound

from controller.kube import JSON, KubeClient

log = logging.getLogger(__name__)

NS = conversion.NAMESPACE_PROFILE_PREFIX
SA = conversion.SERVICE_ACCOUNT_PROFILE_PREFIX


def _labels(obj: JSON) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


class ProfileSync:
    def __init__(self, *, calico: calico_client.Client, kube: KubeClient) -> None:
        self.calico = calico
        self.kube = kube

    async def _write(self, desired: api.Profile) -> None:
        try:
            current = await self.calico.get(api.Profile, desired.name)
        except NotFound:
            log.info("Creating profile %s", desired.name)
            try:
                await self.calico.create(desired)
            except AlreadyExists as exc:
                raise Conflict(f"Profile({desired.name}) appeared meanwhile") from exc
            return
        assert isinstance(current, api.Profile)
        if current.spec == desired.spec:
            return
        log.info("Updating profile %s", desired.name)
        await self.calico.update(current.model_copy(update={"spec": desired.spec}))

    async def _delete(self, name: str) -> None:
        try:
            await self.calico.delete(api.Profile, name)
            log.info("Deleted profile %s", name)
        except NotFound:
            pass

    async def namespace(self, name: str) -> None:
        ns = await self.kube.get_namespace(name)
        if ns is None:
            await self._delete(NS + name)
            return
        await self._write(api.Profile.model_validate(conversion.namespace_profile(name, _labels(ns))))

    async def serviceaccount(self, namespace: str, name: str) -> None:
        sa = await self.kube.get_serviceaccount(namespace, name)
        if sa is None:
            await self._delete(f"{SA}{namespace}.{name}")
            return
        await self._write(api.Profile.model_validate(conversion.serviceaccount_profile(namespace, name, _labels(sa))))

    async def full_sync(self, *, namespaces: bool, serviceaccounts: bool) -> None:
        """Every profile written as its object says; profiles of objects that are gone deleted."""
        existing = {p.name for p in (await self.calico.list(api.Profile)).items}
        wanted: set[str] = set()
        if namespaces:
            for ns in await self.kube.list_namespaces():
                name = ns["metadata"]["name"]
                wanted.add(NS + name)
                await self._write(api.Profile.model_validate(conversion.namespace_profile(name, _labels(ns))))
            for stale in sorted(p for p in existing if p.startswith(NS) and p not in wanted):
                await self._delete(stale)
        if serviceaccounts:
            for sa in await self.kube.list_serviceaccounts():
                meta = sa["metadata"]
                wanted.add(f"{SA}{meta['namespace']}.{meta['name']}")
                await self._write(api.Profile.model_validate(
                    conversion.serviceaccount_profile(meta["namespace"], meta["name"], _labels(sa))))
            for stale in sorted(p for p in existing if p.startswith(SA) and p not in wanted):
                await self._delete(stale)


__all__ = ["ProfileSync"]
