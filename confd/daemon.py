"""calico-confd: follow the datastore, keep BIRD's config current, reload BIRD when it changes.

Inputs: Calico's BGP syncer (:func:`libcalico.syncers.bgp`): BGPConfiguration,
BGPPeer, Node, IPPool and this node's confirmed block affinities, from the
datastore or through Typha (``CONFD_``/``FELIX_``/``CALICO_TYPHAADDR``). Updates only
mark the config dirty; once in sync, the config is rendered
(:mod:`confd.render`), written through :mod:`confd.writer` (stage,
``bird -p -c``, swap) and BIRD reconfigured, only when a file changed. ``-onetime`` lists everything once, writes, and exits, as
Calico's ``confd -onetime`` does. The daemon runs under :mod:`libcalico.daemon`:
if the syncer or the render loop ends, confd exits (and is restarted) instead
of running on without updating BIRD.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from confd import render, writer
from libcalico import backend, daemon, syncers, typha_client
from libcalico.backend.api import Backend
from libcalico.backend.config import DatastoreConfig
from libcalico.errors import CalicoError
from libcalico.watching import SyncStatus, Update, UpdateType

log = logging.getLogger("confd")
# Where BGP password secrets live: calico-node's namespace, as Calico reads them.
SECRETS_NAMESPACE = os.environ.get("NAMESPACE", "kube-system")


async def read_secrets(be: Backend, refs: set[tuple[str, str]], namespace: str) -> dict[tuple[str, str], str]:
    """BGP passwords from Kubernetes secrets in ``namespace`` (calico-node's); none on etcd."""
    reader = getattr(be, "read_secret", None)
    out: dict[tuple[str, str], str] = {}
    if reader is None:
        return out
    for name, key in sorted(refs):
        try:
            data = await reader(namespace, name)
        except CalicoError as exc:
            log.warning("BGP password secret %s/%s: %s", namespace, name, exc)
            continue
        if key in data:
            out[(name, key)] = data[key]
        else:
            log.warning("BGP password secret %s/%s has no key %r", namespace, name, key)
    return out


class Confd:
    def __init__(self, node: str, outdir: Path, cmds: writer.Commands) -> None:
        self.inputs = render.Inputs(node)
        self.block_owner: dict[str, tuple[str, str]] = {}  # confirmed affinity -> (block CIDR, node)
        self.outdir, self.cmds = outdir, cmds
        self.dirty = asyncio.Event()
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.renders = 0
        self.warned: list[str] = []

    def on_status(self, status: SyncStatus) -> None:
        self.status = status
        self.dirty.set()

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            key, value = u.key, u.kv.value
            if key.kind == "BlockAffinity":  # as Calico's confd: a pending affinity counts as none
                if value is None or value.spec.state != "confirmed" or value.spec.deleted == "true":
                    self.block_owner.pop(key.name, None)
                else:
                    self.block_owner[key.name] = (value.spec.cidr, value.spec.node)
                continue
            tables: dict[str, dict[str, Any]] = {
                "BGPConfiguration": self.inputs.bgp_configs, "BGPPeer": self.inputs.peers,
                "Node": self.inputs.nodes, "IPPool": self.inputs.pools}
            table = tables[key.kind]
            if value is None:
                table.pop(key.name, None)
            else:
                table[key.name] = value
        self.dirty.set()

    def render_and_write(self) -> list[str]:
        self.inputs.blocks = sorted(c for c, owner in self.block_owner.values() if owner == self.inputs.node)
        files = render.render(self.inputs)
        warnings = render.warnings(self.inputs)
        if warnings != self.warned:
            for w in warnings:
                log.warning("%s", w)
            self.warned = warnings
        changed = writer.write(files, self.outdir, self.cmds)
        self.renders += 1
        if changed:
            log.info("wrote %s", ", ".join(changed))
            for v in (4, 6):
                if not any(name.startswith("bird6" if v == 6 else "bird_") or name == "bird.cfg" and v == 4
                           for name in changed):
                    continue
                why = writer.reload(self.cmds, v)
                if why:
                    log.warning("%s", why)
                else:
                    log.info("BIRD%s reconfigured", "6" if v == 6 else "")
        return changed

    async def loop(self, be: Backend | None = None) -> None:
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            if self.status is not SyncStatus.IN_SYNC:
                continue
            try:
                if be is not None:
                    self.inputs.secrets = await read_secrets(be, render.password_refs(self.inputs), SECRETS_NAMESPACE)
                await asyncio.to_thread(self.render_and_write)
            except writer.CheckFailed as exc:
                log.error("%s", exc)
            except OSError as exc:
                log.error("writing BIRD's config failed: %s; retrying", exc)
                await asyncio.sleep(2)
                self.dirty.set()


async def onetime(be: Backend, confd: Confd) -> list[str]:
    for opts in syncers.bgp(confd.inputs.node).types:
        listing = await be.list(opts)
        confd.on_updates([Update(UpdateType.NEW, kv) for kv in listing.items])
    confd.inputs.secrets = await read_secrets(be, render.password_refs(confd.inputs), SECRETS_NAMESPACE)
    return await asyncio.to_thread(confd.render_and_write)


async def run_once(node: str, outdir: Path, ds: DatastoreConfig, cmds: writer.Commands) -> int:
    """``-onetime``: list everything, write, exit."""
    be = backend.connect(ds)
    try:
        changed = await onetime(be, Confd(node, outdir, cmds))
        log.info("onetime: %s", ", ".join(changed) if changed else "nothing changed")
        return 0
    finally:
        await be.close()


def build(node: str, outdir: Path, ds: DatastoreConfig, cmds: writer.Commands, *,
          health: tuple[str, int] | None = None) -> daemon.Daemon:
    """confd under the one daemon runner: the syncer and the render loop are its roots."""
    d = daemon.Daemon("confd")
    be = backend.connect(ds)
    confd = Confd(node, outdir, cmds)
    syncer = typha_client.syncer_for(syncers.bgp(node), be, confd, hostname=node, info="confd",
                                     prefixes=typha_client.CONFD_PREFIXES)
    d.root("syncer", syncer.run)
    d.root("render", lambda: confd.loop(be))
    d.cleanup("datastore", be.close)
    if health is not None:
        d.serve_health(*health)
    return d
