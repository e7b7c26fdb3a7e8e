"""Route dumps and route writes in bulk, on a raw rtnetlink socket.

Felix writes thousands of routes (one per workload) and reads the whole main
table back on every resync. pyroute2 builds and parses each message through
its generic marshalling, which costs about half a millisecond per route here:
fine for devices and neighbours, forty times slower than ``ip -batch`` for the
route table (bench/felix_routes.py). This module speaks the same protocol for
the one message type that matters, with :mod:`struct`:

* :func:`dump` sends one RTM_GETROUTE dump request and decodes only the
  fields the route table compares (destination, type, protocol, scope, flags,
  output interface, gateway);
* :func:`write` sends many RTM_NEWROUTE (create|replace) / RTM_DELROUTE
  requests per ``sendmsg`` and collects the kernel's acknowledgements by
  sequence number, as ``ip -batch`` does one by one.

Messages and constants are the kernel's (``linux/rtnetlink.h``, ``linux/netlink.h``).
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass
from itertools import count

NETLINK_ROUTE = 0
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
MAIN_TABLE = 254
RT_TABLE_UNSPEC = 0
RT_SCOPE_NOWHERE = 255  # in a delete: match a route of any scope (as ``ip route del`` sends)

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_ERR = struct.Struct("=i")
CHUNK = 32 * 1024  # bytes of requests per sendmsg; acks for one chunk fit the receive buffer


class NetlinkError(OSError):
    pass


@dataclass(frozen=True)
class KernelRoute:
    dst: str            # "a.b.c.d/len"
    type: int
    proto: int
    scope: int
    flags: int
    oif: int
    gateway: str
    table: int


@dataclass(frozen=True)
class RouteOp:
    op: str             # "replace" | "delete"
    dst: str
    type: int = 1       # RTN_UNICAST; 6 = blackhole
    proto: int = 3
    scope: int = 0
    flags: int = 0
    oif: int = 0
    gateway: str = ""


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return _RTATTR.pack(length, kind) + data + b"\0" * ((4 - length % 4) % 4)


class RouteSocket:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024 * 1024)
        self.sock.bind((0, 0))
        self.seq = count(int.from_bytes(os.urandom(2), "little") << 8)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RouteSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------

    def dump(self, table: int = MAIN_TABLE) -> list[KernelRoute]:
        """Every IPv4 route of ``table``."""
        seq = next(self.seq)
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                       + body)
        out: list[KernelRoute] = []
        while True:
            data = self.sock.recv(1024 * 1024)
            offset = 0
            while offset < len(data):
                length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        (err,) = _ERR.unpack_from(data, offset + _NLMSGHDR.size)
                        raise NetlinkError(-err, os.strerror(-err))
                    if mtype == RTM_NEWROUTE:
                        route = self._decode(data, offset + _NLMSGHDR.size, offset + length)
                        if route.table == table:
                            out.append(route)
                offset += (length + 3) & ~3

    @staticmethod
    def _decode(data: bytes, start: int, end: int) -> KernelRoute:
        family, dst_len, _, _, rtable, proto, scope, rtype, flags = _RTMSG.unpack_from(data, start)
        dst, oif, gateway, table = "0.0.0.0", 0, "", rtable
        pos = start + _RTMSG.size
        while pos + 4 <= end:
            alen, akind = _RTATTR.unpack_from(data, pos)
            if alen < 4:
                break
            payload = data[pos + 4:pos + alen]
            if akind == RTA_DST:
                dst = socket.inet_ntoa(payload)
            elif akind == RTA_OIF:
                (oif,) = struct.unpack("=I", payload)
            elif akind == RTA_GATEWAY:
                gateway = socket.inet_ntoa(payload)
            elif akind == RTA_TABLE:
                (table,) = struct.unpack("=I", payload)
            pos += (alen + 3) & ~3
        return KernelRoute(f"{dst}/{dst_len}", rtype, proto, scope, flags, oif, gateway, table)

    # --- writing ------------------------------------------------------------------------------

    def _encode(self, op: RouteOp, seq: int, table: int, ack: bool) -> bytes:
        addr, _, plen_text = op.dst.partition("/")
        prefixlen = int(plen_text) if plen_text else 32
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        if op.op == "delete":
            mtype = RTM_DELROUTE
        else:
            mtype, flags = RTM_NEWROUTE, flags | NLM_F_CREATE | NLM_F_REPLACE
        body = _RTMSG.pack(socket.AF_INET, prefixlen, 0, 0, table if table < 256 else RT_TABLE_UNSPEC,
                           op.proto, op.scope, op.type, op.flags)
        body += _attr(RTA_TABLE, struct.pack("=I", table))
        if prefixlen:
            body += _attr(RTA_DST, socket.inet_aton(addr))
        if op.oif:
            body += _attr(RTA_OIF, struct.pack("=I", op.oif))
        if op.gateway:
            body += _attr(RTA_GATEWAY, socket.inet_aton(op.gateway))
        return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body

    def write(self, ops: list[RouteOp], table: int = MAIN_TABLE) -> dict[str, int]:
        """Apply ``ops``; return {dst: errno} for the ones the kernel refused (ESRCH on delete is success).

        Only the last request of each chunk asks for an acknowledgement: the kernel handles a
        socket's requests in order and reports every failure as an error message, so that one
        ack means all before it are done, and their failures have arrived before it."""
        failed: dict[str, int] = {}
        i = 0
        while i < len(ops):
            chunk: list[bytes] = []
            sent: dict[int, RouteOp] = {}
            size = 0
            while i < len(ops) and size < CHUNK:
                seq = next(self.seq)
                last = i + 1 == len(ops) or size + 64 >= CHUNK
                msg = self._encode(ops[i], seq, table, ack=last)
                chunk.append(msg)
                sent[seq] = ops[i]
                size += len(msg)
                i += 1
            final = seq
            self.sock.send(b"".join(chunk))
            done = False
            while not done:
                data = self.sock.recv(1024 * 1024)
                offset = 0
                while offset < len(data):
                    length, mtype, _, mseq, _ = _NLMSGHDR.unpack_from(data, offset)
                    if mtype == NLMSG_ERROR and mseq in sent:
                        (err,) = _ERR.unpack_from(data, offset + _NLMSGHDR.size)
                        op = sent[mseq]
                        if err and not (op.op == "delete" and -err == 3):  # ESRCH: already gone
                            failed[op.dst] = -err
                        if mseq == final:
                            done = True
                    offset += (length + 3) & ~3
        return failed
