"""IPPools from an operator.tigera.io/v1 Installation (``spec.calicoNetwork.ipPools[]``).

What the Tigera operator does for pools, on the fields the issue names: each
entry becomes an IPPool of the same name, with the operator's defaults (name
``default-ipv4-ippool``, blockSize 26 for IPv4 and 122 for IPv6, encapsulation
IPIP, natOutgoing Enabled, nodeSelector ``all()``) and its validation
(encapsulation one of IPIP, IPIPCrossSubnet, VXLAN, VXLANCrossSubnet, None; IPIP
only on IPv4; blockSize 20-32 for IPv4, 116-128 for IPv6). A pool's cidr and
blockSize are never changed once it exists (the operator refuses that, and so
does libcalico's client).

All entries are checked before anything is written: an invalid Installation
changes nothing and gets a ``Ready=False`` condition whose message names the
field; a good one gets ``Ready=True``. The conditions are written to the
Installation's status subresource. This controller is pycalico's addition (the
operator does it in Calico's deployments): enabled by ``installation`` in
ENABLED_CONTROLLERS.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from libcalico import api
from libcalico import client as calico_client
from libcalico.errors import NotFound, ValidationError

from controller.kube import JSON, KubeClient

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "operator.tigera.io", "v1", "installations"
ENCAPSULATION = {"IPIP": ("Always", "Never"), "IPIPCrossSubnet": ("CrossSubnet", "Never"),
                 "VXLAN": ("Never", "Always"), "VXLANCrossSubnet": ("Never", "CrossSubnet"),
                 "None": ("Never", "Never")}


class InvalidInstallation(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def desired_pools(spec: JSON) -> list[api.IPPool]:
    """The pools an Installation's spec asks for; :class:`InvalidInstallation` naming the first bad field."""
    entries = ((spec.get("calicoNetwork") or {}).get("ipPools")) or []
    if not isinstance(entries, list):
        raise InvalidInstallation("spec.calicoNetwork.ipPools", "must be a list")
    out: list[api.IPPool] = []
    for i, entry in enumerate(entries):
        where = f"spec.calicoNetwork.ipPools[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInstallation(where, "must be an object")
        try:
            net = ipaddress.ip_network(str(entry.get("cidr", "")), strict=False)
        except ValueError:
            raise InvalidInstallation(f"{where}.cidr", f"invalid CIDR {entry.get('cidr')!r}") from None
        v6 = net.version == 6
        block = entry.get("blockSize", 122 if v6 else 26)
        lo, hi = (116, 128) if v6 else (20, 32)
        if not isinstance(block, int) or isinstance(block, bool) or not lo <= block <= hi:
            raise InvalidInstallation(f"{where}.blockSize", f"must be an integer from {lo} to {hi}, not {block!r}")
        encap = entry.get("encapsulation", "IPIP")
        if encap not in ENCAPSULATION:
            raise InvalidInstallation(f"{where}.encapsulation", f"{encap!r} is not one of "
                                                                f"{', '.join(ENCAPSULATION)}")
        if v6 and encap.startswith("IPIP"):
            raise InvalidInstallation(f"{where}.encapsulation", "IPIP is not supported on an IPv6 pool")
        nat = entry.get("natOutgoing", "Enabled")
        if nat not in ("Enabled", "Disabled"):
            raise InvalidInstallation(f"{where}.natOutgoing", f"must be Enabled or Disabled, not {nat!r}")
        name = entry.get("name") or ("default-ipv6-ippool" if v6 else "default-ipv4-ippool")
        ipip, vxlan = ENCAPSULATION[encap]
        try:
            out.append(api.IPPool.model_validate({"metadata": {"name": name}, "spec": {
                "cidr": str(net), "blockSize": block, "ipipMode": ipip, "vxlanMode": vxlan,
                "natOutgoing": nat == "Enabled", "nodeSelector": entry.get("nodeSelector", "all()"),
                "disableBGPExport": bool(entry.get("disableBGPExport", False))}}))
        except Exception as exc:
            raise InvalidInstallation(where, str(exc).splitlines()[0]) from exc
    return out


def _condition(ok: bool, reason: str, message: str) -> JSON:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "Ready", "status": "True" if ok else "False", "reason": reason, "message": message,
            "lastTransitionTime": now}


class InstallationSync:
    def __init__(self, *, calico: calico_client.Client, kube: KubeClient) -> None:
        self.calico = calico
        self.kube = kube

    async def _read(self, name: str) -> JSON | None:
        try:
            got: JSON = await k8s.CustomObjectsApi(self.kube.api).get_cluster_custom_object(GROUP, VERSION, PLURAL,
                                                                                             name)
            return got
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _status(self, inst: JSON, condition: JSON) -> None:
        old = [c for c in ((inst.get("status") or {}).get("conditions") or []) if c.get("type") == "Ready"]
        if old and all(old[0].get(k) == condition[k] for k in ("status", "reason", "message")):
            return
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Installation", "metadata": inst["metadata"],
                "status": {**(inst.get("status") or {}), "conditions": [condition]}}
        await k8s.CustomObjectsApi(self.kube.api).replace_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, inst["metadata"]["name"], body)

    async def reconcile(self, name: str) -> None:
        inst = await self._read(name)
        if inst is None:
            return
        try:
            pools = desired_pools(inst.get("spec") or {})
            current: dict[str, api.IPPool] = {}
            for pool in pools:
                try:
                    got = await self.calico.get(api.IPPool, pool.name)
                except NotFound:
                    continue
                assert isinstance(got, api.IPPool)
                current[pool.name] = got
                i = pools.index(pool)
                for field, old, new in (("cidr", got.spec.cidr, pool.spec.cidr),
                                        ("blockSize", got.spec.effective_block_size(), pool.spec.block_size)):
                    if old != new:
                        raise InvalidInstallation(f"spec.calicoNetwork.ipPools[{i}].{field}",
                                                  f"cannot change an existing pool's {field} ({old} -> {new})")
        except InvalidInstallation as exc:
            log.warning("Installation %s is invalid; no pool changed: %s", name, exc)
            await self._status(inst, _condition(False, "InvalidPool", str(exc)))
            return
        for pool in pools:
            old_pool = current.get(pool.name)
            if old_pool is None:
                log.info("Creating IPPool %s from Installation %s", pool.name, name)
                await self.calico.create(pool)
                continue
            # Only the fields an Installation sets are compared and written: the others (allowedUses,
            # assignmentMode, ...) keep what the pool has, so an unchanged Installation writes nothing.
            spec = old_pool.spec.model_copy(update={f: getattr(pool.spec, f) for f in pool.spec.model_fields_set})
            if spec != old_pool.spec:
                log.info("Updating IPPool %s from Installation %s", pool.name, name)
                try:
                    await self.calico.update(old_pool.model_copy(update={"spec": spec}))
                except ValidationError as exc:
                    await self._status(inst, _condition(False, "InvalidPool", str(exc)))
                    return
        await self._status(inst, _condition(True, "PoolsReconciled", f"{len(pools)} IP pool(s) as specified"))


__all__ = ["ENCAPSULATION", "InstallationSync", "InvalidInstallation", "desired_pools"]

