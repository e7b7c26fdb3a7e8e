"""The one list + watch loop, and the syncer built on it.

Every component that follows the datastore (Felix, confd, Typha's upstream,
calicoctl's watchers) uses :func:`follow`:

1. list, and reconcile the listing against what the caller was last told
   (so a re-list after a gap emits deletions for keys that vanished, updates
   for keys whose revision moved, and nothing for keys that did not change);
2. report "listed";
3. watch from the listing's revision, so nothing is missed or repeated;
4. on :class:`WatchCompacted` go back to 1; on :class:`DatastoreUnavailable`
   wait (with backoff) and go back to 1.

A stored value that does not parse (:class:`~libcalico.errors.CorruptEntry`)
is Calico's "parse failure" update: logged, once per revision, and passed on
as a deletion of that key (when the consumer had it), so one bad key written
around Calico's validation never stops a daemon and every other key goes on.
When the key is fixed, the next update brings it back.

:class:`Syncer` runs one :func:`follow` per resource type and turns their
progress into Calico's syncer status: ``WaitForDatastore`` until the first
listing succeeds, ``ResyncInProgress`` until every type has listed, then
``InSync``. A re-list after compaction keeps the status at ``InSync`` (the
consumer's cache stays valid and only differences are emitted); a datastore
outage sets ``WaitForDatastore`` until that type has listed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from libcalico.backend.api import Backend, EventType
from libcalico.errors import CorruptEntry, DatastoreUnavailable, WatchCompacted
from libcalico.model import KVPair, ResourceKey, ResourceListOptions

log = logging.getLogger(__name__)


class SyncStatus(enum.Enum):
    WAIT_FOR_DATASTORE = "wait-for-ready"
    RESYNC_IN_PROGRESS = "resync"
    IN_SYNC = "in-sync"


class UpdateType(enum.Enum):
    NEW = "new"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Update:
    """A change to pass on. For DELETED, ``kv.value`` is None and ``kv.revision`` the deletion's."""

    type: UpdateType
    kv: KVPair

    @property
    def key(self) -> ResourceKey:
        return self.kv.key


class FollowEvents(Protocol):
    def on_listed(self) -> None: ...

    def on_updates(self, updates: list[Update]) -> None: ...

    def on_unavailable(self, error: DatastoreUnavailable) -> None: ...


@dataclass
class Backoff:
    """Exponential backoff between failed attempts; resets after a success."""

    initial: float = 0.1
    maximum: float = 5.0
    current: float = 0.0

    def next(self) -> float:
        self.current = self.initial if self.current == 0 else min(self.current * 2, self.maximum)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


async def follow(
    backend: Backend,
    opts: ResourceListOptions,
    events: FollowEvents,
    *,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """List, then watch ``opts`` forever, reporting through ``events``. Cancel to stop."""
    backoff = backoff or Backoff()
    known: dict[ResourceKey, str] = {}  # what the caller has been told: key -> revision
    while True:
        try:
            listing = await backend.list(opts)
            updates: list[Update] = []
            seen: set[ResourceKey] = set()
            for bad in listing.corrupt:
                _log_corrupt(bad, listing.revision)
            for kv in listing.items:
                seen.add(kv.key)
                prev = known.get(kv.key)
                if prev != kv.revision:
                    updates.append(Update(UpdateType.NEW if prev is None else UpdateType.UPDATED, kv))
                    known[kv.key] = kv.revision
            for key in [k for k in known if k not in seen]:
                del known[key]
                updates.append(Update(UpdateType.DELETED, KVPair(key, None, listing.revision)))
            if updates:
                events.on_updates(updates)
            events.on_listed()
            backoff.reset()
            stream = backend.watch(opts, listing.revision)
            try:
                async for ev in stream:
                    if ev.type is EventType.DELETED or ev.new is None:
                        if ev.corrupt is not None:
                            _log_corrupt(ev.corrupt, ev.revision)
                        if known.pop(ev.key, None) is not None:
                            events.on_updates([Update(UpdateType.DELETED, KVPair(ev.key, None, ev.revision))])
                    else:
                        kind = UpdateType.NEW if ev.key not in known else UpdateType.UPDATED
                        known[ev.key] = ev.new.revision
                        events.on_updates([Update(kind, ev.new)])
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # type: ignore[attr-defined]
            # A watch that ends without error (server closed it) is resumed by re-listing.
        except WatchCompacted as exc:
            log.info("watch of %s compacted (%s); re-listing", opts.kind, exc)
        except DatastoreUnavailable as exc:
            events.on_unavailable(exc)
            delay = backoff.next()
            log.warning("datastore unavailable while following %s: %s; retrying in %.1fs", opts.kind, exc, delay)
            await sleep(delay)


def _log_corrupt(error: CorruptEntry, revision: str) -> None:
    log.warning("parse failure at revision %s, treated as deleted: %s", revision, error)


class SyncerCallbacks(Protocol):
    def on_status(self, status: SyncStatus) -> None: ...

    def on_updates(self, updates: list[Update]) -> None: ...


class Syncer:
    """Follows several resource types and reports Calico's three-state sync status."""

    def __init__(self, backend: Backend, types: Sequence[ResourceListOptions], callbacks: SyncerCallbacks) -> None:
        self._backend = backend
        self._types = list(types)
        self._callbacks = callbacks
        self._listed: set[int] = set()
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.relists = 0

    def _set_status(self, status: SyncStatus) -> None:
        if status is not self.status:
            self.status = status
            self._callbacks.on_status(status)

    def _events(self, index: int) -> FollowEvents:
        syncer = self

        class _Events:
            def on_listed(self) -> None:
                if index in syncer._listed:
                    syncer.relists += 1
                syncer._listed.add(index)
                if len(syncer._listed) == len(syncer._types):
                    syncer._set_status(SyncStatus.IN_SYNC)
                elif syncer.status is SyncStatus.WAIT_FOR_DATASTORE:
                    syncer._set_status(SyncStatus.RESYNC_IN_PROGRESS)

            def on_updates(self, updates: list[Update]) -> None:
                syncer._callbacks.on_updates(updates)

            def on_unavailable(self, error: DatastoreUnavailable) -> None:
                syncer._listed.discard(index)
                syncer._set_status(SyncStatus.WAIT_FOR_DATASTORE)

        return _Events()

    async def run(self) -> None:
        """Run until cancelled."""
        self._callbacks.on_status(self.status)
        async with asyncio.TaskGroup() as tg:
            for i, opts in enumerate(self._types):
                tg.create_task(follow(self._backend, opts, self._events(i)), name=f"follow-{opts.kind}")
