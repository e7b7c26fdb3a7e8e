"""An in-memory datastore, for calculation unit tests only.

It keeps etcd's model: one global revision counter, a mod_revision per key,
an event history that watches replay from, and an explicit ``compact()`` that
drops history so a too-old watch gets :class:`WatchCompacted`. Values are
stored encoded, as etcd stores them, so a caller cannot mutate stored state
through a reference. It passes the same contract suite as the etcd backend
(tests/libcalico/test_backend_contract.py); production code never selects it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import cast

from libcalico.api.meta import Resource
from libcalico.api.registry import ModelT
from libcalico.backend import codec, static
from libcalico.backend.api import EventType, WatchEvent
from libcalico.errors import AlreadyExists, Conflict, CorruptEntry, NotFound, WatchCompacted
from libcalico.model import KVList, KVPair, ResourceKey, ResourceListOptions

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Stored:
    data: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class _Change:
    revision: int
    key: ResourceKey
    old: _Stored | None
    new: _Stored | None


class MemoryBackend:
    """A datastore held in memory, for unit tests only (see the module docstring)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[ResourceKey, _Stored]] = {}
        self._revision = 1
        self._compacted = 0
        self._history: list[_Change] = []
        self._changed = asyncio.Condition()
        self._closed = False

    # --- helpers ----------------------------------------------------------------------

    def _pair(self, key: ResourceKey, stored: _Stored) -> KVPair:
        rev = str(stored.mod_revision)
        return KVPair(key, codec.decode(key, stored.data, rev), rev)

    async def _write(self, key: ResourceKey, value: Resource | None) -> _Stored | None:
        return await self._write_raw(key, None if value is None else codec.encode(value))

    async def _write_raw(self, key: ResourceKey, data: bytes | None) -> _Stored | None:
        self._revision += 1
        path = key.path()
        old = self._data.get(path)
        new = None if data is None else _Stored(data, self._revision)
        if new is None:
            self._data.pop(path, None)
        else:
            self._data[path] = (key, new)
        self._history.append(_Change(self._revision, key, old[1] if old else None, new))
        async with self._changed:
            self._changed.notify_all()
        return new

    def _check(self, key: ResourceKey, revision: str) -> _Stored:
        entry = self._data.get(key.path())
        if entry is None:
            raise NotFound(key)
        if revision and revision != str(entry[1].mod_revision):
            raise Conflict(key)
        return entry[1]

    # --- the contract ---------------------------------------------------------------------

    async def create(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        if kv.key.path() in self._data:
            raise AlreadyExists(kv.key)
        stored = await self._write(kv.key, kv.value)
        assert stored is not None
        return self._pair(kv.key, stored)

    async def update(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        self._check(kv.key, kv.revision)
        stored = await self._write(kv.key, kv.value)
        assert stored is not None
        return self._pair(kv.key, stored)

    async def create_and_update(self, create: KVPair, update: KVPair) -> tuple[KVPair, KVPair]:
        if create.key.path() in self._data:
            raise AlreadyExists(create.key)
        self._check(update.key, update.revision)
        made = await self._write(create.key, create.value)
        stored = await self._write(update.key, update.value)
        assert made is not None and stored is not None
        return self._pair(create.key, made), self._pair(update.key, stored)

    async def apply(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        stored = await self._write(kv.key, kv.value)
        assert stored is not None
        return self._pair(kv.key, stored)

    async def delete(self, key: ResourceKey[ModelT], revision: str = "") -> KVPair[ModelT]:
        old = self._check(key, revision)
        await self._write(key, None)
        try:
            return self._pair(key, old)
        except CorruptEntry:
            # The one pair without a value (see libcalico.backend.api): typed as the key's kind.
            return KVPair(key, cast("ModelT", None), str(old.mod_revision))

    async def get(self, key: ResourceKey[ModelT]) -> KVPair[ModelT]:
        if static.is_default_allow(key):
            return static.default_allow_profile()
        return self._pair(key, self._check(key, ""))

    async def list(self, opts: ResourceListOptions[ModelT]) -> KVList[ModelT]:
        out = KVList([], str(self._revision))
        for _, (k, s) in sorted(self._data.items()):
            if opts.matches(k):
                try:
                    out.items.append(self._pair(k, s))
                except CorruptEntry as exc:
                    log.warning("skipping %s", exc)
                    out.corrupt.append(exc)
        return static.with_default_allow(opts, out)

    async def list_many(self, opts: Sequence[ResourceListOptions]) -> builtins.list[KVList]:
        return [await self.list(o) for o in opts]  # no await in list: nothing changes in between

    async def list_keys(self, opts: ResourceListOptions[ModelT]) -> builtins.list[ResourceKey[ModelT]]:
        return [k for path, (k, s) in sorted(self._data.items()) if opts.matches(k)]

    async def watch(self, opts: ResourceListOptions, revision: str) -> AsyncIterator[WatchEvent]:
        after = int(revision) if revision else self._revision
        if after < self._compacted:
            raise WatchCompacted(revision)
        while not self._closed:
            if after < self._compacted:
                raise WatchCompacted(str(after))
            pending = [c for c in self._history if c.revision > after]
            for change in pending:
                after = change.revision
                if not opts.matches(change.key):
                    continue
                yield self._event(change)
            if not pending:
                async with self._changed:
                    await self._changed.wait_for(lambda: self._closed or self._revision > after)

    def _event(self, change: _Change) -> WatchEvent:
        old = new = None
        corrupt = None
        with contextlib.suppress(CorruptEntry):
            old = self._pair(change.key, change.old) if change.old else None
        if change.new:
            try:
                new = self._pair(change.key, change.new)
            except CorruptEntry as exc:
                corrupt = exc
        if change.new is None:
            kind = EventType.DELETED
        elif change.old is None:
            kind = EventType.ADDED
        else:
            kind = EventType.MODIFIED
        return WatchEvent(kind, change.key, new, old, str(change.revision), corrupt)

    async def close(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    # --- test helpers (etcd has these as admin operations) --------------------------------

    async def put_raw(self, key: ResourceKey, data: bytes) -> None:
        """Store ``data`` as it is, past every check: what a foreign writer can leave in etcd."""
        await self._write_raw(key, data)

    @property
    def revision(self) -> str:
        return str(self._revision)

    def compact(self, revision: str) -> None:
        """Forget history up to and including ``revision``, as etcd's compaction does."""
        rev = int(revision)
        self._compacted = max(self._compacted, rev)
        self._history = [c for c in self._history if c.revision > rev]
