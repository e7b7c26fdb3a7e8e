"""Typha's sync server: the handshake, the snapshot, then each connection follows its cache's breadcrumbs.

As Calico's ``typha/pkg/syncserver/sync_server.go``, on asyncio:

* a connection gets ``TYPHA_SERVERHANDSHAKETIMEOUTSECS`` to send its client
  hello (TLS, when configured, is negotiated first and the client's
  certificate checked against the required CN / URI SAN);
* the server hello names the compression chosen; the snapshot follows (the
  frames the cache made once for everyone joining at that breadcrumb), then
  the sync status, which ends the snapshot;
* then one sender per connection walks the breadcrumbs and writes each one's
  frame, made once and shared by every connection; it awaits ``drain()``
  (back-pressure: a slow reader slows only its own sender) and, when it is
  behind, writes several frames before draining;
* a pinger writes a ping every ``TYPHA_SERVERPINGINTERVALSECS``; a reader
  takes the pongs (and closes the connection on anything else, or on a
  malformed or oversized frame, with one log line);
* one watchdog for the whole server checks every connection: no pong for
  ``TYPHA_SERVERPONGTIMEOUTSECS``, or more than ``TYPHA_SERVERMAXFALLBEHINDSECS``
  behind the newest breadcrumb (after the new client's grace period), and the
  connection is closed. The watchdog, not the sender, decides, because a
  sender blocked in ``drain()`` on a client that stopped reading cannot;
* connection limits: above the target (``set_max_conns``, from the
  rebalancer, or ``TYPHA_MAXCONNECTIONSUPPERLIMIT``) one random connection
  is dropped every ``TYPHA_CONNECTIONDROPINTERVALSECS``; a graceful shutdown
  closes the listener and sheds the clients one at a time over
  ``TYPHA_SHUTDOWNTIMEOUTSECS`` (at most one per
  ``TYPHA_SHUTDOWNCONNECTIONDROPINTERVALMAXSECS``), so they move to the
  other Typhas in a trickle, not a stampede.

Each connection runs in its own tasks; whatever goes wrong with one (bad
bytes, a stalled reader, a reset) ends only that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from libcalico import daemon, syncproto
from libcalico.watching import SyncStatus
from typha import metrics, snapcache

log = logging.getLogger(__name__)

HEALTH_NAME = "SyncServer"  # Calico's
VERSION = "pycalico-typha"


@dataclass(frozen=True)
class ServerConfig:
    """Calico's syncserver.Config; times in seconds."""

    host: str = ""
    port: int = syncproto.DEFAULT_PORT  # 0: any free port (tests)
    max_message_size: int = syncproto.MAX_KVS_PER_MESSAGE
    max_fall_behind: float = 300.0
    new_client_fall_behind_grace: float = 300.0
    ping_interval: float = 10.0
    pong_timeout: float = 60.0
    handshake_timeout: float = 10.0
    write_timeout: float = 120.0
    drop_interval: float = 1.0
    shutdown_timeout: float = 300.0
    shutdown_max_drop_interval: float = 1.0
    max_conns: int = 2**31 - 1
    watchdog_interval: float = 1.0
    write_buffer_size: int = 0  # Calico's WriteBufferSize: SO_SNDBUF of each connection (tests), 0 = the kernel's
    ssl: ssl.SSLContext | None = None
    client_cn: str = ""
    client_uri_san: str = ""

    def __post_init__(self) -> None:
        if self.pong_timeout <= self.ping_interval * 2:  # Calico's ApplyDefaults
            object.__setattr__(self, "pong_timeout", self.ping_interval * 6)


