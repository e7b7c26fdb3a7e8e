"""Typha's wire protocol: Calico's messages in versioned, length-prefixed msgpack frames (zstd optional)."""

from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest

from libcalico import api, syncproto
from libcalico.model import KVPair, ResourceKey
from libcalico.watching import SyncStatus, Update, UpdateType


def a_pool(name: str = "p1", cidr: str = "10.244.0.0/16") -> KVPair:
    res = api.IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr}})
    return KVPair(ResourceKey.for_resource(res), res, "42")


async def read_all(data: bytes, *, max_size: int = syncproto.MAX_SERVER_FRAME) -> list[syncproto.Message]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out = []
    while not reader.at_eof():
        out.append(await syncproto.read_message(reader, max_size=max_size))
    return out


MESSAGES: list[syncproto.Message] = [
    syncproto.ClientHello(hostname="node1", info="felix", version="v3.30", syncer_type="felix",
                          compression=("zstd",), client_conn_id=7),
    syncproto.ServerHello(version="v3.30", syncer_type="felix", compression="zstd", server_conn_id=9),
    syncproto.SyncStatusMsg(SyncStatus.IN_SYNC),
    syncproto.Ping(1700000000.25),
    syncproto.Pong(1700000000.25, 1700000000.5),
]


class TestFrames:
    @pytest.mark.parametrize("compression", ["", "zstd"])
    async def test_every_message_survives_the_wire(self, compression: str) -> None:
        data = b"".join(syncproto.encode(m, compression=compression) for m in MESSAGES)
        assert await read_all(data) == MESSAGES

    @pytest.mark.parametrize("compression", ["", "zstd"])
    async def test_a_kv_batch_carries_values_as_the_datastore_stores_them(self, compression: str) -> None:
        kvs = tuple(syncproto.SerializedUpdate.from_update(Update(UpdateType.NEW, a_pool(f"p{i}", f"10.{i}.0.0/16")))
                    for i in range(100))
        gone = syncproto.SerializedUpdate.from_update(Update(UpdateType.DELETED, KVPair(kvs[0].to_update().key,
                                                                                         None, "43")))
        (msg,) = await read_all(syncproto.encode(syncproto.KVs((*kvs, gone)), compression=compression))
        assert isinstance(msg, syncproto.KVs)
        updates = [kv.to_update() for kv in msg.kvs]
        assert updates[5].kv.value == a_pool("p5", "10.5.0.0/16").value.model_copy(
            update={"metadata": a_pool("p5").value.metadata.model_copy(update={"name": "p5",
                                                                               "resource_version": "42"})})
        assert updates[5].type is UpdateType.NEW and updates[5].kv.revision == "42"
        assert updates[-1].type is UpdateType.DELETED and updates[-1].kv.value is None

    def test_a_large_frame_is_compressed_and_a_small_one_is_not(self) -> None:
        big = syncproto.KVs(tuple(syncproto.SerializedUpdate.from_update(Update(UpdateType.NEW, a_pool(f"p{i}")))
                                  for i in range(50)))
        small = syncproto.Ping(1.0)
        assert syncproto.encode(big, compression="zstd")[1] == syncproto.FLAG_ZSTD
        assert len(syncproto.encode(big, compression="zstd")) < len(syncproto.encode(big)) / 3
        assert syncproto.encode(small, compression="zstd")[1] == 0

    def test_the_server_picks_zstd_only_when_the_client_offers_it(self) -> None:
        assert syncproto.choose_compression(["snappy", "zstd"]) == "zstd"
        assert syncproto.choose_compression(["snappy"]) == ""

    def test_a_value_that_does_not_parse_arrives_as_a_deletion(self) -> None:
        kv = syncproto.SerializedUpdate.of(a_pool().key.path(), b'{"spec": {"cidr": "nonsense"}}', "5",
                                           UpdateType.UPDATED)
        update = syncproto.decode_update(kv)
        assert update.type is UpdateType.DELETED and update.kv.value is None and update.key == a_pool().key


def frame_of(obj: object, *, version: int = 1, flags: int = 0) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack("!BBI", version, flags, len(body)) + body


class TestBadInput:
    @pytest.mark.parametrize(("data", "reason"), [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame version 71 is not 1"),
        (frame_of({"type": "ping", "timestamp": 1.0}, flags=0x80), "unknown frame flags 0x80"),
        (frame_of({"type": "hug"}), "unknown message type 'hug'"),
        (frame_of([1, 2, 3]), "a message must be a msgpack map"),
        (frame_of({"type": "ping", "timestamp": "noon"}), "field 'timestamp' must be a number"),
        (frame_of({"type": "client_hello", "hostname": 5, "syncer_type": "felix"}),
         "field 'hostname' must be a string"),
        (frame_of({"type": "kvs", "kvs": [["/calico/x", None, "1", 9]]}), "unknown update type 9"),
        (struct.pack("!BBI", 1, 0, 3) + b"\xc1\xc1\xc1", "not a msgpack message"),
        (struct.pack("!BBI", 1, 1, 8) + b"notzstd!", "bad zstd data"),
    ])
    async def test_bytes_that_break_the_protocol_are_refused_by_name(self, data: bytes, reason: str) -> None:
        with pytest.raises(syncproto.ProtocolError, match=reason):
            await read_all(data)

    async def test_a_frame_longer_than_the_reader_allows_is_refused_before_it_is_read(self) -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(struct.pack("!BBI", 1, 0, 50 << 20))  # only the header: the body is never awaited
        with pytest.raises(syncproto.FrameTooLarge, match="frame of 52428800 bytes is over the limit of 1048576"):
            await syncproto.read_message(reader, max_size=syncproto.MAX_CLIENT_FRAME)

    async def test_a_small_compressed_frame_that_would_expand_past_the_limit_is_refused(self) -> None:
        bomb = syncproto.frame(msgpack.packb({"type": "ping", "pad": "x" * (4 << 20)}), compression="zstd")
        assert len(bomb) < 4096
        with pytest.raises(syncproto.FrameTooLarge, match="over the limit of 1048576"):
            await read_all(bomb, max_size=syncproto.MAX_CLIENT_FRAME)
