"""The Typha client: a syncer fed by Typha instead of the datastore, behind the same callbacks.

A consumer (Felix, confd) gives a :class:`~libcalico.watching.Syncer` its
``on_status`` / ``on_updates`` callbacks; :class:`TyphaClient` takes the same
and calls them the same way, so the consumer cannot tell which feeds it:

* status ``WaitForDatastore`` first, then what Typha reports (its own
  syncer's status), and ``WaitForDatastore`` again while disconnected;
* each key's first value as NEW, later ones as UPDATED, a deletion only for
  a key the consumer has (Typha passes deletions of keys it never had; a
  direct syncer never sends those), a value that does not parse as a
  deletion (logged);
* after a reconnect (Typha restarted, or it dropped us for falling behind,
  or to rebalance) the new snapshot is compared with what the consumer has,
  as a direct syncer's re-list is: unchanged keys are not sent again, and at
  the end of the snapshot (the first ``sync_status``) the keys it did not
  contain are deleted.

Where Typha is, and how to reach it, is read as Calico's
``syncclientutils.ReadTyphaConfig`` reads it: ``<PREFIX>TYPHAADDR``,
``TYPHAK8SSERVICENAME``, ``TYPHAK8SNAMESPACE``, ``TYPHAREADTIMEOUT``,
``TYPHAWRITETIMEOUT``, ``TYPHAKEYFILE``, ``TYPHACERTFILE``,
``TYPHACAFILE``, ``TYPHACN``, ``TYPHAURISAN``, with Felix's prefix
``FELIX_`` and confd's ``CONFD_``, ``FELIX_``, ``CALICO_`` (first found
wins). :func:`syncer_for` gives a component a Typha client when Typha is
configured and a direct syncer otherwise. The wire format is
:mod:`libcalico.syncproto` (docs/typha-protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from libcalico import syncproto
from libcalico.backend.api import Backend
from libcalico.errors import CorruptEntry
from libcalico.model import KVPair, ResourceKey
from libcalico.syncers import SyncerDefinition
from libcalico.watching import Backoff, SyncerCallbacks, SyncStatus, Update, UpdateType

log = logging.getLogger(__name__)

FELIX_PREFIXES = ("FELIX_",)
CONFD_PREFIXES = ("CONFD_", "FELIX_", "CALICO_")  # Calico's confd config
CONNECT_TIMEOUT = 10.0  # Calico's dialer timeout


@dataclass(frozen=True)
class TyphaConfig:
    """Calico's syncclientutils.TyphaConfig; timeouts in seconds."""

    addr: str = ""
    k8s_service_name: str = ""
    k8s_namespace: str = "kube-system"
    read_timeout: float = 30.0
    write_timeout: float = 10.0
    key_file: str = ""
    cert_file: str = ""
    ca_file: str = ""
    cn: str = ""
    uri_san: str = ""

    @classmethod
    def from_environment(cls, prefixes: Sequence[str], env: Mapping[str, str] | None = None) -> TyphaConfig:
        """``<prefix>TYPHA<FIELD>`` for each field, first prefix that has it; "none" is unset.
        ValueError names a timeout that is not a number of seconds."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            upper = f.name.replace("_", "").upper()
            for prefix in prefixes:
                name = f"{prefix}TYPHA{upper}"
                raw = env.get(name, "")
                if raw and raw != "none":
                    if f.name.endswith("timeout"):
                        try:
                            values[f.name] = float(raw)
                        except ValueError:
                            raise ValueError(f"{name}: {raw!r} is not a number of seconds") from None
                    else:
                        values[f.name] = raw
                    break
        return cls(**values)  # type: ignore[arg-type]

    @property
    def enabled(self) -> bool:
        return bool(self.addr or self.k8s_service_name)

    @property
    def requires_tls(self) -> bool:
        return bool(self.key_file or self.cert_file or self.ca_file or self.cn or self.uri_san)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client's TLS context (Calico's rules: all of key, cert and CA, and CN or URI SAN)."""
        if not self.requires_tls:
            return None
        missing = [n for n, v in (("TYPHAKEYFILE", self.key_file), ("TYPHACERTFILE", self.cert_file),
                                  ("TYPHACAFILE", self.ca_file)) if not v]
        if missing or not (self.cn or self.uri_san):
            raise ValueError("Typha TLS needs TYPHAKEYFILE, TYPHACERTFILE, TYPHACAFILE and TYPHACN or TYPHAURISAN"
                             + (f"; missing {', '.join(missing)}" if missing else "; missing TYPHACN/TYPHAURISAN"))
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False  # Calico checks the CN / URI SAN it was told, not the address dialled
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def check_server_certificate(self, cert: Mapping[str, object] | None) -> str:
        """"" when Typha's certificate carries the expected CN or URI SAN, else why not."""
        if not self.requires_tls:
            return ""
        cert = cert or {}
        subject = cert.get("subject", ())
        cns = {v for rdn in subject for k, v in rdn if k == "commonName"} if isinstance(subject, tuple) else set()
        sans = cert.get("subjectAltName", ())
        uris = {v for k, v in sans if k == "URI"} if isinstance(sans, tuple) else set()
        if (self.cn and self.cn in cns) or (self.uri_san and self.uri_san in uris):
            return ""
        return (f"Typha's certificate has CN {sorted(cns)} and URI SANs {sorted(uris)}; expected CN {self.cn!r} "
                f"or URI SAN {self.uri_san!r}")