class Server:
    """Serves every cache (one per syncer type) on one port."""

    def __init__(self, caches: dict[str, snapcache.Cache], config: ServerConfig, *,
                 health: daemon.Health | None = None) -> None:
        self.caches = caches
        self.config = config
        self.health = health
        self.connections: dict[int, Connection] = {}
        self.max_conns = config.max_conns
        self._next_id = random.getrandbits(31) << 32 | 1
        self._server: asyncio.Server | None = None
        self._listening = asyncio.Event()
        self.shutting_down = False
        if health is not None:
            health.register(HEALTH_NAME, timeout=2 * snapcache.HEALTH_INTERVAL)
            health.report(HEALTH_NAME, ready=True)

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def wait_listening(self) -> int:
        await self._listening.wait()
        return self.port

    async def serve(self) -> None:
        """Listen, and govern connections, until cancelled; then shed the clients gradually."""
        cfg = self.config
        self._server = await asyncio.start_server(
            self._accept, cfg.host or None, cfg.port, ssl=cfg.ssl,
            ssl_handshake_timeout=cfg.handshake_timeout if cfg.ssl else None, limit=1 << 16, backlog=1024)
        log.info("Typha listening on %s:%d%s", cfg.host or "*", self.port, " (TLS)" if cfg.ssl else "")
        self._listening.set()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._govern(), name="typha-governor")
                tg.create_task(self._watchdog(), name="typha-watchdog")
        except asyncio.CancelledError:
            await self.shut_down_gracefully()
            raise
        finally:
            for conn in list(self.connections.values()):
                conn.close("server stopping")
            self._server.close()

    def set_max_conns(self, n: int) -> None:
        if n != self.max_conns:
            log.info("new target number of connections: %d (was %d, now %d)", n, self.max_conns,
                     len(self.connections))
            self.max_conns = n

    def terminate_random_connection(self, reason: str) -> bool:
        if not self.connections:
            return False
        conn = random.choice(list(self.connections.values()))
        log.info("closing connection %d; reason: %s.", conn.id, reason)
        conn.close(reason)
        return True

    async def shut_down_gracefully(self) -> None:
        """Stop accepting; drop the connections one at a time within ``shutdown_timeout``."""
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info("starting graceful shutdown...")
        if self._server is not None:
            self._server.close()
        n = len(self.connections)
        if n:
            interval = min(self.config.shutdown_timeout * 0.95 / n, self.config.shutdown_max_drop_interval)
            log.info("shedding %d connections, one every %.3fs", n, interval)
            while self.terminate_random_connection("graceful shutdown in progress"):
                await asyncio.sleep(interval * random.uniform(0.9, 1.0))
        log.info("finished closing connections")

    async def _govern(self) -> None:
        """Calico's governNumberOfConnections: above the target, drop one a tick."""
        interval = self.config.drop_interval
        while True:
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))
            if not self.shutting_down and len(self.connections) > self.max_conns:
                if self.terminate_random_connection("re-balance load with other Typha instances"):
                    metrics.CONNECTIONS_DROPPED.inc()
            if self.health is not None:
                self.health.report(HEALTH_NAME, ready=True)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(self.config.watchdog_interval)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                why = conn.overdue(now)
                if why:
                    conn.close(why)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn_id = self._next_id
        self._next_id += 1
        if self.config.write_buffer_size:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.write_buffer_size)
        metrics.CONNECTIONS_ACCEPTED.inc()
        conn = Connection(self, conn_id, reader, writer)
        self.connections[conn_id] = conn
        metrics.CONNECTIONS_ACTIVE.inc()
        try:
            await conn.handle()
        finally:
            self.connections.pop(conn_id, None)
            metrics.CONNECTIONS_ACTIVE.dec()


