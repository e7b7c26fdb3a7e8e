"""The etcd v3 backend: Calico's key layout, CAS by mod_revision, watch from a revision.

Client library: ``aetcd`` (asyncio, maintained; see docs/decisions.md for why
not ``etcd3``). We use aetcd for its watch stream and compaction, and call the
KV stub directly for Range and Txn, because aetcd's ``transaction()`` drops the
response header and with it the revision a write produced, which the contract
must return. aetcd opens only plaintext channels to one host, so
:class:`_Client` opens the channel itself: TLS from Calico's
ETCD_CA_CERT_FILE / ETCD_CERT_FILE / ETCD_KEY_FILE, one channel per endpoint.

Every write is one etcd transaction, so there is no read-modify-write window:

* create: ``if create_revision(key) == 0 then put``
* update: ``if mod_revision(key) == rev then put`` (rev given), else
  ``if create_revision(key) != 0 then put``
* delete: the same compares, then delete
A failed compare is then told apart (missing vs. newer) from a Range in the
same transaction's failure branch.

Several endpoints (``ETCD_ENDPOINTS=http://a:2379,http://b:2379``) are all
used, as etcd's Go client uses them: requests go to one endpoint, and
:meth:`EtcdBackend._kv` moves to the next when that one fails. A read (safe
to repeat) is retried on the next endpoint after any transport failure; a
write only when it provably never left this process (gRPC found no
connection), the rule of etcd's own retry interceptor, because a write that
reached a server and lost its answer may have been applied. docs/decisions.md
says why this is ours and not gRPC's address list.

The TLS files are read and checked before the first channel exists: gRPC
aborts the whole process (SIGABRT, nothing on stdout) on a certificate
without its key, and a CA file with no certificate in it only fails each
handshake, without naming the file.

gRPC failures are mapped to :mod:`libcalico.errors` in :func:`_mapped`, the
one place this backend translates errors.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.rpc as rpc
import aetcd.watcher
import grpc

from libcalico.api.registry import ModelT
from libcalico.backend import codec, static
from libcalico.backend.api import EventType, WatchEvent
from libcalico.errors import (
    AlreadyExists,
    CalicoError,
    Conflict,
    CorruptEntry,
    DatastoreUnavailable,
    ErroredField,
    NotFound,
    ValidationError,
    WatchCompacted,
)
from libcalico.model import KVList, KVPair, ResourceKey, ResourceListOptions

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0

# Settings that make sense only together, by Calico's variable names.
_PAIRS = (("cert_file", "key_file"), ("key_file", "cert_file"), ("username", "password"), ("password", "username"))
_VARIABLE = {"cert_file": "ETCD_CERT_FILE", "key_file": "ETCD_KEY_FILE", "username": "ETCD_USERNAME",
             "password": "ETCD_PASSWORD"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One of ETCD_ENDPOINTS: where to connect, and whether with TLS."""

    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """Connection settings, named after Calico's ETCD_* variables."""

    endpoints: tuple[str, ...] = ("http://127.0.0.1:2379",)
    ca_cert_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password: str = ""
    timeout: float = DEFAULT_TIMEOUT
    # gRPC keepalive, as libcalico-go's etcd client sets it (keepaliveTime 30 s, keepaliveTimeout
    # 10 s): a frozen or partitioned member is noticed by an idle watch too, which then fails
    # over, instead of staying "in sync" on a view that cannot change.
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0

    def targets(self) -> list[Endpoint]:
        """Every endpoint, in the order given."""
        out = []
        for url in (e.strip() for e in self.endpoints):
            if not url:
                continue
            parts = urlsplit(url if "://" in url else f"http://{url}")
            try:
                port = parts.port or 2379
            except ValueError:
                port = 0
            if parts.scheme not in ("http", "https") or not parts.hostname or not port:
                raise DatastoreUnavailable(f"invalid etcd endpoint {url!r}: expected http(s)://host:port")
            out.append(Endpoint(parts.hostname, port, parts.scheme == "https" or bool(self.ca_cert_file or
                                                                                     self.cert_file)))
        if not out:
            raise DatastoreUnavailable("no etcd endpoints configured (set ETCD_ENDPOINTS)")
        return out

    def check(self) -> None:
        """Refuse half of a pair (a certificate without its key, a user without a password) by name."""
        missing = [ErroredField(_VARIABLE[need], f"must be set when {_VARIABLE[have]} is set")
                   for have, need in _PAIRS if getattr(self, have) and not getattr(self, need)]
        if missing:
            raise ValidationError(missing, context="etcd configuration")


