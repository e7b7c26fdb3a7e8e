"""What the Typha tests share: a recording consumer, an in-process Typha, clients, waiting with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from libcalico.backend.api import Backend
from libcalico.model import ResourceKey
from libcalico.typha_client import TyphaClient, TyphaConfig
from libcalico.watching import SyncStatus, Update, UpdateType
from tests.etcd_server import free_port
from typha.config import settings
from typha.daemon import Typha


class Recorder:
    """A consumer's view: every status, every update in order, and the state they add up to.

    ``forward`` (Felix, confd) gets the same callbacks. An update that makes no sense to a
    consumer (deleting a key it never had) fails the recording.
    """

    def __init__(self, forward: Any = None) -> None:
        self.statuses: list[SyncStatus] = []
        self.updates: list[Update] = []
        self.state: dict[ResourceKey, Any] = {}
        self.revisions: dict[ResourceKey, str] = {}
        self.errors: list[str] = []
        self.forward = forward

    def on_status(self, status: SyncStatus) -> None:
        self.statuses.append(status)
        if self.forward is not None:
            self.forward.on_status(status)

    def on_updates(self, updates: list[Update]) -> None:
        for u in updates:
            self.updates.append(u)
            if u.type is UpdateType.DELETED:
                if u.key not in self.state:
                    self.errors.append(f"delete of unknown {u.key}")
                self.state.pop(u.key, None)
                self.revisions.pop(u.key, None)
            else:
                if (u.type is UpdateType.NEW) != (u.key not in self.state):
                    self.errors.append(f"{u.type.value} for {u.key} {'absent' if u.key not in self.state else 'known'}")
                self.state[u.key] = u.kv.value
                self.revisions[u.key] = u.kv.revision
        if self.forward is not None:
            self.forward.on_updates(updates)

    @property
    def in_sync(self) -> bool:
        return bool(self.statuses) and self.statuses[-1] is SyncStatus.IN_SYNC


async def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.01)


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def running_typha(be: Backend, server: dict[str, Any] | None = None, **env: str) -> AsyncIterator[RunningTypha]:
    """Typha in this process on a free loopback port; ``env``: TYPHA_* settings (names without the
    prefix); ``server``: ServerConfig fields to override (what has no TYPHA_ variable)."""
    values = {"TYPHA_SERVERPORT": str(free_port()), "TYPHA_SERVERHOST": "127.0.0.1",
              "TYPHA_SHUTDOWNTIMEOUTSECS": "0.5", "TYPHA_SHUTDOWNCONNECTIONDROPINTERVALMAXSECS": "0.01",
              **{f"TYPHA_{k.upper()}": v for k, v in env.items()}}
    typha = RunningTypha(be, settings(values))
    if server:
        typha.server.config = dataclasses.replace(typha.server.config, **server)
    typha.tasks = [asyncio.create_task(fn(), name=f"test-typha-{name}") for name, fn in typha.roots()]
    try:
        await typha.server.wait_listening()
        yield typha
    finally:
        await typha.close()


class RunningTypha(Typha):
    tasks: list[asyncio.Task[Any]]

    async def close(self) -> None:
        """Stop it (as a killed process would go: its clients see their connections end)."""
        await cancel_all(self.tasks)


@contextlib.asynccontextmanager
async def clients(port: int, recorders: list[Recorder], syncer_type: str = "felix", *,
                  client: dict[str, Any] | None = None, **config: Any) -> AsyncIterator[list[TyphaClient]]:
    cfg = TyphaConfig(addr=f"127.0.0.1:{port}", **config)
    made = [TyphaClient(cfg, syncer_type, r, hostname=f"node{i}", **(client or {})) for i, r in enumerate(recorders)]
    tasks = [asyncio.create_task(c.run(), name=f"test-typha-client-{i}") for i, c in enumerate(made)]
    try:
        yield made
    finally:
        await cancel_all(tasks)