Discover = Callable[[], Awaitable[list[str]]]


@contextlib.asynccontextmanager
async def kube_api(kubeconfig: str = "") -> AsyncIterator[Any]:
    """A kubernetes_asyncio ApiClient from ``kubeconfig`` (a path; "" = in-cluster, as Calico's clients)."""
    import kubernetes_asyncio.client as k8s
    import kubernetes_asyncio.config as k8s_config

    cfg = k8s.Configuration()
    if kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    api = k8s.ApiClient(cfg)
    try:
        yield api
    finally:
        await api.close()


async def discover_kubernetes(*, namespace: str = "kube-system", service: str = "calico-typha",
                              port_name: str = "calico-typha", node: str = "", kubeconfig: str = "") -> list[str]:
    """Typha's addresses from its Service's EndpointSlices, as Calico's discovery reads them.

    Ready endpoints only, with the port named ``port_name``; this node's own Typhas first, each
    group shuffled (so clients spread over the Typhas). ValueError when there is none (Calico's
    "missing Kubernetes service IP or port").
    """
    import kubernetes_asyncio.client as k8s

    async with kube_api(kubeconfig) as api:
        slices = await k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}")
    local: list[str] = []
    remote: list[str] = []
    for s in slices.items or []:
        port = next((p.port for p in s.ports or [] if p.name == port_name), None)
        if port is None:
            continue
        for ep in s.endpoints or []:
            if ep.conditions is not None and ep.conditions.ready is False:
                continue
            for addr in ep.addresses or []:
                target = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
                (local if node and ep.node_name == node else remote).append(target)
    if not local and not remote:
        raise ValueError(f"missing Kubernetes service IP or port: no ready {port_name!r} endpoint of "
                         f"{namespace}/{service}")
    random.shuffle(local)
    random.shuffle(remote)
    return local + remote