def _read(path: str, what: str, marker: bytes) -> bytes:
    """A PEM file's bytes; DatastoreUnavailable naming the file when it is unreadable or holds no ``marker``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DatastoreUnavailable(f"cannot read etcd {what} file {path!r}: {exc.strerror}") from exc
    if marker not in data:
        raise DatastoreUnavailable(f"etcd {what} file {path!r} holds no PEM {what}")
    return data


def _no_password() -> str:
    raise ValueError("an encrypted key needs a password, which Calico has no setting for")


def tls_credentials(config: EtcdConfig) -> Any:
    """gRPC's TLS credentials from Calico's files, each checked (and named when unusable) first."""
    config.check()
    ca = _read(config.ca_cert_file, "CA certificate", b"-----BEGIN CERTIFICATE-----") if config.ca_cert_file else b""
    cert = _read(config.cert_file, "certificate", b"-----BEGIN CERTIFICATE-----") if config.cert_file else b""
    key = _read(config.key_file, "private key", b"PRIVATE KEY-----") if config.key_file else b""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # OpenSSL parses what gRPC would, with a message we can show
    if ca:
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii", errors="replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise DatastoreUnavailable(f"etcd CA certificate file {config.ca_cert_file!r} is not usable: "
                                       f"{getattr(exc, 'reason', None) or exc}") from exc
    if cert:
        try:
            ctx.load_cert_chain(config.cert_file, config.key_file, password=_no_password)
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise DatastoreUnavailable(f"etcd certificate file {config.cert_file!r} and key file "
                                       f"{config.key_file!r} are not a usable pair: "
                                       f"{getattr(exc, 'reason', None) or exc}") from exc
    return grpc.ssl_channel_credentials(root_certificates=ca or None, private_key=key or None,
                                        certificate_chain=cert or None)


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client on a channel we open: plaintext or TLS, to one endpoint."""

    channel: Any

    def __init__(self, endpoint: Endpoint, config: EtcdConfig, credentials: Any) -> None:
        super().__init__(host=endpoint.host, port=endpoint.port, username=config.username or None,
                         password=config.password or None, timeout=config.timeout)
        self.endpoint = endpoint
        self._credentials = credentials
        self._keepalive = {
            "grpc.keepalive_time_ms": int(config.keepalive_time * 1000),
            "grpc.keepalive_timeout_ms": int(config.keepalive_timeout * 1000),
            "grpc.keepalive_permit_without_calls": 1,   # pings on an idle channel too (a quiet watch)
            "grpc.http2.max_pings_without_data": 0,     # as many as it takes, data or not
            # gRPC core otherwise spaces pings without data 5 minutes apart, whatever keepalive_time says.
            "grpc.http2.min_time_between_pings_ms": int(config.keepalive_time * 1000),
            "grpc.http2.min_ping_interval_without_data_ms": int(config.keepalive_time * 1000),
            # ... and newer gRPC cores wait for a ping's ack this long (1 minute by default).
            "grpc.http2.ping_timeout_ms": int(config.keepalive_timeout * 1000),
        }

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self.channel is None:
            target = f"{self._host}:{self._port}"
            options = [*self._options.items(), *self._keepalive.items()]
            self.channel = (rpc.secure_channel(target, self._credentials, options=options) if self.endpoint.tls
                            else rpc.insecure_channel(target, options=options))
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
        if self._username and self._password:
            self.auth_stub = rpc.AuthStub(self.channel)
            resp = await self.auth_stub.Authenticate(
                rpc.AuthenticateRequest(name=self._username, password=self._password), timeout=self._timeout)
            self.metadata = (("token", resp.token),)
        self._watcher = aetcd.watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                              metadata=self.metadata)
        self._connected.set()


def _rpc_error(exc: BaseException) -> Any:
    """The gRPC error behind ``exc`` (aetcd wraps them), or None."""
    while exc is not None and not isinstance(exc, rpc.AioRpcError):
        exc = exc.__cause__  # type: ignore[assignment]
    return exc


def _transport_failure(exc: BaseException) -> bool:
    """The endpoint could not be reached or stopped answering (rather than refusing the request)."""
    err = _rpc_error(exc)
    if err is not None:
        return err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, (OSError, aetcd.exceptions.ConnectionFailedError, aetcd.exceptions.ConnectionTimeoutError))


