"""The ``calico`` CNI plugin: the pod's veth, its addresses (from the IPAM plugin) and its endpoint.

ADD, in Calico's order: work out the endpoint's identity (node, ``k8s`` and
the pod from CNI_ARGS, else ``cni`` and the container id), run the IPAM plugin
named in ``ipam.type`` from CNI_PATH (delegation, as the spec has it), wire the
veth (:mod:`cni.dataplane`), then write the WorkloadEndpoint. Any failure after
IPAM runs the IPAM plugin's DEL and removes the veth, so a failed ADD leaks
nothing. An ADD repeated for the same container answers what the endpoint
already records. DEL undoes all of it and succeeds when there is nothing left
to undo. CHECK compares the endpoint, the addresses and the interfaces.

Each invocation holds a lock on its endpoint (a byte of
``cni-endpoints.lock`` beside the IPAM lock, chosen by the host interface's
name) from its first look at the endpoint to its last write. Without it, ADDs
racing for one container all found no endpoint, all wired the same veth (each
deleting the other's) and a loser's undo released the address the winner
answered with. The spec says a runtime never does that; a runtime with a bug
must not leak or share an address either. Pods other than this one are not
held up: a byte each, not the whole file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator
from typing import Any

from cni import dataplane
from cni.config import PLUGIN_FAILURE, CNIError, Invocation
from cni.ipam_plugin import LOCK_FILE, ip_entries
from libcalico import api, backend
from libcalico.backend.api import Backend
from libcalico.errors import CalicoError, NotFound
from libcalico.model import KVPair, ResourceKey
from libcalico.names import WorkloadEndpointIdentifiers, veth_name_for_workload

IPAM_TIMEOUT = 120
ENDPOINT_LOCKS = "cni-endpoints.lock"


@contextlib.asynccontextmanager
async def endpoint_lock(ipam_lock_file: str, host_if: str) -> AsyncIterator[None]:
    """Hold the endpoint's lock: an fcntl record lock on one byte, chosen by ``host_if``."""
    path = os.path.join(os.path.dirname(ipam_lock_file or LOCK_FILE), ENDPOINT_LOCKS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    offset = int.from_bytes(hashlib.sha256(host_if.encode()).digest()[:5], "big")  # 2**40 bytes: no collisions
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.lockf, fd, fcntl.LOCK_EX, 1, offset)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def identity(inv: Invocation, node: str) -> tuple[WorkloadEndpointIdentifiers, str, str]:
    """(identifiers, namespace, host interface name) of the endpoint this invocation is about."""
    if inv.pod_name:
        ns = inv.pod_namespace or "default"
        ids = WorkloadEndpointIdentifiers(node, "k8s", inv.pod_name, inv.ifname)
        return ids, ns, veth_name_for_workload(ns, inv.pod_name)
    ids = WorkloadEndpointIdentifiers(node, "cni", inv.container_id, inv.ifname)
    return ids, "default", veth_name_for_workload("cni", inv.container_id)


