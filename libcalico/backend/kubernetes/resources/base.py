"""What every Calico kind on the Kubernetes API shares: its sources, and list, get and watch over them.

As libcalico-go's ``k8s/resources`` package: one client per kind behind one
small interface (:class:`ResourceClient`), so a kind's storage is read in one
file. A kind is held in one or more *sources* (a custom resource; Kubernetes
Nodes; Pods; Calico's policies *and* Kubernetes NetworkPolicies). Listing and
watching are the same for every kind, over its sources: a kind with two
sources has the composite revision ``<rv1>/<rv2>`` in its lists and watch
events, as in libcalico-go; a plain revision applies to each source. Writes
are each kind's own; the default refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes_asyncio import watch as k8s_watch

from libcalico.backend.api import EventType, WatchEvent
from libcalico.backend.kubernetes.connection import JSON, Connection
from libcalico.backend.kubernetes.errors import map_error
from libcalico.errors import AlreadyExists, Conflict, CorruptEntry, NotFound, OperationNotSupported, WatchCompacted
from libcalico.model import KVList, KVPair, ResourceKey, ResourceListOptions

log = logging.getLogger(__name__)

# Server-side watch timeout: the stream ends after this and is re-opened from the last version.
WATCH_TIMEOUT_SECONDS = 300


@dataclass
class Source:
    """One Kubernetes resource that holds (part of) a Calico kind."""

    what: str                                   # e.g. "ippools.crd.projectcalico.org", for errors
    namespaced: bool
    list: Callable[..., Awaitable[Any]]         # the client's list function (also used to watch)
    list_args: Callable[[str], tuple[tuple[Any, ...], JSON]]  # namespace -> (args, kwargs)
    convert: Callable[[JSON], JSON | None]      # Kubernetes object -> v3 wire, None = not a Calico object
    get: Callable[[str, str], Awaitable[Any]] | None = None  # (namespace, name) -> object: cheaper than a list
    by_name: bool = False                       # the server filters a list by metadata.name (custom resources)


@dataclass
class _WatchState:
    revisions: list[str]
    seen: dict[ResourceKey, KVPair] = field(default_factory=dict)


class ResourceClient:
    """One Calico kind on the Kubernetes API. Subclasses give :meth:`sources` and the writes they allow."""

    def __init__(self, conn: Connection, kind: str) -> None:
        self.conn = conn
        self.kind = kind

    async def sources(self) -> list[Source]:
        raise NotImplementedError

    # --- writes: refused unless the kind says otherwise -------------------------------------------

    async def create(self, kv: KVPair) -> KVPair:
        raise OperationNotSupported("Create", kv.key)

    async def update(self, kv: KVPair) -> KVPair:
        raise OperationNotSupported("Update", kv.key)

    async def delete(self, key: ResourceKey, revision: str) -> KVPair:
        raise OperationNotSupported("Delete", key)

    async def apply(self, kv: KVPair) -> KVPair:
        """Create or overwrite: update, else create, a few times over if another writer races us."""
        kv = kv.with_revision("")
        for _ in range(5):
            try:
                return await self.update(kv)
            except NotFound:
                pass
            try:
                return await self.create(kv)
            except AlreadyExists:
                continue
        raise Conflict(kv.key)

    # --- reads ------------------------------------------------------------------------------------

    async def get(self, key: ResourceKey) -> KVPair:
        sources = await self.sources()
        if len(sources) == 1 and sources[0].get is not None:
            try:
                obj = self.conn.plain(await sources[0].get(key.namespace, key.name))
            except Exception as exc:
                raise map_error(exc, key, f"get {sources[0].what}") from exc
            wire = sources[0].convert(obj)
            if wire is None:
                raise NotFound(key)
            return self.conn.pair(key.kind, wire)
        listing = await self.list(ResourceListOptions(key.resource_class, key.namespace, key.name))
        for kv in listing.items:
            if kv.key == key:
                return kv
        for bad in listing.corrupt:
            if bad.key == key:
                raise bad
        raise NotFound(key)

    async def list(self, opts: ResourceListOptions) -> KVList:
        items: list[KVPair] = []
        corrupt: list[CorruptEntry] = []
        revisions: list[str] = []
        for src in await self.sources():
            args, kwargs = src.list_args(opts.namespace)
            if opts.name and src.by_name:
                kwargs["field_selector"] = f"metadata.name={opts.name}"
            try:
                result = self.conn.plain(await src.list(*args, **kwargs))
            except Exception as exc:
                raise map_error(exc, opts.kind, f"list {src.what}") from exc
            revisions.append(str((result.get("metadata") or {}).get("resourceVersion", "")))
            for obj in result.get("items") or []:
                wire = src.convert(self.conn.plain(obj))
                if wire is None:
                    continue
                try:
                    kv = self.conn.pair(opts.kind, wire)
                except CorruptEntry as exc:
                    log.warning("skipping %s", exc)
                    if opts.matches(exc.key):  # type: ignore[arg-type]
                        corrupt.append(exc)
                    continue
                if opts.matches(kv.key):
                    items.append(kv)
        items.sort(key=lambda kv: (kv.key.namespace, kv.key.name))
        return KVList(items, "/".join(revisions), corrupt)

    # --- watch ------------------------------------------------------------------------------------

    async def watch(self, opts: ResourceListOptions, revision: str) -> AsyncIterator[WatchEvent]:
        sources = await self.sources()
        parts = revision.split("/") if "/" in revision else [revision] * len(sources)
        if len(parts) != len(sources):
            raise WatchCompacted(revision)
        state = _WatchState(list(parts))
        queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue()
        tasks = [asyncio.create_task(self._watch_source(i, src, opts, state, queue), name=f"watch {src.what}")
                 for i, src in enumerate(sources)]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t

    async def _watch_source(self, index: int, src: Source, opts: ResourceListOptions, state: _WatchState,
                            queue: asyncio.Queue[WatchEvent | BaseException]) -> None:
        try:
            while True:  # each pass is one watch request; the server ends it after its timeout
                args, kwargs = src.list_args(opts.namespace)
                if opts.name and src.by_name:
                    kwargs["field_selector"] = f"metadata.name={opts.name}"
                async with k8s_watch.Watch() as w:
                    stream = w.stream(src.list, *args, resource_version=state.revisions[index],
                                      timeout_seconds=WATCH_TIMEOUT_SECONDS, allow_watch_bookmarks=True, **kwargs)
                    async for event in stream:
                        obj = event["raw_object"]
                        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                        if rv:
                            state.revisions[index] = rv
                        if event["type"] == "BOOKMARK":
                            continue
                        out = self._event(opts, src, event["type"], obj, state)
                        if out is not None:
                            queue.put_nowait(out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(map_error(exc, state.revisions[index], f"watch {src.what}"))

    def _event(self, opts: ResourceListOptions, src: Source, type_: str, obj: JSON,
               state: _WatchState) -> WatchEvent | None:
        wire = src.convert(obj)
        revision = "/".join(state.revisions)
        if wire is None:
            return None
        try:
            kv = self.conn.pair(opts.kind, wire)
        except CorruptEntry as exc:
            key: ResourceKey = exc.key  # type: ignore[assignment]
            if not opts.matches(key):
                return None
            old = state.seen.pop(key, None)
            if type_ == "DELETED":
                return WatchEvent(EventType.DELETED, key, None, old, revision) if old is not None else None
            kind = EventType.ADDED if type_ == "ADDED" else EventType.MODIFIED
            return WatchEvent(kind, key, None, old, revision, exc)
        if not opts.matches(kv.key):
            return None
        old = state.seen.get(kv.key)
        if type_ == "DELETED":
            state.seen.pop(kv.key, None)
            return WatchEvent(EventType.DELETED, kv.key, None, old or kv, revision)
        state.seen[kv.key] = kv
        kind = EventType.ADDED if type_ == "ADDED" else EventType.MODIFIED
        return WatchEvent(kind, kv.key, kv, old, revision)


__all__ = ["ResourceClient", "Source", "WATCH_TIMEOUT_SECONDS"]