def _never_sent(exc: BaseException) -> bool:
    """gRPC had no connection to send the request on (etcd's clientv3 retries writes only then)."""
    err = _rpc_error(exc)
    return (err is not None and err.code() == grpc.StatusCode.UNAVAILABLE
            and "failed to connect" in (err.details() or "").lower())


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Translate aetcd/gRPC failures into the libcalico error tree."""
    try:
        yield
    except CalicoError:
        raise
    except aetcd.exceptions.RevisionCompactedError as exc:
        raise WatchCompacted(str(exc.compacted_revision)) from exc
    except (aetcd.exceptions.ClientError, rpc.AioRpcError, ssl.SSLError, OSError) as exc:
        detail = exc.details() if isinstance(exc, rpc.AioRpcError) else str(exc)
        raise DatastoreUnavailable(f"etcd {what} failed: {detail or type(exc).__name__}") from exc


LIST_PAGE = 500  # keys per Range request when listing


def _range_end(prefix: bytes) -> bytes:
    """The end of the key range that holds every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


class EtcdBackend:
    """A :class:`~libcalico.backend.api.Backend` on a real etcd v3."""

    def __init__(self, config: EtcdConfig) -> None:
        config.check()
        self._config = config
        self._endpoints = config.targets()
        self._credentials: Any = None
        self._clients: dict[int, _Client] = {}  # one per endpoint, opened when first used
        self._current = 0  # the endpoint requests go to

    def _client(self) -> _Client:
        """The current endpoint's client (not yet connected)."""
        index = self._current
        client = self._clients.get(index)
        if client is None:
            endpoint = self._endpoints[index]
            if endpoint.tls and self._credentials is None:
                self._credentials = tls_credentials(self._config)
            client = self._clients[index] = _Client(endpoint, self._config, self._credentials)
        return client

    def _failed(self, client: _Client, exc: BaseException) -> None:
        """``client``'s endpoint failed: later requests go to the next one."""
        index = self._endpoints.index(client.endpoint)
        if len(self._endpoints) > 1 and self._current == index:
            self._current = (index + 1) % len(self._endpoints)
            err = _rpc_error(exc)
            log.info("etcd endpoint %s failed (%s); using %s", client.endpoint,
                     err.details() if err is not None else exc, self._endpoints[self._current])

    async def _kv(self, what: str, call: Callable[[Any, dict[str, Any]], Awaitable[T]], *, read: bool) -> T:
        """One KV request, ``call(stub, kwargs)``, failing over across the endpoints (see the module doc)."""
        attempts = max(2, len(self._endpoints)) if read else len(self._endpoints)
        for attempt in range(1, attempts + 1):
            client = self._client()  # a TLS file that is no good fails here, named, and is not retried
            try:
                with _mapped(what):
                    await client.connect()
                    return await call(client.kvstub, {"timeout": self._config.timeout, "metadata": client.metadata})
            except DatastoreUnavailable as exc:
                cause = exc.__cause__
                if cause is None or not _transport_failure(cause):
                    raise
                self._failed(client, cause)
                if attempt == attempts or not (read or _never_sent(cause)):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --- transactions -------------------------------------------------------------------

    async def _txn(self, key: ResourceKey, compare: Any, success: Any, what: str) -> Any:
        """Run one txn whose failure branch reads the key back; return the response."""
        req = rpc.TxnRequest(
            compare=[compare],
            success=[success],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key.path().encode()))],
        )
        return await self._kv(what, lambda stub, kw: stub.Txn(req, **kw), read=False)

    @staticmethod
    def _compare(key: ResourceKey, revision: str, *, must_exist: bool) -> Any:
        path = key.path().encode()
        if revision:
            try:
                rev = int(revision)
            except ValueError:
                raise Conflict(key) from None
            return rpc.Compare(key=path, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=rev)
        result = rpc.Compare.GREATER if must_exist else rpc.Compare.EQUAL
        return rpc.Compare(key=path, result=result, target=rpc.Compare.CREATE, create_revision=0)

    def _put_op(self, kv: KVPair) -> Any:
        return rpc.RequestOp(request_put=rpc.PutRequest(key=kv.key.path().encode(), value=codec.encode(kv.value)))

    def _stored(self, kv: KVPair, revision: int) -> KVPair:
        rev = str(revision)
        return KVPair(kv.key, codec.with_revision(kv.value, rev), rev)

    async def create(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        resp = await self._txn(kv.key, self._compare(kv.key, "", must_exist=False), self._put_op(kv), "create")
        if not resp.succeeded:
            raise AlreadyExists(kv.key)
        return self._stored(kv, resp.header.revision)

    async def update(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        resp = await self._txn(kv.key, self._compare(kv.key, kv.revision, must_exist=True), self._put_op(kv),
                               "update")
        if not resp.succeeded:
            self._raise_failed(kv.key, resp)
        return self._stored(kv, resp.header.revision)

    async def create_and_update(self, create: KVPair, update: KVPair) -> tuple[KVPair, KVPair]:
        req = rpc.TxnRequest(
            compare=[self._compare(create.key, "", must_exist=False),
                     self._compare(update.key, update.revision, must_exist=True)],
            success=[self._put_op(create), self._put_op(update)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=create.key.path().encode(), count_only=True)),
                     rpc.RequestOp(request_range=rpc.RangeRequest(key=update.key.path().encode(), count_only=True))],
        )
        resp = await self._kv("create_and_update", lambda stub, kw: stub.Txn(req, **kw), read=False)
        if not resp.succeeded:
            if resp.responses[0].response_range.count:
                raise AlreadyExists(create.key)
            if not resp.responses[1].response_range.count:
                raise NotFound(update.key)
            raise Conflict(update.key)
        return self._stored(create, resp.header.revision), self._stored(update, resp.header.revision)

    async def apply(self, kv: KVPair[ModelT]) -> KVPair[ModelT]:
        req = rpc.PutRequest(key=kv.key.path().encode(), value=codec.encode(kv.value))
        resp = await self._kv("apply", lambda stub, kw: stub.Put(req, **kw), read=False)
        return self._stored(kv, resp.header.revision)

    async def delete(self, key: ResourceKey[ModelT], revision: str = "") -> KVPair[ModelT]:
        op = rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key.path().encode(), prev_kv=True))
        resp = await self._txn(key, self._compare(key, revision, must_exist=True), op, "delete")
        if not resp.succeeded:
            self._raise_failed(key, resp)
        prev = resp.responses[0].response_delete_range.prev_kvs
        if not prev:  # deleted concurrently between compare and delete cannot happen in one txn
            raise NotFound(key)
        try:
            return self._decode(key, prev[0])
        except CorruptEntry:  # deleting a value that does not parse is how an operator clears it
            # The one pair without a value (see libcalico.backend.api): typed as the key's kind.
            return KVPair(key, cast("ModelT", None), str(prev[0].mod_revision))

    @staticmethod
    def _raise_failed(key: ResourceKey, resp: Any) -> None:
        kvs = resp.responses[0].response_range.kvs if resp.responses else []
        if not kvs:
            raise NotFound(key)
        raise Conflict(key)

    # --- reads ----------------------------------------------------------------------------

    def _decode(self, key: ResourceKey, kv: Any) -> KVPair:
        rev = str(kv.mod_revision)
        return KVPair(key, codec.decode(key, kv.value, rev), rev)

    async def get(self, key: ResourceKey[ModelT]) -> KVPair[ModelT]:
        if static.is_default_allow(key):  # etcdv3.go Get: always the static profile
            return static.default_allow_profile()
        req = rpc.RangeRequest(key=key.path().encode())
        resp = await self._kv("get", lambda stub, kw: stub.Range(req, **kw), read=True)
        if not resp.kvs:
            raise NotFound(key)
        return self._decode(key, resp.kvs[0])

    @staticmethod
    def _range_request(opts: ResourceListOptions, start: bytes | None = None, revision: int = 0,
                       keys_only: bool = False) -> Any:
        prefix = opts.prefix().encode()
        if opts.name and (opts.namespace or not opts.resource_class.NAMESPACED):
            return rpc.RangeRequest(key=prefix, keys_only=keys_only, revision=revision)  # one key
        # Pages of LIST_PAGE keys, all read at the first page's revision: one consistent
        # snapshot, and no response over gRPC's 4 MiB message limit however many objects.
        return rpc.RangeRequest(key=start or prefix, range_end=_range_end(prefix), limit=LIST_PAGE,
                                revision=revision, keys_only=keys_only,
                                sort_order=rpc.RangeRequest.ASCEND, sort_target=rpc.RangeRequest.KEY)

    async def _range(self, opts: ResourceListOptions, keys_only: bool = False, revision: int = 0,
                     first: Any = None) -> tuple[list[Any], int]:
        """The raw key-values under ``opts``' prefix, and the revision they were read at.

        ``first`` is a first page already read (by :meth:`list_many`) at ``revision``.
        """
        kvs: list[Any] = []
        start = None
        while True:
            if first is None:
                req = self._range_request(opts, start, revision, keys_only)
                resp = await self._kv("list", lambda stub, kw: stub.Range(req, **kw), read=True)
            else:
                resp, first = first, None
            revision = revision or resp.header.revision
            kvs += resp.kvs
            if not resp.more or not resp.kvs:
                return kvs, revision
            start = resp.kvs[-1].key + b"\0"

    def _matching(self, opts: ResourceListOptions, kvs: list[Any]) -> Iterator[tuple[ResourceKey, Any]]:
        for kv in kvs:
            key = ResourceKey.from_path(kv.key.decode())
            if key is not None and opts.matches(key):
                yield key, kv

    def _listing(self, opts: ResourceListOptions, kvs: list[Any], revision: int) -> KVList:
        out = KVList([], str(revision))
        for key, kv in self._matching(opts, kvs):
            try:
                out.items.append(self._decode(key, kv))
            except CorruptEntry as exc:  # libcalico-go logs and skips it; one bad key hides no other
                log.warning("skipping %s", exc)
                out.corrupt.append(exc)
        return out

    async def list(self, opts: ResourceListOptions[ModelT]) -> KVList[ModelT]:
        kvs, revision = await self._range(opts)
        return static.with_default_allow(opts, self._listing(opts, kvs, revision))

    async def list_many(self, opts: Sequence[ResourceListOptions]) -> builtins.list[KVList]:
        req = rpc.TxnRequest(success=[rpc.RequestOp(request_range=self._range_request(o)) for o in opts])
        resp = await self._kv("list", lambda stub, kw: stub.Txn(req, **kw), read=True)
        revision = resp.header.revision
        out = []
        for o, r in zip(opts, resp.responses, strict=True):
            page = r.response_range
            kvs, _ = await self._range(o, revision=revision, first=page) if page.more else (list(page.kvs), 0)
            out.append(static.with_default_allow(o, self._listing(o, kvs, revision)))
        return out

    async def list_keys(self, opts: ResourceListOptions[ModelT]) -> builtins.list[ResourceKey[ModelT]]:
        kvs, _ = await self._range(opts, keys_only=True)
        return [key for key, _ in self._matching(opts, kvs)]

    async def watch(self, opts: ResourceListOptions, revision: str) -> AsyncIterator[WatchEvent]:
        prefix = opts.prefix().encode()
        start = int(revision) + 1 if revision else None
        client = self._client()
        stream = None
        try:
            with _mapped("watch"):
                await client.connect()
                stream = await client.watch(prefix, range_end=_range_end(prefix), start_revision=start,
                                            prev_kv=True)
                async for event in stream:
                    key = ResourceKey.from_path(event.kv.key.decode())
                    if key is None or not opts.matches(key):
                        continue
                    yield self._event(key, event)
        except DatastoreUnavailable as exc:  # the caller re-lists and watches again: on the next endpoint
            cause = exc.__cause__
            if cause is not None and (_transport_failure(cause) or
                                      isinstance(cause, aetcd.exceptions.WatchTimeoutError)):
                self._failed(client, cause)
            raise
        finally:
            if stream is not None:
                # Bounded: aetcd's cancel queues a request for its watcher's task and takes its lock; a
                # watcher whose stream broke may never take it, and a cleanup must not hang the caller.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stream.cancel(), self._config.timeout)

    def _event(self, key: ResourceKey, event: Any) -> WatchEvent:
        rev = str(event.kv.mod_revision)
        old = None
        if event.prev_kv is not None and event.prev_kv.key:
            with contextlib.suppress(CorruptEntry):
                old = self._decode(key, event.prev_kv)
        if event.kind == "DELETE":
            return WatchEvent(EventType.DELETED, key, None, old, rev)
        kind = EventType.ADDED if event.kv.version == 1 else EventType.MODIFIED
        try:
            return WatchEvent(kind, key, self._decode(key, event.kv), old, rev)
        except CorruptEntry as exc:
            return WatchEvent(kind, key, None, old, rev, exc)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self._config.timeout)

    # --- admin (tests, calicoctl datastore) --------------------------------------------------

    async def compact(self, revision: str) -> None:
        with _mapped("compact"):
            client = self._client()
            await client.connect()
            await client.compact(int(revision), physical=True)
