"""Typha's wire protocol: the messages of Calico's syncproto in a documented, versioned framing.

Calico's Typha speaks gob, which only Go reads. The messages here are
Calico's (``typha/pkg/syncproto/sync_proto.go``: client hello, server hello,
sync status, KV batches, ping, pong), each a msgpack map in a length-prefixed
frame, optionally zstd-compressed. The full format is in
``docs/typha-protocol.md``; in short::

    frame   = version:u8 (1)  flags:u8 (bit 0: zstd)  length:u32 big-endian  payload
    payload = msgpack map {"type": "<message type>", ...fields}

A KV is a :class:`SerializedUpdate`: the key's datastore path (Calico's
layout), the value as the datastore stores it (:mod:`libcalico.backend.codec`,
so a value is encoded once, by Typha, and parsed by each client as if read
from etcd), the revision and Calico's update type (1 new, 2 updated,
3 deleted). Its msgpack form is computed once and kept, so a snapshot or a
batch is a concatenation of bytes already made, and a whole frame is made
once and written to every connection (Typha's snapshot cache).

Bad input is a :class:`ProtocolError` that says what was wrong (a frame
longer than the reader allows is :class:`FrameTooLarge`); whoever reads the
connection closes it, with a log line, and nothing else is affected.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack
import zstandard

from libcalico.backend import codec
from libcalico.errors import CalicoError, CorruptEntry
from libcalico.model import KVPair, ResourceKey
from libcalico.watching import SyncStatus, Update, UpdateType

DEFAULT_PORT = 5473  # Calico's syncproto.DefaultPort
VERSION = 1  # the framing's version: the first byte of every frame
HEADER = struct.Struct("!BBI")
FLAG_ZSTD = 0x01
ZSTD = "zstd"
COMPRESSIONS = (ZSTD,)  # what this side can decode, in order of preference
MAX_KVS_PER_MESSAGE = 100  # Calico's ServerMaxMessageSize default
# Calico's maxInboundMessageBytes: a client's messages (hello, pong) are small.
MAX_CLIENT_FRAME = 1 << 20
# What a client accepts from Typha: 100 KVs of the largest kind (an IPAM block with its
# attributes) stay far below this.
MAX_SERVER_FRAME = 64 << 20
COMPRESS_ABOVE = 512  # smaller payloads are sent as they are: zstd would not pay for itself

_compressor = zstandard.ZstdCompressor(level=3, write_content_size=True)
_decompressor = zstandard.ZstdDecompressor()


class ProtocolError(CalicoError, ValueError):
    """Bytes or a message that break the protocol; the connection that sent them is closed."""


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        self.size, self.limit = size, limit
        super().__init__(f"frame of {size} bytes is over the limit of {limit} bytes")


# Calico's api.UpdateType values.
_UPDATE_TYPE = {UpdateType.NEW: 1, UpdateType.UPDATED: 2, UpdateType.DELETED: 3}
_UPDATE_OF = {v: k for k, v in _UPDATE_TYPE.items()}
_STATUS_OF = {s.value: s for s in SyncStatus}


# --- KVs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SerializedUpdate:
    """One KV as sent: key path, stored bytes (None: deleted), revision, update type."""

    key: str
    value: bytes | None
    revision: str
    update_type: UpdateType
    packed: bytes = field(default=b"", compare=False, repr=False)  # msgpack of the above, made once

    @classmethod
    def of(cls, key: str, value: bytes | None, revision: str, update_type: UpdateType) -> SerializedUpdate:
        packed = msgpack.packb([key, value, revision, _UPDATE_TYPE[update_type]], use_bin_type=True)
        return cls(key, value, revision, update_type, packed)

    @classmethod
    def from_update(cls, update: Update) -> SerializedUpdate:
        value = update.kv.value
        return cls.of(update.key.path(), None if value is None else codec.encode(value), update.kv.revision,
                      update.type)

    def with_type(self, update_type: UpdateType) -> SerializedUpdate:
        return self if update_type is self.update_type else self.of(self.key, self.value, self.revision, update_type)

    def to_update(self) -> Update:
        """The update a consumer gets. ProtocolError for a key we do not know; a value that does
        not parse is passed as a deletion (Calico's client does the same), with ``corrupt`` set."""
        key = ResourceKey.from_path(self.key)
        if key is None:
            raise ProtocolError(f"unknown key {self.key!r}")
        if self.value is None:
            return Update(UpdateType.DELETED, KVPair(key, None, self.revision))
        return Update(self.update_type, KVPair(key, codec.decode(key, self.value, self.revision), self.revision))

    @classmethod
    def from_wire(cls, item: Any) -> SerializedUpdate:
        if not (isinstance(item, list) and len(item) == 4):
            raise ProtocolError("a KV must be [key, value, revision, update type]")
        key, value, revision, kind = item
        if not isinstance(key, str) or not isinstance(revision, str):
            raise ProtocolError("a KV's key and revision must be strings")
        if value is not None and not isinstance(value, bytes):
            raise ProtocolError("a KV's value must be bytes or nil")
        if kind not in _UPDATE_OF:
            raise ProtocolError(f"unknown update type {kind!r}")
        return cls(key, value, revision, _UPDATE_OF[kind])


def decode_update(kv: SerializedUpdate) -> Update:
    """:meth:`SerializedUpdate.to_update`, with a value that does not parse as a deletion."""
    try:
        return kv.to_update()
    except CorruptEntry:
        key = ResourceKey.from_path(kv.key)
        assert key is not None
        return Update(UpdateType.DELETED, KVPair(key, None, kv.revision))


# --- messages -------------------------------------------------------------------------------


def _str(d: dict[str, Any], name: str, default: str | None = None) -> str:
    v = d.get(name, default)
    if not isinstance(v, str):
        raise ProtocolError(f"field {name!r} must be a string")
    return v


def _int(d: dict[str, Any], name: str) -> int:
    v = d.get(name, 0)
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"field {name!r} must be an integer")
    return v


