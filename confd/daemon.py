"""calico-confd: follow the datastore, keep BIRD's config current, reload BIRD when it changes.

Inputs: Calico's BGP syncer (:func:`libcalico.syncers.bgp`): BGPConfiguration,
BGPPeer, BGPFilter, Node, IPPool and this node's confirmed block affinities, from the
datastore or through Typha (``CONFD_``/``FELIX_``/``CALICO_TYPHAADDR``). Updates only
mark the config dirty; once in sync, the config is rendered
(:mod:`confd.render`), written through :mod:`confd.writer` (stage,
``bird -p -c``, swap) and BIRD reconfigured, only when a file changed. ``-onetime`` lists everything once, writes, and exits, as
Calico's ``confd -onetime`` does. The daemon runs under :mod:`libcalico.daemon`:
if the syncer or the render loop ends, confd exits (and is restarted) instead
of running on without updating BIRD.

A render that fails (any exception from rendering, or BIRD refusing the result
in ``bird -p -c``) leaves the previous config in place, is logged with its
reason, and is kept in :attr:`Confd.render_error` for health
(:meth:`Confd.problems`) until a later render succeeds. Rendering is a pure
function of the datastore's contents, so it is tried again on the next change,
not on a timer; only writing the files (an OSError: disk full, a read-only
mount) is retried on a timer as well, as that can heal by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from confd import render, writer
from libcalico import api, backend, daemon, syncers, typha_client
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
        except (CalicoError, ValueError) as exc:   # ValueError: a value that is not UTF-8
            log.warning("BGP password secret %s/%s: %s", namespace, name, exc)
            continue
        if key in data:
            out[(name, key)] = data[key]
        else:
            log.warning("BGP password secret %s/%s has no key %r", namespace, name, key)
    return out


class RenderFailed(RuntimeError):
    """BIRD's config could not be rendered, or BIRD refused it; the previous config is still in place."""


