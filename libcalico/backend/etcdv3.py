"""The etcd v3 backend: Calico's key layout, CAS by mod_revision, watch from a revision.

Client library: ``aetcd`` (asyncio, maintained; see docs/decisions.md for why
not ``etcd3``). We use aetcd for the gRPC channel, authentication and its
watch stream, and call the KV stub directly for Range and Txn, because
aetcd's ``transaction()`` drops the response header and with it the revision a
write produced, which the contract must return. aetcd opens only plaintext
channels, so :class:`_Client` adds TLS (Calico's ETCD_CA_CERT_FILE /
ETCD_CERT_FILE / ETCD_KEY_FILE) by building a secure channel itself.

Every write is one etcd transaction, so there is no read-modify-write window:

* create: ``if create_revision(key) == 0 then put``
* update: ``if mod_revision(key) == rev then put`` (rev given), else
  ``if create_revision(key) != 0 then put``
* delete: the same compares, then delete
A failed compare is then told apart (missing vs. newer) from a Range in the
same transaction's failure branch.

gRPC failures are mapped to :mod:`libcalico.errors` in :func:`_mapped`, the
one place this backend translates errors.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions
import aetcd.rpc as rpc
import aetcd.watcher

from libcalico.backend import codec
from libcalico.backend.api import EventType, WatchEvent
from libcalico.errors import (
    AlreadyExists,
    CalicoError,
    Conflict,
    CorruptEntry,
    DatastoreUnavailable,
    NotFound,
    WatchCompacted,
)
from libcalico.model import KVList, KVPair, ResourceKey, ResourceListOptions

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0


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

    def target(self) -> tuple[str, int, bool]:
        """host, port and whether TLS is used, from the first endpoint."""
        if not self.endpoints:
            raise DatastoreUnavailable("no etcd endpoints configured (set ETCD_ENDPOINTS)")
        url = self.endpoints[0].strip()
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DatastoreUnavailable(f"invalid etcd endpoint {url!r}: expected http(s)://host:port")
        tls = parts.scheme == "https" or bool(self.ca_cert_file or self.cert_file)
        return parts.hostname, parts.port or 2379, tls


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DatastoreUnavailable(f"cannot read etcd {what} {path!r}: {exc.strerror}") from None


class _Client(aetcd.Client):  # type: ignore[misc]
    """aetcd's client, able to open a TLS channel."""

    def __init__(self, config: EtcdConfig) -> None:
        host, port, self._tls = config.target()
        super().__init__(host=host, port=port, username=config.username or None,
                         password=config.password or None, timeout=config.timeout)
        self._config = config

    async def connect(self) -> None:
        if not self._tls:
            await super().connect()
            return
        if self._connected.is_set():
            return
        import grpc

        cfg = self._config
        creds = grpc.ssl_channel_credentials(
            root_certificates=_read(cfg.ca_cert_file, "CA certificate") if cfg.ca_cert_file else None,
            private_key=_read(cfg.key_file, "key") if cfg.key_file else None,
            certificate_chain=_read(cfg.cert_file, "certificate") if cfg.cert_file else None,
        )
        self.channel = rpc.secure_channel(f"{self._host}:{self._port}", creds, options=self._options.items())
        if self._username and self._password:
            self.auth_stub = rpc.AuthStub(self.channel)
            resp = await self.auth_stub.Authenticate(
                rpc.AuthenticateRequest(name=self._username, password=self._password), timeout=self._timeout)
            self.metadata = (("token", resp.token),)
        self.kvstub = rpc.KVStub(self.channel)
        self.clusterstub = rpc.ClusterStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.maintenancestub = rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                              metadata=self.metadata)
        self._connected.set()


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Translate aetcd/gRPC failures into the libcalico error tree."""
    try:
        yield
    except CalicoError:
        raise
    except aetcd.exceptions.RevisionCompactedError as exc:
        raise WatchCompacted(str(exc.compacted_revision)) from None
    except (aetcd.exceptions.ClientError, rpc.AioRpcError, ssl.SSLError, OSError) as exc:
        detail = exc.details() if isinstance(exc, rpc.AioRpcError) else str(exc)
        raise DatastoreUnavailable(f"etcd {what} failed: {detail or type(exc).__name__}") from None


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
        self._config = config
        self._client = _Client(config)

    async def _call(self, what: str, coro: Awaitable[T]) -> T:
        with _mapped(what):
            return await coro

    async def _stub(self) -> Any:
        with _mapped("connect"):
            await self._client.connect()
        return self._client.kvstub

    def _kw(self) -> dict[str, Any]:
        return {"timeout": self._config.timeout, "metadata": self._client.metadata}

    # --- transactions -------------------------------------------------------------------

    async def _txn(self, key: ResourceKey, compare: Any, success: Any, what: str) -> Any:
        """Run one txn whose failure branch reads the key back; return the response."""
        stub = await self._stub()
        req = rpc.TxnRequest(
            compare=[compare],
            success=[success],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=key.path().encode()))],
        )
        return await self._call(what, stub.Txn(req, **self._kw()))

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

    async def create(self, kv: KVPair) -> KVPair:
        resp = await self._txn(kv.key, self._compare(kv.key, "", must_exist=False), self._put_op(kv), "create")
        if not resp.succeeded:
            raise AlreadyExists(kv.key)
        return self._stored(kv, resp.header.revision)

    async def update(self, kv: KVPair) -> KVPair:
        resp = await self._txn(kv.key, self._compare(kv.key, kv.revision, must_exist=True), self._put_op(kv),
                               "update")
        if not resp.succeeded:
            self._raise_failed(kv.key, resp)
        return self._stored(kv, resp.header.revision)

    async def create_and_update(self, create: KVPair, update: KVPair) -> tuple[KVPair, KVPair]:
        stub = await self._stub()
        req = rpc.TxnRequest(
            compare=[self._compare(create.key, "", must_exist=False),
                     self._compare(update.key, update.revision, must_exist=True)],
            success=[self._put_op(create), self._put_op(update)],
            failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=create.key.path().encode(), count_only=True)),
                     rpc.RequestOp(request_range=rpc.RangeRequest(key=update.key.path().encode(), count_only=True))],
        )
        resp = await self._call("create_and_update", stub.Txn(req, **self._kw()))
        if not resp.succeeded:
            if resp.responses[0].response_range.count:
                raise AlreadyExists(create.key)
            if not resp.responses[1].response_range.count:
                raise NotFound(update.key)
            raise Conflict(update.key)
        return self._stored(create, resp.header.revision), self._stored(update, resp.header.revision)

    async def apply(self, kv: KVPair) -> KVPair:
        stub = await self._stub()
        req = rpc.PutRequest(key=kv.key.path().encode(), value=codec.encode(kv.value))
        resp = await self._call("apply", stub.Put(req, **self._kw()))
        return self._stored(kv, resp.header.revision)

    async def delete(self, key: ResourceKey, revision: str = "") -> KVPair:
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
            return KVPair(key, None, str(prev[0].mod_revision))

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

    async def get(self, key: ResourceKey) -> KVPair:
        for attempt in (1, 2):  # a read is safe to repeat: once more after a stall or a dropped connection
            try:
                stub = await self._stub()
                resp = await self._call("get", stub.Range(rpc.RangeRequest(key=key.path().encode()), **self._kw()))
                break
            except DatastoreUnavailable:
                if attempt == 2:
                    raise
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
        stub = await self._stub()
        kvs: list[Any] = []
        start = None
        while True:
            if first is None:
                req = self._range_request(opts, start, revision, keys_only)
                resp = await self._call("list", stub.Range(req, **self._kw()))
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

    async def list(self, opts: ResourceListOptions) -> KVList:
        kvs, revision = await self._range(opts)
        return self._listing(opts, kvs, revision)

    async def list_many(self, opts: Sequence[ResourceListOptions]) -> builtins.list[KVList]:
        stub = await self._stub()
        req = rpc.TxnRequest(success=[rpc.RequestOp(request_range=self._range_request(o)) for o in opts])
        resp = await self._call("list", stub.Txn(req, **self._kw()))
        revision = resp.header.revision
        out = []
        for o, r in zip(opts, resp.responses, strict=True):
            page = r.response_range
            kvs, _ = await self._range(o, revision=revision, first=page) if page.more else (list(page.kvs), 0)
            out.append(self._listing(o, kvs, revision))
        return out

    async def list_keys(self, opts: ResourceListOptions) -> builtins.list[ResourceKey]:
        kvs, _ = await self._range(opts, keys_only=True)
        return [key for key, _ in self._matching(opts, kvs)]

    async def watch(self, opts: ResourceListOptions, revision: str) -> AsyncIterator[WatchEvent]:
        prefix = opts.prefix().encode()
        with _mapped("connect"):
            await self._client.connect()
        start = int(revision) + 1 if revision else None
        with _mapped("watch"):
            stream = await self._client.watch(prefix, range_end=_range_end(prefix), start_revision=start,
                                              prev_kv=True)
        try:
            with _mapped("watch"):
                async for event in stream:
                    key = ResourceKey.from_path(event.kv.key.decode())
                    if key is None or not opts.matches(key):
                        continue
                    yield self._event(key, event)
        finally:
            with contextlib.suppress(Exception):
                await stream.cancel()

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
        with contextlib.suppress(Exception):
            await self._client.close()

    # --- admin (tests, calicoctl datastore) --------------------------------------------------

    async def compact(self, revision: str) -> None:
        with _mapped("compact"):
            await self._client.connect()
            await self._client.compact(int(revision), physical=True)
