"""A rate-limited work queue of keys, as client-go's workqueue (the sample-controller's shape).

Handlers (kopf's event handlers, timers) only :meth:`WorkQueue.add` a key: "this
needs looking at". Workers take keys and run the reconciler, which reads the
current state and makes the world match it, so an event that was merged with
another, or missed, costs nothing: the next reconcile sees the state anyway.
The promises, as client-go's:

* **dedupe**: a key added many times before a worker takes it runs once;
* **one worker per key**: a key being reconciled is never handed to a second
  worker; added again meanwhile, it runs once more after the first finishes;
* **rate-limited retries**: a reconcile that raises is retried after an
  exponential per-key backoff (client-go's ItemExponentialFailureRateLimiter:
  5 ms doubling to 1000 s); a success forgets the key's failures;
* **requeue after**: a reconciler may ask to be run again later (a grace period
  that ends), by returning the delay in seconds.

The queue is plain asyncio: one event loop, so no locks; waiting workers wake on an event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
Reconciler = Callable[[K], Awaitable[float | None]]

BASE_DELAY = 0.005  # client-go's DefaultControllerRateLimiter: 5ms ...
MAX_DELAY = 1000.0  # ... to 1000s


class WorkQueue(Generic[K]):
    """Keys waiting, keys being worked on, per-key failures. See the module docstring."""

    def __init__(self, name: str, *, base_delay: float = BASE_DELAY, max_delay: float = MAX_DELAY) -> None:
        self.name = name
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._order: list[K] = []          # keys ready, oldest first
        self._dirty: set[K] = set()        # keys that need a run (queued, or waiting for their worker)
        self._processing: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._wake = asyncio.Event()
        self.runs = 0  # reconciles started (for tests and metrics)

    def __len__(self) -> int:
        return len(self._order)

    def add(self, key: K) -> None:
        """Mark ``key`` as needing work (dedupes; waits for its worker if one is on it)."""
        if key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._order.append(key)
            self._notify()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds (an earlier pending timer for the key wins)."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        timer = self._timers.get(key)
        when = loop.time() + delay
        if timer is not None and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def add_rate_limited(self, key: K) -> float:
        """Add ``key`` after its backoff (``base * 2**failures``, at most ``max_delay``); return the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = float(min(self.base_delay * 2.0 ** failures, self.max_delay))
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _notify(self) -> None:
        self._wake.set()

    async def get(self) -> K:
        while not self._order:
            self._wake.clear()
            await self._wake.wait()
        key = self._order.pop(0)
        self._dirty.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:  # added again while it was being worked on
            self._order.append(key)
            self._notify()

    def busy(self) -> bool:
        """A key is queued or being worked on (timers for later do not count)."""
        return bool(self._order or self._processing)

    def idle(self) -> bool:
        """Nothing queued, nothing being worked on, no retry or requeue pending."""
        return not self._order and not self._processing and not self._timers

    async def run(self, reconcile: Reconciler[K], *, workers: int = 1) -> None:
        """Run ``workers`` workers until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for i in range(workers):
                tg.create_task(self._worker(reconcile), name=f"{self.name}-worker-{i}")

    async def _worker(self, reconcile: Reconciler[K]) -> None:
        while True:
            key = await self.get()
            self.runs += 1
            try:
                again = await reconcile(key)
            except Exception as exc:
                delay = self.add_rate_limited(key)
                log.warning("%s: error syncing %r, will retry in %.3gs: %s: %s", self.name, key, delay,
                            type(exc).__name__, exc,
                            exc_info=self._failures.get(key) == 1 or log.isEnabledFor(logging.DEBUG))
            else:
                self.forget(key)
                if again is not None:
                    self.add_after(key, again)
            finally:
                self.done(key)

    def shutdown(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


__all__ = ["BASE_DELAY", "MAX_DELAY", "Reconciler", "WorkQueue"]
