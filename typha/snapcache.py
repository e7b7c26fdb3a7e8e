"""Typha's snapshot cache: one writer, a chain of breadcrumbs, every byte encoded once.

As Calico's ``typha/pkg/snapcache/cache.go``: the upstream syncer's updates
go into the cache; its one loop applies them in batches of at most
``max_batch`` (Calico's SnapshotCacheMaxBatchSize, 100) to the current state
and publishes each batch as a :class:`Breadcrumb`: the batch's deltas, the
sync status, the time, and a link to the next breadcrumb once there is one.
Every connection holds the breadcrumb it has sent and follows the links at
its own pace: a fast one waits on the newest breadcrumb's event, a slow one
walks the chain without waiting, and one that stopped reading holds only its
own place (the breadcrumbs behind every reader are garbage).

Encoded once: each delta is serialised (key path, stored bytes, packed
msgpack) when it enters the cache, each breadcrumb's frame is made (and
compressed) the first time a connection asks for it and then shared, and the
snapshot a new client gets is made once per breadcrumb and compression and
shared by every client that joins there.

Calico keeps an immutable B-tree snapshot in every breadcrumb so that its
goroutines can read it while the writer moves on. Here the writer and the
readers share one event loop, so the snapshot is taken of the current state
when a client asks for it, in one step with no await (nothing moves
meanwhile), and only its compression runs in a worker thread, on bytes that
no longer change. Breadcrumbs then carry deltas only, and a slow client does
not keep old copies of the whole state alive.

Updates that change nothing but the revision are skipped (Calico's
``WouldBeNoOp``); deletions always pass (Calico's Felix counts them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from libcalico import daemon, syncproto
from libcalico.syncproto import SerializedUpdate
from libcalico.watching import SyncStatus, Update, UpdateType
from typha import metrics

log = logging.getLogger(__name__)

HEALTH_INTERVAL = 10.0  # Calico's healthInterval: reports every 10 s, stale after 20 s


@dataclass(eq=False)
class Breadcrumb:
    """One published batch: its deltas, the status after it, and the link to the next one."""

    seq: int
    timestamp: float
    deltas: tuple[SerializedUpdate, ...]
    status: SyncStatus
    syncer: str = ""
    _next: Breadcrumb | None = field(default=None, repr=False)
    _linked: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _frames: dict[str, bytes] = field(default_factory=dict, repr=False)

    def frame(self, compression: str) -> bytes:
        """The deltas as one KVs frame (b"" when none), made once per compression."""
        if not self.deltas:
            return b""
        out = self._frames.get(compression)
        if out is None:
            out = self._frames[compression] = syncproto.frame(syncproto.kvs_payload(self.deltas),
                                                              compression=compression)
        return out

    @property
    def next_now(self) -> Breadcrumb | None:
        """The next breadcrumb if it is already published (no waiting)."""
        return self._next

    async def next(self) -> Breadcrumb:
        """The next breadcrumb, waiting for it to be published when this is the newest."""
        nxt = self._next
        if nxt is not None:
            metrics.BREADCRUMB_NON_BLOCK.labels(self.syncer).inc()
            return nxt
        await self._linked.wait()
        assert self._next is not None
        metrics.BREADCRUMB_BLOCK.labels(self.syncer).inc()
        return self._next

    def _link(self, nxt: Breadcrumb) -> None:
        self._next = nxt
        self._linked.set()


@dataclass(frozen=True)
class Snapshot:
    """The state at one breadcrumb as the frames a new client is sent (KVs of at most 100 each)."""

    breadcrumb: Breadcrumb
    frames: tuple[bytes, ...]
    keys: int


class Cache:
    """The cache of one syncer type; implements the syncer callbacks (on_status, on_updates)."""

    def __init__(self, name: str, *, max_batch: int = 100, max_message_size: int = syncproto.MAX_KVS_PER_MESSAGE,
                 health: daemon.Health | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.max_batch = max_batch
        self.max_message_size = max_message_size
        self._clock = clock
        self.kvs: dict[str, SerializedUpdate] = {}  # the current state, every entry of type NEW
        self._pending: list[Update] = []
        self._pending_status: SyncStatus = SyncStatus.WAIT_FOR_DATASTORE
        self._wake = asyncio.Event()
        self.current = Breadcrumb(0, clock(), (), SyncStatus.WAIT_FOR_DATASTORE, name)
        self._snapshots: dict[str, tuple[int, asyncio.Future[Snapshot]]] = {}
        self._health = health
        self.health_name = name if name.endswith("cache") else f"{name}-cache"  # Calico's HealthName
        if health is not None:
            health.register(self.health_name, timeout=2 * HEALTH_INTERVAL)
            self._report_health()

    # --- the syncer's callbacks (cheap: queue and wake the loop) -------------------------------

    def on_status(self, status: SyncStatus) -> None:
        log.info("%s: status from the datastore: %s", self.name, status.value)
        self._pending_status = status
        self._report_health()
        self._wake.set()

    def on_updates(self, updates: list[Update]) -> None:
        if updates:
            self._pending.extend(updates)
            self._wake.set()

    # --- the one writer -----------------------------------------------------------------------

    async def run(self) -> None:
        """Publish breadcrumbs until cancelled."""
        while True:
            try:
                async with asyncio.timeout(HEALTH_INTERVAL):
                    await self._wake.wait()
            except TimeoutError:
                self._report_health()
                metrics.BREADCRUMB_SIZE.labels(self.name).observe(0)  # decays to zero when quiet
                continue
            self._wake.clear()
            self.publish()

    def publish(self) -> None:
        """Apply what is pending as breadcrumbs of at most ``max_batch`` updates (one even if only
        the status changed); the status moves only with the last batch, so nobody is told "in sync"
        before the updates that make it so."""
        pending, self._pending = self._pending, []
        while True:
            batch, pending = pending[:self.max_batch], pending[self.max_batch:]
            self._publish_one(batch, last=not pending)
            if not pending:
                break

    def _publish_one(self, updates: list[Update], *, last: bool) -> None:
        old = self.current
        status = self._pending_status if last else old.status
        deltas: list[SerializedUpdate] = []
        for u in updates:
            metrics.UPDATES_TOTAL.labels(self.name).inc()
            kv = SerializedUpdate.from_update(u)
            if kv.value is None:
                self.kvs.pop(kv.key, None)
            else:
                prev = self.kvs.get(kv.key)
                if prev is not None and prev.value == kv.value:
                    metrics.UPDATES_SKIPPED.labels(self.name).inc()
                    continue
                self.kvs[kv.key] = kv.with_type(UpdateType.NEW)
            deltas.append(kv)
        metrics.BREADCRUMB_SIZE.labels(self.name).observe(len(deltas))
        if not deltas and status is old.status:
            return
        crumb = Breadcrumb(old.seq + 1, self._clock(), tuple(deltas), status, self.name)
        self.current = crumb
        old._link(crumb)
        metrics.CACHE_SIZE.labels(self.name).set(len(self.kvs))
        metrics.SEQ_NUMBER.labels(self.name).set(crumb.seq)

    # --- snapshots ----------------------------------------------------------------------------

    async def snapshot(self, compression: str) -> Snapshot:
        """The current state as frames, made once per breadcrumb and compression and shared."""
        crumb = self.current
        cached = self._snapshots.get(compression)
        if cached is not None and cached[0] == crumb.seq:
            metrics.SNAPSHOTS_REUSED.labels(self.name).inc()
            return await asyncio.shield(cached[1])
        # Taken in one step (no await): the state is exactly that of ``crumb``.
        items = sorted(self.kvs.values(), key=lambda kv: kv.key)
        size = self.max_message_size
        payloads = [syncproto.kvs_payload(items[i:i + size]) for i in range(0, len(items), size)]
        future: asyncio.Future[Snapshot] = asyncio.get_running_loop().create_future()
        self._snapshots[compression] = (crumb.seq, future)
        try:
            frames = await asyncio.to_thread(lambda: tuple(syncproto.frame(p, compression=compression)
                                                           for p in payloads))
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            self._snapshots.pop(compression, None)
            raise
        snap = Snapshot(crumb, frames, len(items))
        metrics.SNAPSHOTS_GENERATED.labels(self.name).inc()
        metrics.SNAPSHOT_RAW_BYTES.labels(self.name).set(sum(len(p) for p in payloads))
        metrics.SNAPSHOT_COMPRESSED_BYTES.labels(self.name).set(sum(len(f) for f in frames))
        future.set_result(snap)
        return snap

    # --- health -------------------------------------------------------------------------------

    def _report_health(self) -> None:
        """Live always; ready when the upstream syncer is in sync (Calico's cache health)."""
        if self._health is not None:
            in_sync = self._pending_status is SyncStatus.IN_SYNC
            self._health.report(self.health_name, ready=in_sync,
                                detail="" if in_sync else f"datastore {self._pending_status.value}")