def _find_plugin(name: str, path: list[str]) -> str:
    for d in path:
        candidate = os.path.join(d, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise CNIError(PLUGIN_FAILURE, f"failed to find plugin {name!r} in path {path}")


def delegate_ipam(inv: Invocation, command: str) -> dict[str, Any] | None:
    assert inv.conf.ipam is not None
    plugin = _find_plugin(inv.conf.ipam.type, inv.path)
    env = {**inv.env, "CNI_COMMAND": command}
    r = subprocess.run([plugin], input=inv.raw, env=env, capture_output=True, timeout=IPAM_TIMEOUT)
    if r.returncode != 0:
        try:
            err = json.loads(r.stdout)
            raise CNIError(int(err.get("code", PLUGIN_FAILURE)), err.get("msg", "IPAM failed"),
                           err.get("details", ""))
        except (ValueError, AttributeError):
            raise CNIError(PLUGIN_FAILURE, f"IPAM plugin {inv.conf.ipam.type} failed: "
                                           f"{(r.stderr or r.stdout).decode(errors='replace').strip()}") from None
    if command != "ADD":
        return None
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def _ips(result: dict[str, Any]) -> list[str]:
    return [ip["address"].split("/")[0] for ip in result.get("ips", [])]


async def _existing(be: Backend, key: ResourceKey) -> KVPair | None:
    try:
        return await be.get(key)
    except NotFound:
        return None


def _result(inv: Invocation, ips: list[str], links: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": inv.conf.cni_version, "interfaces": [links["host"], links["container"]],
            "ips": ip_entries(ips, inv.conf.cni_version, interface=1), "dns": {}}


async def run(inv: Invocation) -> dict[str, Any] | None:
    conf = inv.conf
    if conf.ipam is None:
        raise CNIError(7, "invalid network config: ipam: the calico plugin needs an ipam section")
    ds = conf.datastore(inv.env)
    node = conf.node_name()
    ids, ns, host_if = identity(inv, node)
    key = ResourceKey(api.WorkloadEndpoint, ids.name(), ns)
    try:
        be = backend.connect(ds)
    except CalicoError as exc:
        raise CNIError(PLUGIN_FAILURE, str(exc)) from exc
    try:
        async with endpoint_lock(conf.ipam_lock_file, host_if):
            if inv.command == "ADD":
                return await _add(inv, be, key, ids, ns, host_if, node)
            if inv.command == "DEL":
                await _del(inv, be, key, host_if)
                return None
            if inv.command == "CHECK":
                await _check(inv, be, key, host_if)
        return None
    except CalicoError as exc:
        raise CNIError(PLUGIN_FAILURE, str(exc)) from exc
    finally:
        await be.close()


async def _check(inv: Invocation, be: Backend, key: ResourceKey, host_if: str) -> None:
    kv = await _existing(be, key)
    if kv is None:
        raise CNIError(PLUGIN_FAILURE, f"the endpoint {key} does not exist")
    ips = [n.split("/")[0] for n in kv.value.spec.ip_networks]
    why = await asyncio.to_thread(dataplane.check, host_if, inv.netns, inv.ifname, ips)
    if why:
        raise CNIError(PLUGIN_FAILURE, why)
    delegate_ipam(inv, "CHECK")


async def _add(inv: Invocation, be: Backend, key: ResourceKey, ids: WorkloadEndpointIdentifiers, ns: str,
               host_if: str, node: str) -> dict[str, Any]:
    current = await _existing(be, key)
    if current is not None and current.value.spec.container_id == inv.container_id \
            and current.value.spec.ip_networks:
        ips = [n.split("/")[0] for n in current.value.spec.ip_networks]
        if not await asyncio.to_thread(dataplane.check, host_if, inv.netns, inv.ifname, ips):
            mac = await asyncio.to_thread(dataplane.container_mac, inv.netns, inv.ifname)
            return _result(inv, ips, {"host": {"name": host_if, "mac": dataplane.HOST_MAC},
                                      "container": {"name": inv.ifname, "mac": mac, "sandbox": inv.netns}})
    ipam_result = delegate_ipam(inv, "ADD")
    assert ipam_result is not None
    ips = _ips(ipam_result)
    if not ips:
        delegate_ipam(inv, "DEL")
        raise CNIError(PLUGIN_FAILURE, "the IPAM plugin returned no addresses")
    try:
        links = await asyncio.to_thread(dataplane.setup, host_if, inv.netns, inv.ifname, ips, inv.conf.mtu)
        labels = {"projectcalico.org/namespace": ns, "projectcalico.org/orchestrator": ids.orchestrator}
        wep = api.WorkloadEndpoint.model_validate({
            "metadata": {"name": key.name, "namespace": ns, "labels": labels},
            "spec": {"orchestrator": ids.orchestrator, "node": node, "containerID": inv.container_id,
                     "pod": ids.pod if ids.orchestrator == "k8s" else "",
                     "workload": "" if ids.orchestrator == "k8s" else inv.container_id,
                     "endpoint": inv.ifname, "interfaceName": host_if, "mac": links["container"]["mac"],
                     "ipNetworks": [f"{ip}/32" for ip in ips], "profiles": [f"kns.{ns}"]}})
        await be.apply(KVPair(key, wep))
    except BaseException:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(dataplane.teardown, host_if, inv.netns, inv.ifname)
        with contextlib.suppress(Exception):
            delegate_ipam(inv, "DEL")
        raise
    return _result(inv, ips, links)


async def _del(inv: Invocation, be: Backend, key: ResourceKey, host_if: str) -> None:
    delegate_ipam(inv, "DEL")
    current = await _existing(be, key)
    if current is not None and current.value.spec.container_id in ("", inv.container_id):
        with contextlib.suppress(NotFound):
            await be.delete(key)
    await asyncio.to_thread(dataplane.teardown, host_if, inv.netns, inv.ifname)
