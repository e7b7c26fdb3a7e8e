"""The one supervised daemon runner: Felix, confd, Typha and the controllers all run under it.

Why one runner: a daemon that keeps running half-alive is worse than one that
exits. confd used to start its tasks with bare ``create_task`` and wait on a
stop event; when its render task died, the process stayed up and did nothing.
Here every long-lived task is a *root*: when any root returns or raises, the
whole daemon stops, logs which root ended it and why, and exits non-zero, so
its supervisor (systemd, the kubelet, the lab) restarts it. A signal (SIGTERM,
SIGINT) is the only clean way out (exit 0).

Shutdown is bounded and in steps, as uvicorn's and kopf's are: the first
signal stops taking work and cancels every root; roots get
``graceful_timeout`` seconds to finish (a cancelled apply completes its
current kernel call); then the cleanups run (close the datastore, stop the
health and metrics servers), each with its own bound. A second signal during
that wait exits at once. ``asyncio.TaskGroup`` (STYLE.md, example 10) waits for
cancelled tasks without any bound, so the supervision here is written with
``asyncio.wait`` and an explicit timeout instead.

The runner also owns what every Calico daemon has: the health server
(``/liveness``, ``/readiness``; 204 when good, 503 with the reasons in the body,
as libcalico-go's health aggregator answers), the Prometheus metrics server,
and logging in one format (:func:`setup_logging`). Components report health
through :class:`Health`; a reporter that registered a timeout and has not
reported within it counts as not live and not ready (a stuck loop is caught,
not only a dead one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import prometheus_client as prom

from libcalico import metrics

log = logging.getLogger(__name__)

# Calico's log levels (FELIX_LOGSEVERITYSCREEN, LOG_LEVEL, ...), read case-insensitively.
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
           "error": logging.ERROR, "fatal": logging.CRITICAL, "panic": logging.CRITICAL, "critical": logging.CRITICAL}
LOG_FORMAT = "%(asctime)s.%(msecs)03d [%(levelname)s][%(process)d] %(name)s %(filename)s %(lineno)d: %(message)s"


def log_level(name: str) -> int:
    """Calico's level name as a :mod:`logging` level; ValueError naming the accepted ones."""
    try:
        return _LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r} (one of Debug, Info, Warning, Error, Fatal, Panic)") from None