class Connection:
    def __init__(self, server: Server, conn_id: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server, self.id, self.reader, self.writer = server, conn_id, reader, writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.syncer = ""
        self.hello: syncproto.ClientHello | None = None
        self.compression = ""
        self.position: snapcache.Breadcrumb | None = None  # the breadcrumb last written
        self.last_pong = time.monotonic()
        self.grace_end = float("inf")
        self.behind_logged = False
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._tasks: list[asyncio.Task[Any]] = []
        self._handler: asyncio.Task[Any] | None = None

    def __repr__(self) -> str:
        return f"connection {self.id} from {self.peer}" + (f" ({self.syncer})" if self.syncer else "")

    # --- life -----------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """End this connection now (from any task): abort the socket, stop its tasks."""
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self.writer.transport.abort()
        for t in (*self._tasks, self._handler):
            if t is not None and t is not asyncio.current_task():
                t.cancel()

    async def handle(self) -> None:
        cfg = self.server.config
        self._handler = asyncio.current_task()
        log.info("accepted %r", self)
        try:
            problem = self._check_peer_certificate()
            if problem:
                log.warning("refusing %r: %s", self, problem)
                return
            try:
                async with asyncio.timeout(cfg.handshake_timeout):  # not wait_for: it can swallow a cancel
                    msg = await syncproto.read_message(self.reader, max_size=syncproto.MAX_CLIENT_FRAME)
            except TimeoutError:
                log.warning("%r sent no hello within %gs; closing", self, cfg.handshake_timeout)
                return
            if not isinstance(msg, syncproto.ClientHello):
                log.warning("%r: first message was %s, not client_hello; closing", self, msg.TYPE)
                return
            cache = self.server.caches.get(msg.syncer_type)
            if cache is None:
                log.warning("%r requested unknown syncer type %r; closing", self, msg.syncer_type)
                return
            self.hello, self.syncer = msg, msg.syncer_type
            self.compression = syncproto.choose_compression(msg.compression)
            log.info("hello from %r: hostname %s, info %r, version %s, compression %r", self, msg.hostname, msg.info,
                     msg.version, self.compression or "none")
            await self._write(syncproto.encode(syncproto.ServerHello(VERSION, msg.syncer_type, self.compression,
                                                                     self.id)))
            metrics.CONNECTIONS_STREAMING.labels(self.syncer).inc()
            try:
                await self._stream(cache)
            finally:
                metrics.CONNECTIONS_STREAMING.labels(self.syncer).dec()
        except syncproto.ProtocolError as exc:
            log.warning("closing %r: %s", self, exc)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            if not self.closed.is_set():
                log.info("%r ended: %s", self, type(exc).__name__ if not str(exc) else exc)
        except asyncio.CancelledError:
            if not self.closed.is_set():  # the server is stopping
                raise
        finally:
            if self.close_reason:
                log.info("closed %r: %s", self, self.close_reason)
            self.close(self.close_reason or "done")

    def _check_peer_certificate(self) -> str:
        """With TLS: the client's certificate must carry the required CN or URI SAN (either, if both)."""
        cfg = self.server.config
        if cfg.ssl is None or not (cfg.client_cn or cfg.client_uri_san):
            return ""
        cert = self.writer.get_extra_info("peercert") or {}
        cns = {v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"}
        uris = {v for k, v in cert.get("subjectAltName", ()) if k == "URI"}
        if (cfg.client_cn and cfg.client_cn in cns) or (cfg.client_uri_san and cfg.client_uri_san in uris):
            return ""
        return (f"client certificate has CN {sorted(cns)} and URI SANs {sorted(uris)}; required CN "
                f"{cfg.client_cn!r} or URI SAN {cfg.client_uri_san!r}")

    # --- streaming ------------------------------------------------------------------------------

    async def _stream(self, cache: snapcache.Cache) -> None:
        started = time.monotonic()
        snap = await cache.snapshot(self.compression)
        for f in snap.frames:
            self.writer.write(f)
            await self._drain()
        crumb = snap.breadcrumb
        self.position = crumb
        await self._write(_status_frame(crumb.status))  # always: it ends the snapshot
        sent_status = crumb.status
        metrics.SNAPSHOT_SEND_SECS.labels(self.syncer).observe(time.monotonic() - started)
        log.info("sent %r a snapshot of %d keys at breadcrumb %d in %.3fs", self, snap.keys, crumb.seq,
                 time.monotonic() - started)
        self.grace_end = time.monotonic() + self.server.config.new_client_fall_behind_grace
        self.last_pong = time.monotonic()
        self._tasks = [asyncio.create_task(self._ping(), name=f"typha-ping-{self.id}"),
                       asyncio.create_task(self._read(), name=f"typha-read-{self.id}")]
        try:
            while True:
                crumb = await crumb.next()
                # Behind: write what is already published, several frames per drain.
                written = 0
                while True:
                    self.position = crumb
                    f = crumb.frame(self.compression)
                    if f:
                        self.writer.write(f)
                        written += len(f)
                        metrics.KVS_PER_MSG.labels(self.syncer).observe(len(crumb.deltas))
                    if crumb.status is not sent_status:
                        self.writer.write(_status_frame(crumb.status))
                        sent_status = crumb.status
                    nxt = crumb.next_now
                    if nxt is None or written > 1 << 20:
                        break
                    crumb = nxt
                metrics.CLIENT_LATENCY.labels(self.syncer).observe(cache.current.timestamp - crumb.timestamp)
                await self._drain()
        finally:
            for t in self._tasks:
                t.cancel()

    def overdue(self, now: float) -> str:
        """Why the watchdog should close this connection now ("" if it should not)."""
        if self.position is None:
            return ""
        cfg = self.server.config
        if now - self.last_pong > cfg.pong_timeout:
            return f"no pong for {now - self.last_pong:.1f}s (timeout {cfg.pong_timeout:g}s)"
        cache = self.server.caches[self.syncer]
        behind = cache.current.timestamp - self.position.timestamp
        if behind > cfg.max_fall_behind:
            if now > self.grace_end:
                log.warning("%r fell behind (%.1fs behind breadcrumb %d, at %d). Disconnecting.", self, behind,
                            cache.current.seq, self.position.seq)
                return f"client fell behind by {behind:.1f}s (limit {cfg.max_fall_behind:g}s)"
            if not self.behind_logged:
                log.warning("%r is a long way behind after its snapshot; allowing the grace period to catch up",
                            self)
                self.behind_logged = True
                metrics.GRACE_USED.labels(self.syncer).inc()
        return ""

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        await self._drain()

    async def _drain(self) -> None:
        started = time.monotonic()
        async with asyncio.timeout(self.server.config.write_timeout):
            await self.writer.drain()
        if self.syncer:
            metrics.WRITE_LATENCY.labels(self.syncer).observe(time.monotonic() - started)

    async def _ping(self) -> None:
        interval = self.server.config.ping_interval
        while True:
            await asyncio.sleep(interval * random.uniform(0.9, 1.0))
            # No drain here: the sender owns back-pressure; a ping only joins the buffer.
            self.writer.write(syncproto.encode(syncproto.Ping(time.time())))

    async def _read(self) -> None:
        try:
            while True:
                msg = await syncproto.read_message(self.reader, max_size=syncproto.MAX_CLIENT_FRAME)
                if not isinstance(msg, syncproto.Pong):
                    raise syncproto.ProtocolError(f"unexpected {msg.TYPE} from the client")
                self.last_pong = time.monotonic()
                metrics.PING_LATENCY.labels(self.syncer).observe(max(0.0, time.time() - msg.ping_timestamp))
        except syncproto.ProtocolError as exc:
            log.warning("closing %r: %s", self, exc)
            self.close(str(exc))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            self.close("client closed the connection")


_STATUS_FRAMES = {s: syncproto.encode(syncproto.SyncStatusMsg(s)) for s in SyncStatus}


def _status_frame(status: SyncStatus) -> bytes:
    return _STATUS_FRAMES[status]


__all__ = ["Connection", "HEALTH_NAME", "Server", "ServerConfig"]
