"""The ``calico-ipam`` CNI plugin: addresses from Calico's IPAM (libcalico.ipam).

ADD assigns one IPv4 address (``assign_ipv4``, from ``ipv4_pools`` if given)
to the handle ``<network name>.<container id>`` with the pod's namespace, name
and node as attributes, and answers ``{"ips": [{"address": "a.b.c.d/32"}]}``.
A repeated ADD for the same container answers the addresses it already holds.
DEL releases by handle and is idempotent. CHECK verifies the handle holds
addresses.

ADD and DEL hold the host-wide lock (``ipam_lock_file``, default
``/var/run/calico/ipam.lock``, Calico's), so concurrent pods on one node do
not fight over the node's block. ADD looks the handle up *under* that lock:
looked up before it, eight ADDs racing for one container each saw no
address and each assigned one, and the handle ended up with eight.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import os
from collections.abc import AsyncIterator
from typing import Any

from cni.config import PLUGIN_FAILURE, CNIError, Invocation
from libcalico import backend
from libcalico.errors import CalicoError
from libcalico.ipam import IPAM, IPAMError


LOCK_FILE = "/var/run/calico/ipam.lock"


@contextlib.asynccontextmanager
async def host_lock(path: str = "") -> AsyncIterator[None]:
    """Calico's host-wide IPAM lock (an flock on ``path``), held for the block."""
    path = path or LOCK_FILE
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def handle_id(inv: Invocation) -> str:
    return f"{inv.conf.name}.{inv.container_id}".lower()


def ip_entries(ips: list[str], version: str, interface: int | None = None) -> list[dict[str, Any]]:
    out = []
    for ip in ips:
        entry: dict[str, Any] = {"address": f"{ip}/32" if ":" not in ip else f"{ip}/128"}
        if version in ("0.3.0", "0.3.1", "0.4.0"):
            entry["version"] = "6" if ":" in ip else "4"
        if interface is not None:
            entry["interface"] = interface
        out.append(entry)
    return out


def go_time_string(t: datetime.datetime) -> str:
    """A UTC time as Go's ``time.Time.String()`` writes it, which Calico's CNI stores as an allocation's
    ``timestamp`` attribute: ``2026-12-01 23:14:05.123456 +0000 UTC`` (trailing zeros of the fraction dropped)."""
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


async def run(inv: Invocation) -> dict[str, Any] | None:
    conf = inv.conf
    if conf.ipam is None:
        raise CNIError(7, "invalid network config: ipam: the calico-ipam plugin needs an ipam section")
    ds = conf.datastore(inv.env)
    node = conf.node_name()
    handle = handle_id(inv)
    try:
        be = backend.connect(ds)
    except CalicoError as exc:
        raise CNIError(PLUGIN_FAILURE, str(exc)) from exc
    ipam = IPAM(be)
    try:
        if inv.command == "DEL":
            async with host_lock(conf.ipam_lock_file):
                await ipam.release_by_handle(handle)
            return None
        if inv.command == "CHECK":
            if not await ipam.ips_by_handle(handle):
                raise CNIError(PLUGIN_FAILURE, f"no addresses are allocated to {handle}")
            return None
        if conf.ipam.assign_ipv6:
            raise CNIError(2, "assign_ipv6 is not supported by this calico-ipam yet")
        attrs = {"node": node, "timestamp": go_time_string(datetime.datetime.now(datetime.timezone.utc))}
        if inv.pod_name:
            attrs.update({"namespace": inv.pod_namespace, "pod": inv.pod_name})
        async with host_lock(conf.ipam_lock_file):  # look up and assign as one step (see the module doc)
            ips = await ipam.ips_by_handle(handle)
            if not ips and conf.ipam.assign_ipv4:
                try:
                    ips = await ipam.auto_assign(node, handle, attrs, pools=conf.ipam.ipv4_pools)
                except IPAMError as exc:
                    raise CNIError(PLUGIN_FAILURE, f"failed to request IPv4 address: {exc}") from exc
        return {"cniVersion": conf.cni_version, "ips": ip_entries(ips, conf.cni_version), "dns": {}}
    except CalicoError as exc:
        raise CNIError(PLUGIN_FAILURE, str(exc)) from exc
    finally:
        await be.close()
