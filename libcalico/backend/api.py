"""The datastore contract every backend implements (etcd v3, memory, Kubernetes).

Modelled on libcalico-go's backend ``api.Client``: create, update, apply,
delete, get, list and watch over :class:`~libcalico.model.KVPair`. The
revision rules are the heart of it:

* ``create(kv)`` writes a key that must not exist (else :class:`AlreadyExists`).
* ``update(kv)`` writes a key that must exist (else :class:`NotFound`). If
  ``kv.revision`` is set, the write is a compare-and-swap: it succeeds only
  while the stored revision still equals it, else :class:`Conflict`. Empty
  revision means "overwrite whatever is there".
* ``apply(kv)`` creates or overwrites, never a CAS.
* ``delete(key, revision)``: CAS when a revision is given, like update.
* ``get`` and ``list`` return the stored revision with each pair; ``list``
  also returns the datastore revision the listing was taken at.
* A stored value that does not parse: ``get`` raises :class:`CorruptEntry`;
  ``list`` leaves it out of ``items`` and reports it in ``corrupt``; ``watch``
  passes it as an event with ``corrupt`` set and no ``new``; ``delete``
  removes it and returns the pair with value None (so an operator can clear it).
* ``watch(opts, revision)`` yields every change strictly after ``revision``
  (a list's revision, so list + watch misses nothing and repeats nothing).
  When the datastore no longer has that history it raises
  :class:`WatchCompacted`, and the caller re-lists (see
  :mod:`libcalico.watching`, the one loop that does that).

Every write returns the pair as stored, with its new revision, and the value's
``metadata.resourceVersion`` set to it. Every backend raises only errors from
:mod:`libcalico.errors`; mapping happens at the backend's edge.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from libcalico.api.registry import ModelT
from libcalico.errors import CorruptEntry
from libcalico.model import KVList, KVPair, ResourceKey, ResourceListOptions


class EventType(enum.Enum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. ``new`` is set for ADDED/MODIFIED, ``old`` for DELETED (and MODIFIED where known).

    ``revision`` is the datastore revision of the change; resuming a watch from
    it continues right after this event. An ADDED/MODIFIED whose new value does
    not parse has ``new`` None and ``corrupt`` saying why (libcalico-go's parse
    failure update): the consumer treats the key as deleted. An old value that
    does not parse is left out (``old`` None).
    """

    type: EventType
    key: ResourceKey
    new: KVPair | None
    old: KVPair | None
    revision: str
    corrupt: CorruptEntry | None = None


@runtime_checkable
class Backend(Protocol):
    """A Calico datastore. See the module docstring for the revision semantics."""

    async def create(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        """Store a new key. :class:`AlreadyExists` if it exists."""
        ...

    async def update(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        """Overwrite an existing key; CAS on ``kv.revision`` when set."""
        ...

    async def apply(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        """Create or overwrite, unconditionally."""
        ...

    async def delete(self, key: ResourceKey[ModelT], revision: str = "") -> KVPair[ModelT]:
        """Remove a key and return what was stored; CAS on ``revision`` when set."""
        ...

    async def get(self, key: ResourceKey[ModelT]) -> KVPair[ModelT]:
        """The stored pair. :class:`NotFound` if absent."""
        ...

    async def list(self, opts: ResourceListOptions[ModelT]) -> KVList[ModelT]:
        """All pairs matching ``opts``, sorted by key, with the listing's revision."""
        ...

    def watch(self, opts: ResourceListOptions, revision: str) -> AsyncIterator[WatchEvent]:
        """Changes strictly after ``revision``. :class:`WatchCompacted` if that history is gone.

        Close the iterator (``aclose()``) to stop watching.
        """
        ...

    async def close(self) -> None:
        """Release connections. The backend is unusable afterwards."""
        ...


@runtime_checkable
class CreateAndUpdate(Protocol):
    """A backend that can write two keys in one atomic step (etcd: one transaction).

    IPAM uses it to record a new handle and the block it allocates from together,
    one round trip instead of two, and with no window in which the handle counts
    an address the block does not hold. Backends without it (Kubernetes: no
    multi-object transactions) get the two writes in Calico's order instead.
    """

    async def create_and_update(self, create: KVPair, update: KVPair) -> tuple[KVPair, KVPair]:
        """Create ``create`` (must not exist) and CAS-update ``update``, both or neither.

        :class:`AlreadyExists` (for ``create.key``) if the first exists, else
        :class:`NotFound` or :class:`Conflict` (for ``update.key``) as ``update`` would.
        """
        ...


@runtime_checkable
class ListKeys(Protocol):
    """A backend that can list which keys exist without reading their values (etcd: keys_only).

    IPAM uses it to find which blocks of a pool are taken when it claims one:
    Calico lists every block there, and decoding each (64 allocations and
    their attributes) is what made a claim slow as a cluster grows. Backends
    without it (Kubernetes) are listed in full instead.
    """

    async def list_keys(self, opts: ResourceListOptions[ModelT]) -> list[ResourceKey[ModelT]]:
        """The keys that ``list(opts)`` would return, in the same order."""
        ...


@runtime_checkable
class ListMany(Protocol):
    """A backend that can read several listings in one round trip, at one revision (etcd: one txn).

    A one-shot allocator (the CNI plugin: one process per pod) reads the pools,
    the IPAM configuration, its Node and its block affinities before it can
    choose a block. Four reads become one request, and the four answers are one
    consistent snapshot. Backends without it are read one listing at a time.
    """

    async def list_many(self, opts: Sequence[ResourceListOptions]) -> list[KVList]:
        """``[list(o) for o in opts]``, all read at the same revision."""
        ...