class Confd:
    # How long to wait before writing again after an OSError (the config itself rendered fine).
    WRITE_RETRY_S = 2.0

    def __init__(self, node: str, outdir: Path, cmds: writer.Commands) -> None:
        self.inputs = render.Inputs(node, router_id=os.environ.get("CALICO_ROUTER_ID", ""))
        self.block_owner: dict[str, tuple[str, str]] = {}  # confirmed affinity -> (block CIDR, node)
        self.outdir, self.cmds = outdir, cmds
        self.dirty = asyncio.Event()
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.renders = 0
        self.warned: list[str] = []
        # Why the last attempt to render and install BIRD's config failed; None once one succeeds.
        self.render_error: str | None = None
        self.rendered = False   # a config has been installed at least once
        self._retrying_write = False

    def problems(self) -> list[str]:
        """What keeps confd from being ready (empty when it is): for the daemon runner's health report."""
        out = []
        if self.status is not SyncStatus.IN_SYNC:
            out.append(f"not in sync with the datastore ({self.status.value})")
        if self.render_error is not None:
            out.append(self.render_error)
        elif not self.rendered and self.status is SyncStatus.IN_SYNC:
            out.append("BIRD's config has not been written yet")
        return out

    def on_status(self, status: SyncStatus) -> None:
        self.status = status
        self.dirty.set()

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            key, value = u.key, u.kv.value
            if key.kind == api.BlockAffinity.KIND:
                # As Calico's confd: confirmed, or "" (implicitly confirmed); a pending affinity counts as none.
                if value is None or value.spec.state not in ("confirmed", "") or value.spec.deleted == "true":
                    self.block_owner.pop(key.name, None)
                else:
                    self.block_owner[key.name] = (value.spec.cidr, value.spec.node)
                continue
            tables: dict[type[api.Resource], dict[str, Any]] = {
                api.BGPConfiguration: self.inputs.bgp_configs, api.BGPPeer: self.inputs.peers,
                api.Node: self.inputs.nodes, api.IPPool: self.inputs.pools, api.BGPFilter: self.inputs.filters}
            table = tables[key.resource_class]
            if value is None:
                table.pop(key.name, None)
            else:
                table[key.name] = value
        self.dirty.set()

    def snapshot(self) -> render.Inputs:
        """The inputs as they are now, for a render in another thread while updates go on arriving."""
        inp = self.inputs
        return dataclasses.replace(inp, nodes=dict(inp.nodes), bgp_configs=dict(inp.bgp_configs),
                                   peers=dict(inp.peers), pools=dict(inp.pools), secrets=dict(inp.secrets),
                                   filters=dict(inp.filters),
                                   blocks=sorted(c for c, owner in self.block_owner.values() if owner == inp.node))

    def render_and_write(self, inputs: render.Inputs | None = None) -> list[str]:
        inputs = inputs if inputs is not None else self.snapshot()
        files = render.render(inputs)
        warnings = render.warnings(inputs)
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
                if why and v == 6 and not os.path.exists(self.cmds.socket6):
                    # bird6 files are always written (as Calico's confd writes them); a node that runs no
                    # BIRD 6 (IPv4 only) is normal, not worth a warning on every change.
                    log.info("%s", why)
                elif why:
                    log.warning("%s", why)
                else:
                    log.info("BIRD%s reconfigured", "6" if v == 6 else "")
        return changed

    async def attempt(self, be: Backend | None = None) -> list[str]:
        """Read the secrets, render, check and install BIRD's config once; the names of the files that changed.

        A failure is logged with its reason, kept in :attr:`render_error`, and
        raised as :class:`RenderFailed` (the previous config stays in place).
        """
        try:
            if be is not None:
                self.inputs.secrets = await read_secrets(be, render.password_refs(self.inputs), SECRETS_NAMESPACE)
            changed = await asyncio.to_thread(self.render_and_write, self.snapshot())
        except writer.CheckFailed as exc:
            self._failed(f"{exc}; keeping the previous config until the next change")
            raise RenderFailed(self.render_error) from exc
        except OSError as exc:
            self._failed(f"writing BIRD's config to {self.outdir} failed: {exc}")
            raise RenderFailed(self.render_error) from exc
        except Exception as exc:
            self._failed(f"rendering BIRD's config failed: {type(exc).__name__}: {exc}; keeping the previous "
                         "config until the next change")
            raise RenderFailed(self.render_error) from exc
        if self.render_error is not None:
            log.info("BIRD's config rendered and installed again")
        self.render_error, self.rendered = None, True
        return changed

    def _failed(self, reason: str) -> None:
        # Said once per reason while retrying a write on the timer; every time a change brings it back.
        if not (self._retrying_write and reason == self.render_error):
            log.error("%s", reason, exc_info=log.isEnabledFor(logging.DEBUG))
        self.render_error = reason

    async def loop(self, be: Backend | None = None) -> None:
        """Render whenever something changed once in sync; a failure waits for the next change (see above)."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            if self.status is not SyncStatus.IN_SYNC:
                continue
            try:
                await self.attempt(be)
                self._retrying_write = False
            except RenderFailed as exc:
                self._retrying_write = isinstance(exc.__cause__, OSError)
                if self._retrying_write:
                    await asyncio.sleep(self.WRITE_RETRY_S)
                    self.dirty.set()


async def onetime(be: Backend, confd: Confd) -> list[str]:
    """List everything once and install BIRD's config (raises :class:`RenderFailed`, logged, if that fails)."""
    for opts in syncers.bgp(confd.inputs.node).types:
        listing = await be.list(opts)
        confd.on_updates([Update(UpdateType.NEW, kv) for kv in listing.items])
    confd.status = SyncStatus.IN_SYNC
    return await confd.attempt(be)


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
    d.health.check("confd", confd.problems)
    d.cleanup("datastore", be.close)
    if health is not None:
        d.serve_health(*health)
    return d