class TyphaClient:
    """A syncer fed by Typha: ``run()`` until cancelled; ``status`` and callbacks as :class:`Syncer`'s."""

    def __init__(self, config: TyphaConfig, syncer_type: str, callbacks: SyncerCallbacks, *, hostname: str = "",
                 info: str = "", version: str = "pycalico", addresses: Sequence[str] | None = None,
                 discover: Discover | None = None, backoff: Backoff | None = None,
                 max_frame: int = syncproto.MAX_SERVER_FRAME,
                 compression: Sequence[str] = syncproto.COMPRESSIONS) -> None:
        self.config = config
        self.syncer_type = syncer_type
        self._callbacks = callbacks
        self.hostname = hostname or socket.gethostname()
        self.info, self.version = info, version
        self._addresses = list(addresses) if addresses is not None else ([config.addr] if config.addr else [])
        self._discover = discover
        self._backoff = backoff or Backoff(initial=0.2, maximum=5.0)
        self._max_frame = max_frame
        self._compression = tuple(compression)
        self._ssl = config.ssl_context()
        self._known: dict[ResourceKey, str] = {}
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self.relists = 0  # snapshots after the first (reconnects)
        self.connected_to = ""  # the Typha this client is streaming from, "" when not
        self.server_conn_id = 0
        self._conn_id = random.getrandbits(31) << 32 | 1
        self.reading = asyncio.Event()  # clear it to stop reading (a client that stalls; tests)
        self.reading.set()
        self._began = False
        self._snapshots = 0

    def _set_status(self, status: SyncStatus) -> None:
        if status is not self.status:
            self.status = status
            self._callbacks.on_status(status)

    async def run(self) -> None:
        """Connect, follow, reconnect (to the next Typha) when the connection ends; until cancelled."""
        self._callbacks.on_status(self.status)
        while True:
            if self._discover is None:
                addresses = list(self._addresses)
                if not addresses:
                    raise ValueError("Typha is enabled but no address is known (set TYPHAADDR or the service name)")
            else:
                try:
                    addresses = await self._discover()
                except Exception as exc:  # the API server's answer, or its absence: try again
                    log.warning("Typha discovery failed: %s; retrying", _why(exc))
                    addresses = []
            for addr in addresses:
                self._began = False
                try:
                    await self._session(addr)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, syncproto.ProtocolError,
                        ssl.SSLError) as exc:
                    log.warning("connection to Typha at %s ended: %s", addr, _why(exc))
                finally:
                    self.connected_to = ""
                    self._set_status(SyncStatus.WAIT_FOR_DATASTORE)
                if self._began:
                    self._backoff.reset()
                    break  # had a working session: start again from the first address
            await asyncio.sleep(self._backoff.next())

    async def _session(self, addr: str) -> None:
        """One connection: hello, snapshot, deltas, until it fails (``_began``: a snapshot began)."""
        host, _, port = addr.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        async with asyncio.timeout(CONNECT_TIMEOUT):
            reader, writer = await asyncio.open_connection(host, int(port or syncproto.DEFAULT_PORT), ssl=self._ssl,
                                                           server_hostname=host if self._ssl else None, limit=1 << 20)
        try:
            problem = self.config.check_server_certificate(writer.get_extra_info("peercert"))
            if problem:
                raise syncproto.ProtocolError(problem)
            self._conn_id += 1
            writer.write(syncproto.encode(syncproto.ClientHello(
                hostname=self.hostname, info=self.info, version=self.version, syncer_type=self.syncer_type,
                compression=self._compression, client_conn_id=self._conn_id)))
            async with asyncio.timeout(self.config.write_timeout):
                await writer.drain()
            hello = await self._read(reader)
            if not isinstance(hello, syncproto.ServerHello):
                raise syncproto.ProtocolError(f"expected server_hello, got {hello.TYPE}")
            if hello.syncer_type != self.syncer_type:
                raise syncproto.ProtocolError(f"Typha answered for syncer type {hello.syncer_type!r}, "
                                              f"not {self.syncer_type!r}")
            log.info("connected to Typha at %s (connection %d, %s syncer, compression %s)", addr,
                     hello.server_conn_id, self.syncer_type, hello.compression or "none")
            self.connected_to, self.server_conn_id = addr, hello.server_conn_id
            if self._snapshots:
                self.relists += 1
            self._snapshots += 1
            self._began = True
            snapshot: set[ResourceKey] | None = set()  # keys of the snapshot, until it ends
            while True:
                await self.reading.wait()
                msg = await self._read(reader)
                if isinstance(msg, syncproto.KVs):
                    self._on_kvs(msg.kvs, snapshot)
                elif isinstance(msg, syncproto.SyncStatusMsg):
                    if snapshot is not None:
                        self._end_snapshot(snapshot)
                        snapshot = None
                    self._set_status(msg.status)
                elif isinstance(msg, syncproto.Ping):
                    writer.write(syncproto.encode(syncproto.Pong(msg.timestamp, time.time())))
                    async with asyncio.timeout(self.config.write_timeout):
                        await writer.drain()
                else:
                    raise syncproto.ProtocolError(f"unexpected {msg.TYPE} from Typha")
        finally:
            writer.transport.abort()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read(self, reader: asyncio.StreamReader) -> syncproto.Message:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
        async with asyncio.timeout(self.config.read_timeout):
            return await syncproto.read_message(reader, max_size=self._max_frame)

    def _on_kvs(self, kvs: tuple[syncproto.SerializedUpdate, ...], snapshot: set[ResourceKey] | None) -> None:
        out: list[Update] = []
        for kv in kvs:
            try:
                update = kv.to_update()
            except syncproto.ProtocolError as exc:
                log.warning("skipping a KV from Typha: %s", exc)  # a key this version does not know
                continue
            except CorruptEntry as exc:
                log.warning("value from Typha does not parse, treated as deleted: %s", exc)
                key = ResourceKey.from_path(kv.key)
                assert key is not None
                update = Update(UpdateType.DELETED, KVPair(key, None, kv.revision))
            key = update.key
            if snapshot is not None:
                snapshot.add(key)
            if update.kv.value is None:
                if self._known.pop(key, None) is not None:
                    out.append(Update(UpdateType.DELETED, update.kv))
                continue
            prev = self._known.get(key)
            if snapshot is not None and prev == update.kv.revision:
                continue  # a resync's unchanged key: the consumer has it
            self._known[key] = update.kv.revision
            out.append(Update(UpdateType.NEW if prev is None else UpdateType.UPDATED, update.kv))
        if out:
            self._callbacks.on_updates(out)

    def _end_snapshot(self, snapshot: set[ResourceKey]) -> None:
        gone = [k for k in self._known if k not in snapshot]
        for k in gone:
            revision = self._known.pop(k)
            self._callbacks.on_updates([Update(UpdateType.DELETED, KVPair(k, None, revision))])