def _float(d: dict[str, Any], name: str) -> float:
    v = d.get(name)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise ProtocolError(f"field {name!r} must be a number")
    return float(v)


class Message:
    TYPE: ClassVar[str] = ""

    def fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def payload(self) -> bytes:
        return msgpack.packb({"type": self.TYPE, **self.fields()}, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Message:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ClientHello(Message):
    """Calico's MsgClientHello: who the client is and which syncer's data it wants."""

    TYPE: ClassVar[str] = "client_hello"
    hostname: str
    info: str
    version: str
    syncer_type: str
    compression: tuple[str, ...] = COMPRESSIONS  # Calico's SupportedCompressionAlgorithms
    client_conn_id: int = 0

    def fields(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "info": self.info, "version": self.version,
                "syncer_type": self.syncer_type, "compression": list(self.compression),
                "client_conn_id": self.client_conn_id}

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ClientHello:
        comp = d.get("compression", [])
        if not isinstance(comp, list) or not all(isinstance(c, str) for c in comp):
            raise ProtocolError("field 'compression' must be a list of strings")
        return cls(_str(d, "hostname"), _str(d, "info", ""), _str(d, "version", ""), _str(d, "syncer_type"),
                   tuple(comp), _int(d, "client_conn_id"))


@dataclass(frozen=True, slots=True)
class ServerHello(Message):
    """Calico's MsgServerHello, plus the compression the server chose ("" for none)."""

    TYPE: ClassVar[str] = "server_hello"
    version: str
    syncer_type: str
    compression: str = ""
    server_conn_id: int = 0

    def fields(self) -> dict[str, Any]:
        return {"version": self.version, "syncer_type": self.syncer_type, "compression": self.compression,
                "server_conn_id": self.server_conn_id}

    @classmethod
    def parse(cls, d: dict[str, Any]) -> ServerHello:
        return cls(_str(d, "version", ""), _str(d, "syncer_type"), _str(d, "compression", ""),
                   _int(d, "server_conn_id"))


@dataclass(frozen=True, slots=True)
class SyncStatusMsg(Message):
    """Calico's MsgSyncStatus. The first one after the server hello also ends the snapshot."""

    TYPE: ClassVar[str] = "sync_status"
    status: SyncStatus

    def fields(self) -> dict[str, Any]:
        return {"status": self.status.value}

    @classmethod
    def parse(cls, d: dict[str, Any]) -> SyncStatusMsg:
        name = _str(d, "status")
        if name not in _STATUS_OF:
            raise ProtocolError(f"unknown sync status {name!r}")
        return cls(_STATUS_OF[name])


@dataclass(frozen=True, slots=True)
class Ping(Message):
    TYPE: ClassVar[str] = "ping"
    timestamp: float

    def fields(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp}

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Ping:
        return cls(_float(d, "timestamp"))


@dataclass(frozen=True, slots=True)
class Pong(Message):
    TYPE: ClassVar[str] = "pong"
    ping_timestamp: float
    pong_timestamp: float

    def fields(self) -> dict[str, Any]:
        return {"ping_timestamp": self.ping_timestamp, "pong_timestamp": self.pong_timestamp}

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Pong:
        return cls(_float(d, "ping_timestamp"), _float(d, "pong_timestamp"))


@dataclass(frozen=True, slots=True)
class KVs(Message):
    """Calico's MsgKVs: at most :data:`MAX_KVS_PER_MESSAGE` updates, applied in order."""

    TYPE: ClassVar[str] = "kvs"
    kvs: tuple[SerializedUpdate, ...]

    def fields(self) -> dict[str, Any]:  # pragma: no cover - payload() is overridden
        return {}

    def payload(self) -> bytes:
        return kvs_payload(self.kvs)

    @classmethod
    def parse(cls, d: dict[str, Any]) -> KVs:
        items = d.get("kvs")
        if not isinstance(items, list):
            raise ProtocolError("field 'kvs' must be a list")
        return cls(tuple(SerializedUpdate.from_wire(i) for i in items))


_KVS_PREFIX = msgpack.packb({"type": "kvs"}, use_bin_type=True)[1:]  # the "type" entry, without the map header
_KVS_NAME = msgpack.packb("kvs", use_bin_type=True)


def kvs_payload(kvs: tuple[SerializedUpdate, ...] | list[SerializedUpdate]) -> bytes:
    """A KVs message's payload, joined from each update's bytes (nothing re-encoded)."""
    packer = msgpack.Packer(use_bin_type=True)
    return b"".join((b"\x82", _KVS_PREFIX, _KVS_NAME, packer.pack_array_header(len(kvs)),
                     *(kv.packed or msgpack.packb([kv.key, kv.value, kv.revision, _UPDATE_TYPE[kv.update_type]],
                                                  use_bin_type=True) for kv in kvs)))


_MESSAGES: dict[str, type[Message]] = {m.TYPE: m for m in (ClientHello, ServerHello, SyncStatusMsg, Ping, Pong, KVs)}


# --- frames ---------------------------------------------------------------------------------


def frame(payload: bytes, *, compression: str = "") -> bytes:
    """One frame around ``payload``; compressed with zstd when asked and worth it."""
    flags = 0
    if compression == ZSTD and len(payload) > COMPRESS_ABOVE:
        payload, flags = _compressor.compress(payload), FLAG_ZSTD
    elif compression not in ("", ZSTD):
        raise ValueError(f"unknown compression {compression!r}")
    return HEADER.pack(VERSION, flags, len(payload)) + payload


def encode(msg: Message, *, compression: str = "") -> bytes:
    return frame(msg.payload(), compression=compression)


def parse_header(header: bytes, *, max_size: int) -> tuple[int, int]:
    """(flags, length) of a frame header. ProtocolError for another version, unknown flags, too long."""
    version, flags, length = HEADER.unpack(header)
    if version != VERSION:
        raise ProtocolError(f"frame version {version} is not {VERSION} (not a pycalico Typha peer?)")
    if flags & ~FLAG_ZSTD:
        raise ProtocolError(f"unknown frame flags {flags:#04x}")
    if length > max_size:
        raise FrameTooLarge(length, max_size)
    return flags, length


def decode_payload(flags: int, body: bytes, *, max_size: int) -> Message:
    """The message in a frame's body. ProtocolError if it is not one."""
    if flags & FLAG_ZSTD:
        try:
            size = zstandard.frame_content_size(body)
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"bad zstd data: {exc}") from exc
        if size < 0:
            raise ProtocolError("compressed frame without its content size")
        if size > max_size:
            raise FrameTooLarge(size, max_size)
        try:
            body = _decompressor.decompress(body)
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"bad zstd data: {exc}") from exc
    try:
        d = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"not a msgpack message: {exc}") from exc
    if not isinstance(d, dict):
        raise ProtocolError("a message must be a msgpack map")
    name = d.get("type")
    cls = _MESSAGES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {name!r}")
    return cls.parse(d)


async def read_message(reader: asyncio.StreamReader, *, max_size: int) -> Message:
    """The next message on ``reader``. ProtocolError for bad bytes; IncompleteReadError at the end."""
    flags, length = parse_header(await reader.readexactly(HEADER.size), max_size=max_size)
    return decode_payload(flags, await reader.readexactly(length), max_size=max_size)


def choose_compression(offered: tuple[str, ...] | list[str]) -> str:
    """What the server uses for a client that can decode ``offered`` ("" = none)."""
    return next((c for c in COMPRESSIONS if c in offered), "")


__all__ = ["COMPRESSIONS", "ClientHello", "DEFAULT_PORT", "FrameTooLarge", "KVs", "MAX_CLIENT_FRAME",
           "MAX_KVS_PER_MESSAGE", "MAX_SERVER_FRAME", "Message", "Ping", "Pong", "ProtocolError",
           "SerializedUpdate", "ServerHello", "SyncStatusMsg", "VERSION", "choose_compression", "decode_payload",
           "decode_update", "encode", "frame", "kvs_payload", "parse_header", "read_message"]