def setup_logging(level: str | int = "Info") -> None:
    """One format for every daemon, on stderr (Calico's: time, level, pid, where, message)."""
    lvl = log_level(level) if isinstance(level, str) else level
    logging.basicConfig(stream=sys.stderr, level=lvl, format=LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S", force=True)


# --- health ---------------------------------------------------------------------------------------


@dataclass
class _Reporter:
    live: bool = True
    ready: bool = False
    detail: str = ""
    timeout: float | None = None
    reported: float = field(default_factory=time.monotonic)


class Health:
    """What each part of a daemon says of itself, summed up as Calico's health aggregator does.

    Live and ready only when every reporter is; a reporter with a timeout that
    has not reported within it is neither (its detail says so).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._reporters: dict[str, _Reporter] = {}
        self._checks: dict[str, Callable[[], list[str]]] = {}
        self._clock = clock

    def check(self, name: str, problems: Callable[[], list[str]]) -> None:
        """Ask ``problems()`` at each readiness request: ready when it answers none (live regardless)."""
        self._checks[name] = problems

    def register(self, name: str, *, timeout: float | None = None) -> None:
        self._reporters[name] = _Reporter(timeout=timeout, reported=self._clock())

    def report(self, name: str, *, live: bool = True, ready: bool, detail: str = "") -> None:
        r = self._reporters.setdefault(name, _Reporter())
        r.live, r.ready, r.detail, r.reported = live, ready, detail, self._clock()

    def _stale(self, r: _Reporter) -> bool:
        return r.timeout is not None and self._clock() - r.reported > r.timeout

    def _why(self, name: str, r: _Reporter, what: str) -> str:
        if self._stale(r):
            return f"{name}: no report within {r.timeout:g}s"
        return f"{name}: {r.detail or what}"

    def live(self) -> tuple[bool, list[str]]:
        bad = [self._why(n, r, "not live") for n, r in sorted(self._reporters.items()) if self._stale(r) or not r.live]
        return not bad, bad

    def ready(self) -> tuple[bool, list[str]]:
        bad = [self._why(n, r, "not ready") for n, r in sorted(self._reporters.items())
               if self._stale(r) or not r.live or not r.ready]
        for name, problems in sorted(self._checks.items()):
            bad += [f"{name}: {p}" for p in problems()]
        return not bad, bad

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One HTTP request: ``GET /liveness`` or ``/readiness`` (204, or 503 and why); else 404."""
        try:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace")
            parts = line.split(" ")
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            check = {"/liveness": self.live, "/readiness": self.ready}.get(path)
            if check is None:
                code, body = "404 Not Found", b""
            else:
                ok, why = check()
                code, body = ("204 No Content", b"") if ok else ("503 Service Unavailable", "\n".join(why).encode())
            writer.write(f"HTTP/1.1 {code}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + body)
            await writer.drain()
        except (OSError, TimeoutError, UnicodeError):
            pass
        finally:
            writer.close()


# --- the runner -----------------------------------------------------------------------------------


class RootExited(Exception):
    """A root task ended: the daemon stops (and exits non-zero)."""


Cleanup = Callable[[], Awaitable[None]]


class Daemon:
    """Roots, cleanups, health and metrics of one daemon process. See the module docstring."""

    def __init__(self, name: str, *, graceful_timeout: float = 10.0, cleanup_timeout: float = 5.0) -> None:
        self.name = name
        self.health = Health()
        self.graceful_timeout = graceful_timeout
        self.cleanup_timeout = cleanup_timeout
        self._roots: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        self._cleanups: list[tuple[str, Cleanup]] = []
        self._health_addr: tuple[str, int] | None = None
        self._metrics: tuple[str, int, prom.CollectorRegistry] | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self.stop_reason = ""

    def root(self, name: str, fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``fn()`` for the daemon's whole life; its end (return or raise) stops the daemon."""
        self._roots.append((name, fn))

    def cleanup(self, name: str, fn: Cleanup) -> None:
        """Run ``fn()`` on the way out, after the roots stopped (last added, first run)."""
        self._cleanups.append((name, fn))

    def serve_health(self, host: str, port: int) -> None:
        self._health_addr = (host, port)

    def serve_metrics(self, host: str, port: int, registry: prom.CollectorRegistry) -> None:
        self._metrics = (host, port, registry)

    def stop(self, reason: str = "asked to stop") -> None:
        """Begin a graceful shutdown (what a signal does)."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: received %s; shutting down (at most %gs)", self.name, sig.name, self.graceful_timeout)
            self.stop(sig.name)
        else:  # a second signal: the operator means it
            log.warning("%s: received %s again; exiting now", self.name, sig.name)
            self._stop_now.set()

    async def _guard(self, name: str, fn: Callable[[], Awaitable[object]]) -> None:
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("%s: %s failed: %s: %s", self.name, name, type(exc).__name__, exc, exc_info=exc)
            raise RootExited(f"{name} failed: {type(exc).__name__}: {exc}") from exc
        raise RootExited(f"{name} ended")

    async def run(self) -> int:
        """Run until a signal (exit code 0) or until a root ends (1). Cleanups always run."""
        loop = asyncio.get_running_loop()
        self._stop_now = asyncio.Event()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread: no handlers
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        code = 0
        try:
            await self._start_servers()
            tasks = {asyncio.create_task(self._guard(n, fn), name=f"{self.name}:{n}"): n for n, fn in self._roots}
            stopper = asyncio.create_task(self._stop.wait(), name=f"{self.name}:stop")
            done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and isinstance(t.exception(), RootExited):
                    code = 1
                    self.stop(str(t.exception()))
                    log.error("%s: stopping: %s", self.name, self.stop_reason)
            stopper.cancel()
            for t in tasks:
                t.cancel()
            await self._wait_bounded(set(tasks), self.graceful_timeout, "roots")
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception() is not None and t not in done:
                    exc = t.exception()
                    if not isinstance(exc, RootExited):
                        log.error("%s: %s raised while stopping: %s", self.name, tasks[t], exc)
        finally:
            for name, fn in reversed(self._cleanups):
                try:
                    await asyncio.wait_for(fn(), self.cleanup_timeout)
                except TimeoutError:
                    log.warning("%s: cleanup %s took over %gs; left", self.name, name, self.cleanup_timeout)
                except Exception as exc:
                    log.warning("%s: cleanup %s failed: %s", self.name, name, exc)
            for sig in installed:
                loop.remove_signal_handler(sig)
        log.info("%s: stopped (%s)", self.name, self.stop_reason or "done")
        return code

    async def _wait_bounded(self, tasks: set[asyncio.Task[None]], timeout: float, what: str) -> None:
        if not tasks:
            return
        async def all_done() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)

        now = asyncio.create_task(self._stop_now.wait())
        waiter = asyncio.create_task(all_done())
        try:
            done, _ = await asyncio.wait({waiter, now}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                left = sorted(t.get_name() for t in tasks if not t.done())
                log.warning("%s: %s did not stop in time: %s", self.name, what, ", ".join(left))
        finally:
            now.cancel()
            waiter.cancel()

    async def _start_servers(self) -> None:
        if self._health_addr is not None:
            host, port = self._health_addr
            server = await asyncio.start_server(self.health.serve, host, port)

            async def close_health() -> None:
                server.close()
                await server.wait_closed()

            self.cleanup("health server", close_health)
            log.info("%s: health on %s:%d", self.name, host, port)
        if self._metrics is not None:
            host, port, registry = self._metrics
            httpd = metrics.start_server(host, port, registry)  # Calico's names, types and quantiles

            async def close_metrics() -> None:
                await asyncio.to_thread(httpd.shutdown)
                httpd.server_close()

            self.cleanup("metrics server", close_metrics)
            log.info("%s: Prometheus metrics on %s:%d", self.name, host, port)


def main(daemon: Daemon) -> int:
    """``asyncio.run(daemon.run())`` for a console script: its exit code, and no traceback on Ctrl-C."""
    try:
        return asyncio.run(daemon.run())
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 130


__all__ = ["Daemon", "Health", "LOG_FORMAT", "RootExited", "log_level", "main", "setup_logging"]
