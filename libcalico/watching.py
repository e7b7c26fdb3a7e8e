"""The one list + watch loop, and the syncer built on it.

Every component that follows the datastore (Felix, confd, Typha's upstream,
calicoctl's watchers) uses :func:`follow`:

1. list, and reconcile the listing against what the caller was last told
   (so a re-list after a gap emits deletions for keys that vanished, updates
   for keys whose revision moved, and nothing for keys that did not change);
2. report "listed";
3. watch from the listing's revision, so nothing is missed or repeated;
4. when the watch drops (the stream ends, or :class:`DatastoreUnavailable`
   while opening or reading it), watch again from the last revision seen, as
   Calico's watcher cache does: a hiccup costs one watch request, not a
   listing of everything (a Typha with hundreds of clients must not re-list
   the datastore each time a connection blips);
5. re-list only when the datastore no longer has that history
   (:class:`WatchCompacted`, Kubernetes' 410 Gone) or when there is no
   revision yet (the first listing failed).

A dropped watch does not change the status: the consumer's cache stays
valid. Only after ``MAX_ERRORS_PER_REVISION`` (Calico's 5) attempts in a row
fail without progress is the type reported unavailable (status
``WaitForDatastore``); from then on each attempt first asks the datastore for
one small key (``ClusterInformation default``; any answer, even "not found",
proves it is back), reports the type resumed, and watches from its revision
again. A failed listing is reported unavailable at once (there is nothing to
resume). Attempts back off exponentially.

A stored value that does not parse (:class:`~libcalico.errors.CorruptEntry`)
is Calico's "parse failure" update: logged, once per revision, and passed on
as a deletion of that key (when the consumer had it), so one bad key written
around Calico's validation never stops a daemon and every other key goes on.
When the key is fixed, the next update brings it back.

:class:`Syncer` runs one :func:`follow` per resource type and turns their
progress into Calico's syncer status: ``WaitForDatastore`` until the first
listing succeeds, ``ResyncInProgress`` until every type has listed, then
``InSync``. A re-list after compaction keeps the status at ``InSync`` (the
consumer's cache stays valid and only differences are emitted); an outage
sets ``WaitForDatastore`` until that type has listed or resumed again.
``Syncer.relists`` counts listings after a type's first one.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from libcalico import api
from libcalico.backend.api import Backend, EventType, WatchEvent
from libcalico.errors import CorruptEntry, DatastoreUnavailable, NotFound, WatchCompacted
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

    def on_resumed(self) -> None: ...

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


# Calico's watchercache.MaxErrorsPerRevision: failed attempts in a row, without progress, before
# the type counts as unavailable.
MAX_ERRORS_PER_REVISION = 5
# The key asked for to learn that the datastore is back after an outage: small, in every backend.
PROBE_KEY = ResourceKey(api.ClusterInformation, "default")


async def follow(
    backend: Backend,
    opts: ResourceListOptions,
    events: FollowEvents,
    *,
    backoff: Backoff | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    max_errors: int = MAX_ERRORS_PER_REVISION,
) -> None:
    """List, then watch ``opts`` forever, reporting through ``events``. Cancel to stop.

    See the module docstring for when it re-lists (compaction, no revision
    yet) and when it resumes the watch from the last revision seen (any
    other drop).
    """
    backoff = backoff or Backoff()
    known: dict[ResourceKey, str] = {}  # what the caller has been told: key -> revision
    revision = ""  # the last revision seen: the listing's, then each event's
    failures = 0  # attempts in a row that failed without progress
    unavailable = False  # reported unavailable, not yet back
    while True:
        try:
            if not revision:
                revision = await _list(backend, opts, events, known)
                unavailable = False
                failures = 0
                backoff.reset()
            elif unavailable:
                with contextlib.suppress(NotFound, CorruptEntry):
                    await backend.get(PROBE_KEY)
                unavailable = False
                log.info("datastore is back; resuming the watch of %s from revision %s", opts.kind, revision)
                events.on_resumed()
            progressed = False
            stream = backend.watch(opts, revision)
            try:
                async for ev in stream:
                    revision = ev.revision
                    if not progressed:
                        progressed = True
                        failures = 0
                        backoff.reset()
                    _pass_on(ev, known, events)
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # type: ignore[attr-defined]
            # The server ended the watch (Kubernetes does every few minutes): it was reachable, so
            # resume from where it stopped; wait a little only when it gave nothing (no tight loop).
            failures = 0
            log.debug("watch of %s ended at revision %s; resuming", opts.kind, revision)
            if not progressed:
                await sleep(backoff.next())
        except WatchCompacted as exc:
            log.info("watch of %s compacted (%s); re-listing", opts.kind, exc)
            revision = ""
        except DatastoreUnavailable as exc:
            failures += 1
            delay = backoff.next()
            if not revision or failures >= max_errors:
                if not unavailable:
                    unavailable = bool(revision)
                    events.on_unavailable(exc)
                log.warning("datastore unavailable while following %s: %s; retrying in %.1fs", opts.kind, exc, delay)
            else:
                log.info("watch of %s dropped (%s); resuming from revision %s in %.1fs", opts.kind, exc, revision,
                         delay)
            await sleep(delay)


async def _list(backend: Backend, opts: ResourceListOptions, events: FollowEvents,
                known: dict[ResourceKey, str]) -> str:
    """List ``opts``, tell ``events`` what changed against ``known`` (updated), report listed; the revision."""
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
    return listing.revision


def _pass_on(ev: WatchEvent, known: dict[ResourceKey, str], events: FollowEvents) -> None:
    """One watch event to the consumer; a value that does not parse is a deletion (see above)."""
    if ev.type is EventType.DELETED or ev.new is None:
        if ev.corrupt is not None:
            _log_corrupt(ev.corrupt, ev.revision)
        if known.pop(ev.key, None) is not None:
            events.on_updates([Update(UpdateType.DELETED, KVPair(ev.key, None, ev.revision))])
    else:
        kind = UpdateType.NEW if ev.key not in known else UpdateType.UPDATED
        known[ev.key] = ev.new.revision
        events.on_updates([Update(kind, ev.new)])


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
        self._listed: set[int] = set()  # types listed (or resumed) since their last outage
        self._ever_listed: set[int] = set()
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
                if index in syncer._ever_listed:
                    syncer.relists += 1
                syncer._ever_listed.add(index)
                self.on_resumed()

            def on_resumed(self) -> None:
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