def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Runs(Protocol):
    """What a component needs of its syncer, direct or through Typha."""

    status: SyncStatus
    relists: int

    async def run(self) -> None: ...


def syncer_for(definition: SyncerDefinition, backend: Backend, callbacks: SyncerCallbacks, *, hostname: str,
               prefixes: Sequence[str], info: str = "", env: Mapping[str, str] | None = None) -> Runs:
    """A Typha client when Typha is configured (``<prefix>TYPHAADDR``...), else a direct syncer."""
    env = os.environ if env is None else env
    config = TyphaConfig.from_environment(prefixes, env)
    if not config.enabled:
        return definition.syncer(backend, callbacks)
    discover: Discover | None = None
    if not config.addr:  # Calico: the address wins; else the Kubernetes service
        kubeconfig = env.get("KUBECONFIG", "")

        async def discover() -> list[str]:
            return await discover_kubernetes(namespace=config.k8s_namespace, service=config.k8s_service_name,
                                             node=hostname, kubeconfig=kubeconfig)
    log.info("%s syncer through Typha (%s)", definition.type, config.addr or
             f"service {config.k8s_namespace}/{config.k8s_service_name}")
    return TyphaClient(config, definition.type, callbacks, hostname=hostname, info=info, discover=discover)


__all__ = ["CONFD_PREFIXES", "FELIX_PREFIXES", "Runs", "TyphaClient", "TyphaConfig", "discover_kubernetes",
           "kube_api", "syncer_for"]
