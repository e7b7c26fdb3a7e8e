"""Felix's nft batches as nf_tables netlink messages, written here: no libnftables cache dump per batch.

Why this exists (docs/decisions.md, "libnftables' cache"): libnftables 1.0.6 dumps every
chain and set of the ruleset before any batch that adds a rule, because each commit moves
the generation ID; at 10,000 endpoints that is 20,000-40,000 chains, ~3 us each, on every
apply. The messages Felix needs are few and fixed (a table, chains, rules from
:mod:`felix.dataplane.rules`, sets, verdict maps and their elements), so :class:`NetlinkNft`
encodes the very JSON batches :class:`felix.dataplane.nft.Table` builds into nf_tables
netlink messages (libnftnl's job), exactly as libnftables 1.0.6 encodes them (registers,
byte orders, set user data, interval end elements), and sends them as one
``NFNL_MSG_BATCH_BEGIN ... END`` batch on a ``NETLINK_NETFILTER`` socket. The kernel runs a
batch as one transaction: every error aborts all of it, and is reported with the
sequence number of the message that caused it, which names the failing command in the
:class:`~felix.dataplane.nft.NftError`.

Only the last message asks for an ACK (``NLM_F_ACK``): the kernel reports every error of a
batch anyway and answers the flagged last message once the batch is done (an ACK, or its
own error), so one reply marks the end, however many commands there were.

A command or statement not covered here is never guessed: :class:`Unsupported` is raised
while encoding, before anything is sent, and the whole batch goes to the fallback handle
(:class:`~felix.dataplane.nft.LibNft`), logged once at info. ``list`` commands (the
read-back on resync) always go to the fallback.

Elements need their set's key type; it comes from the batch itself (a set created in it),
from what this handle created or read before, or from the kernel (``NFT_MSG_GETSET`` of
that one set).

Each rule's encoded expressions are cached by the rule's JSON rendering (the string its
hash is over, :class:`~felix.dataplane.nft.EncodedExpr`), so a rule is compiled once,
however many batches carry it. Plain :mod:`struct` packing rather than pyroute2's
``nftsocket`` message classes: see docs/decisions.md for the measurement.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from felix.dataplane import nft

log = logging.getLogger("felix.nfnl")

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_CAP_ACK = 10
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11

NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE = 0, 2
NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFT_MSG_NEWSET, NFT_MSG_GETSET, NFT_MSG_DELSET = 9, 10, 11
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14

FAMILIES = {"ip": 2, "ip6": 10, "inet": 1}
HOOKS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
POLICIES = {"accept": 1, "drop": 0}

# Set key types (nftables' datatype ids) and lengths; a concatenation packs its types 6 bits each.
TYPES: dict[str, tuple[int, int]] = {"ipv4_addr": (7, 4), "ipv6_addr": (8, 16), "ifname": (41, 16),
                                     "inet_proto": (12, 1), "inet_service": (13, 2), "mark": (19, 4)}
TYPE_NAMES = {v[0]: k for k, v in TYPES.items()}
NFT_DATA_VERDICT = 0xFFFFFF00
SET_ANONYMOUS, SET_CONSTANT, SET_INTERVAL, SET_MAP = 0x1, 0x2, 0x4, 0x8
ELEM_INTERVAL_END = 0x1

# Verdicts.
VERDICTS = {"accept": 1, "drop": 0, "continue": -1, "return": -5, "jump": -3, "goto": -4}

# Set user data as libnftables 1.0.6 writes it (NFTNL_UDATA_SET_*: key byte order, merge, typeof).
_UDATA_ADDR_SET = bytes.fromhex("000402000000")
_UDATA_CONCAT_SET = bytes.fromhex("00040000000003080004" "0d0000000100")
_UDATA_VERDICT_MAP = bytes.fromhex("000401000000" "010400000000" "060400000000")
_ELEMS_PER_MESSAGE = 48_000        # bytes of elements per NEWSETELEM/DELSETELEM message
_UDATA_ELEM_OPEN = bytes.fromhex("010401000000")     # NFTNL_UDATA_SET_ELEM_FLAGS: interval open

META_KEYS = {"mark": 3, "iifname": 6, "oifname": 7, "l4proto": 16}
CT_KEYS = {"state": 0, "status": 2}
CT_STATES = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
CT_STATUS = {"expected": 1, "seen-reply": 2, "assured": 4, "confirmed": 8, "snat": 16, "dnat": 32, "dying": 512}
PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132, "ipip": 4, "gre": 47, "esp": 50, "ah": 51}
# payload (base, offset, length, datatype) by protocol and field; base 1 network, 2 transport.
PAYLOAD: dict[tuple[str, str], tuple[int, int, int, str]] = {
    ("ip", "saddr"): (1, 12, 4, "ipv4_addr"), ("ip", "daddr"): (1, 16, 4, "ipv4_addr"),
    ("ip6", "saddr"): (1, 8, 16, "ipv6_addr"), ("ip6", "daddr"): (1, 24, 16, "ipv6_addr"),
    ("th", "sport"): (2, 0, 2, "inet_service"), ("th", "dport"): (2, 2, 2, "inet_service"),
    ("icmp", "type"): (2, 0, 1, "int8"), ("icmp", "code"): (2, 1, 1, "int8"),
    ("icmpv6", "type"): (2, 0, 1, "int8"), ("icmpv6", "code"): (2, 1, 1, "int8"),
}
# The typeof user data of an anonymous set over a payload field: (protocol description id, field id).
_TYPEOF = {("ip", "saddr"): (12, 11), ("ip", "daddr"): (12, 12), ("ip6", "saddr"): (13, 8),
           ("ip6", "daddr"): (13, 9), ("th", "sport"): (11, 1), ("th", "dport"): (11, 2)}
RTN_LOCAL = 2
FIB_RESULT_ADDRTYPE = 3
FIB_FLAGS = {"saddr": 1, "daddr": 2, "mark": 4, "iif": 8, "oif": 16}
NF_NAT_RANGE_PROTO_RANDOM = 0x4
NF_NAT_RANGE_PERSISTENT = 0x8
NF_NAT_RANGE_PROTO_RANDOM_FULLY = 0x10
NAT_FLAGS = {"random": NF_NAT_RANGE_PROTO_RANDOM, "fully-random": NF_NAT_RANGE_PROTO_RANDOM_FULLY,
             "persistent": NF_NAT_RANGE_PERSISTENT}
LOG_LEVELS = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warn": 4, "notice": 5, "info": 6, "debug": 7}
NFT_CMP = {"==": 0, "!=": 1, "<": 2, "<=": 3, ">": 4, ">=": 5}
NFT_LOOKUP_F_INV = 0x1
NFT_RANGE_EQ, NFT_RANGE_NEQ = 0, 1


class Unsupported(Exception):
    """A command or statement this module does not encode: the batch goes to the fallback handle."""


# --- netlink attributes ------------------------------------------------------------------------


def attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    if n > 0xFFFF:
        raise Unsupported(f"an attribute of {n} bytes")     # netlink's are 16-bit long: not guessed
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def a_str(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def a_u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack(">I", value & 0xFFFFFFFF))


def a_data(kind: int, value: bytes) -> bytes:
    return nest(kind, attr(1, value))            # NFTA_DATA_VALUE


def a_verdict(kind: int, verdict: str, target: str = "") -> bytes:
    inner = a_u32(1, VERDICTS[verdict]) + (a_str(2, target) if target else b"")
    return nest(kind, nest(2, inner))           # NFTA_DATA_VERDICT { CODE, CHAIN }


def expr(name: str, *parts: bytes) -> bytes:
    """One NFTA_LIST_ELEM: the expression's name and its data."""
    return nest(1, a_str(1, name), nest(2, *parts))


def reg32(index: int) -> int:
    """libnftables' register for a 32-bit slot: NFT_REG_1.. where 16-byte aligned, else NFT_REG32_xx."""
    return 1 + index // 4 if index % 4 == 0 else 8 + index


# --- values ------------------------------------------------------------------------------------


def _int_bytes(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def value_bytes(typ: str, value: Any) -> bytes:
    """A constant of a datatype, as the kernel compares it."""
    if typ == "ipv4_addr":
        return ipaddress.IPv4Address(value).packed
    if typ == "ipv6_addr":
        return ipaddress.IPv6Address(value).packed
    if typ == "ifname":
        raw = str(value).encode()
        if len(raw) > 15:
            raise Unsupported(f"interface name too long: {value!r}")
        return raw + b"\0" * (16 - len(raw))
    if typ == "inet_service":
        return _int_bytes(_int(value), 2)
    if typ in ("inet_proto", "int8"):
        v = PROTOS.get(value, value) if typ == "inet_proto" and isinstance(value, str) else value
        return _int_bytes(_int(v), 1)
    if typ == "mark":
        return struct.pack("=I", _int(value))
    raise Unsupported(f"datatype {typ}")


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unsupported(f"not a number: {value!r}")
    return value


def _padded(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def key_types(type_: str | list[str]) -> list[str]:
    types = type_ if isinstance(type_, list) else [type_]
    for t in types:
        if t not in TYPES:
            raise Unsupported(f"set type {t}")
    return types


def key_len(types: list[str]) -> int:
    if len(types) == 1:
        return TYPES[types[0]][1]
    return sum(len(_padded(b"\0" * TYPES[t][1])) for t in types)


def key_type_id(types: list[str]) -> int:
    out = 0
    for t in types:
        out = (out << 6) | TYPES[t][0]
    return out


class SetSpec:
    """What encoding a set's elements needs: its key types, whether it is an interval set, a map."""

    __slots__ = ("types", "interval", "is_map")

    def __init__(self, types: list[str], *, interval: bool, is_map: bool) -> None:
        self.types = types
        self.interval = interval
        self.is_map = is_map


def _bump(b: bytes) -> bytes | None:
    """b + 1 as a big-endian number of the same length (None: it overflows)."""
    n = int.from_bytes(b, "big") + 1
    return None if n >> (8 * len(b)) else n.to_bytes(len(b), "big")


def interval_of(typ: str, elem: Any) -> tuple[bytes, bytes]:
    """(first, last) of an element of an interval set (an address, a prefix, a range)."""
    if isinstance(elem, dict) and "prefix" in elem:
        p = elem["prefix"]
        net = ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False)
        want = 4 if typ == "ipv4_addr" else 16
        if len(net.network_address.packed) != want:
            raise Unsupported(f"prefix {p} in a {typ} set")
        return net.network_address.packed, net.broadcast_address.packed
    if isinstance(elem, dict) and "range" in elem:
        lo, hi = elem["range"]
        if isinstance(lo, bytes) and isinstance(hi, bytes):
            return lo, hi
        return value_bytes(typ, lo), value_bytes(typ, hi)
    if isinstance(elem, dict):
        raise Unsupported(f"element {elem}")
    v = value_bytes(typ, elem)
    return v, v


def element_list(items: list[bytes]) -> bytes:
    """NFTA_SET_ELEM_LIST_ELEMENTS: each element nested, numbered from 1 as libnftnl numbers them."""
    return nest(3, *(nest(i, item) for i, item in enumerate(items, 1)))


def element_attrs(spec: SetSpec, elem: Any) -> list[bytes]:
    """The contents of the NFTA_LIST_ELEMs of one JSON element (two for an interval: start and end)."""
    data = b""
    if spec.is_map:
        if not (isinstance(elem, list) and len(elem) == 2):
            raise Unsupported(f"map element {elem}")
        elem, verdict = elem
        if not isinstance(verdict, dict) or len(verdict) != 1:
            raise Unsupported(f"map data {verdict}")
        (kind, body), = verdict.items()
        if kind not in VERDICTS:
            raise Unsupported(f"map data {verdict}")
        target = body["target"] if isinstance(body, dict) else ""
        data = a_verdict(2, kind, target)        # NFTA_SET_ELEM_DATA
    if len(spec.types) > 1:
        parts = elem["concat"] if isinstance(elem, dict) and "concat" in elem else elem
        if not isinstance(parts, list) or len(parts) != len(spec.types) or spec.interval:
            raise Unsupported(f"element {elem}")
        key = b"".join(_padded(value_bytes(t, v)) for t, v in zip(spec.types, parts))
        return [a_data(1, key) + data]
    typ = spec.types[0]
    if not spec.interval:
        return [a_data(1, value_bytes(typ, elem)) + data]
    if data:
        raise Unsupported("interval map")
    lo, hi = interval_of(typ, elem)
    end = _bump(hi)
    if end is None:
        # An interval open at the top: libnftables marks it in the element's user data.
        return [a_data(1, lo) + attr(6, _UDATA_ELEM_OPEN)]
    return [a_data(1, lo), a_u32(3, ELEM_INTERVAL_END) + a_data(1, end)]


# --- rule expressions --------------------------------------------------------------------------


class AnonSet:
    """An anonymous constant set a rule needs (``{"set": [...]}``), created in the rule's batch."""

    __slots__ = ("typ", "interval", "elems", "typeof")

    def __init__(self, typ: str, interval: bool, elems: list[bytes], typeof: tuple[int, int]) -> None:
        self.typ = typ
        self.interval = interval
        self.elems = elems        # NFTA_LIST_ELEM attributes
        self.typeof = typeof


# A compiled rule: encoded expressions, with holes (an AnonSet) where a batch's set ID goes.
Compiled = list[bytes | AnonSet]


class _Compiler:
    def __init__(self) -> None:
        self.out: Compiled = []

    def load(self, left: Any, reg: int = 1) -> tuple[str, int, tuple[str, str] | None]:
        """Load ``left`` into ``reg``; returns its datatype, its length and its payload (protocol, field)."""
        if not isinstance(left, dict) or len(left) != 1:
            raise Unsupported(f"expression {left}")
        (kind, body), = left.items()
        if kind == "meta":
            key = body.get("key")
            if key not in META_KEYS or len(body) != 1:
                raise Unsupported(f"meta {body}")
            self.out.append(expr("meta", a_u32(2, META_KEYS[key]), a_u32(1, reg)))
            return {"mark": "mark", "iifname": "ifname", "oifname": "ifname", "l4proto": "inet_proto"}[key], \
                {"mark": 4, "iifname": 16, "oifname": 16, "l4proto": 1}[key], None
        if kind == "ct":
            key = body.get("key")
            if key not in CT_KEYS or len(body) != 1:
                raise Unsupported(f"ct {body}")
            self.out.append(expr("ct", a_u32(2, CT_KEYS[key]), a_u32(1, reg)))
            return "ct_" + key, 4, None
        if kind == "payload":
            where = (body.get("protocol"), body.get("field"))
            if where not in PAYLOAD or len(body) != 2:
                raise Unsupported(f"payload {body}")
            base, offset, length, typ = PAYLOAD[where]
            self.payload(reg, base, offset, length)
            return typ, length, where
        if kind == "fib":
            flags = body.get("flags", [])
            if body.get("result") != "type" or set(body) != {"result", "flags"} or \
                    not isinstance(flags, list) or any(f not in FIB_FLAGS for f in flags):
                raise Unsupported(f"fib {body}")
            bits = 0
            for f in flags:
                bits |= FIB_FLAGS[f]
            self.out.append(expr("fib", a_u32(3, bits), a_u32(2, FIB_RESULT_ADDRTYPE), a_u32(1, reg)))
            return "fib_addrtype", 4, None
        raise Unsupported(f"expression {left}")

    def payload(self, reg: int, base: int, offset: int, length: int) -> None:
        self.out.append(expr("payload", a_u32(1, reg), a_u32(2, base), a_u32(3, offset), a_u32(4, length)))

    def cmp(self, op: str, value: bytes, reg: int = 1) -> None:
        self.out.append(expr("cmp", a_u32(1, reg), a_u32(2, NFT_CMP[op]), a_data(3, value)))

    def bitwise(self, length: int, mask: bytes, xor: bytes, *, binop: bool = True) -> None:
        """``reg 1 = (reg 1 & mask) ^ xor``; libnftables names the operation (NFTA_BITWISE_OP, boolean) for
        an ``&``/``|`` it was given, not for the mask of a prefix or of flags it compares."""
        op = a_u32(6, 0) if binop else b""
        self.out.append(expr("bitwise", a_u32(1, 1), a_u32(2, 1), op, a_u32(3, length), a_data(4, mask),
                             a_data(5, xor)))

    def lookup(self, name: str, *, invert: bool = False, dreg: int | None = None) -> None:
        parts = [a_u32(2, 1)]
        if dreg is not None:
            parts.append(a_u32(3, dreg))
        parts.append(a_str(1, name))
        if invert:
            parts.append(a_u32(5, NFT_LOOKUP_F_INV))
        self.out.append(expr("lookup", *parts))

    # --- statements ---

    def statement(self, stmt: Any) -> None:
        if not isinstance(stmt, dict) or len(stmt) != 1:
            raise Unsupported(f"statement {stmt}")
        (kind, body), = stmt.items()
        if kind == "match":
            self.match(body)
        elif kind == "counter":
            if body not in (None, {"packets": 0, "bytes": 0}):
                raise Unsupported(f"counter {body}")
            self.out.append(nest(1, a_str(1, "counter"), nest(2)))
        elif kind in ("accept", "drop", "return", "continue") and body is None:
            self.out.append(expr("immediate", a_u32(1, 0), a_verdict(2, kind)))
        elif kind in ("jump", "goto") and isinstance(body, dict) and set(body) == {"target"}:
            self.out.append(expr("immediate", a_u32(1, 0), a_verdict(2, kind, body["target"])))
        elif kind == "mangle":
            self.mangle(body)
        elif kind == "log":
            self.log_stmt(body)
        elif kind == "vmap":
            self.vmap(body)
        elif kind == "masquerade":
            self.masquerade(body)
        else:
            raise Unsupported(f"statement {stmt}")

    def match(self, m: Any) -> None:
        if not isinstance(m, dict) or set(m) != {"op", "left", "right"}:
            raise Unsupported(f"match {m}")
        op, left, right = m["op"], m["left"], m["right"]
        if isinstance(left, dict) and "concat" in left:
            self.concat_lookup(op, left["concat"], right)
            return
        if isinstance(left, dict) and "&" in left:
            inner, mask = left["&"]
            typ, length, _ = self.load(inner)
            if typ != "mark" or op not in ("==", "!="):
                raise Unsupported(f"match {m}")
            self.bitwise(length, value_bytes("mark", mask), b"\0" * length)
            self.cmp(op, value_bytes("mark", right))
            return
        if isinstance(right, str) and right.startswith("@"):
            if op not in ("==", "!="):
                raise Unsupported(f"match {m}")
            self.load(left)
            self.lookup(right[1:], invert=op == "!=")
            return
        typ, length, where = self.load(left)
        if typ.startswith("ct_"):
            self.ct_match(typ, op, right)
            return
        if typ == "fib_addrtype":
            if right != "local" or op != "==":
                raise Unsupported(f"match {m}")
            self.cmp("==", struct.pack("=I", RTN_LOCAL))
            return
        if op not in ("==", "!="):
            raise Unsupported(f"match {m}")
        if isinstance(right, dict) and "set" in right:
            self.anon_set(typ, where, right["set"], invert=op == "!=")
        elif isinstance(right, dict) and "prefix" in right and where is not None:
            self.prefix(typ, where, right["prefix"], op)
        elif isinstance(right, dict) and "range" in right:
            lo, hi = right["range"]
            a, b = value_bytes(typ, lo), value_bytes(typ, hi)
            if op == "==":
                self.cmp(">=", a)
                self.cmp("<=", b)
            else:
                self.out.append(expr("range", a_u32(1, 1), a_u32(2, NFT_RANGE_NEQ), a_data(3, a), a_data(4, b)))
        elif typ == "ifname" and isinstance(right, str) and right.endswith("*") and "\\" not in right:
            self.cmp(op, right[:-1].encode())
        elif isinstance(right, (str, int)) and not isinstance(right, bool):
            self.cmp(op, value_bytes(typ, right))
        else:
            raise Unsupported(f"match {m}")

    def ct_match(self, typ: str, op: str, right: Any) -> None:
        names = CT_STATES if typ == "ct_state" else CT_STATUS
        values = right if isinstance(right, list) else [right]
        bits = 0
        for v in values:
            if v not in names:
                raise Unsupported(f"{typ} {v}")
            bits |= names[v]
        if op == "in":
            self.bitwise(4, struct.pack("=I", bits), b"\0" * 4, binop=False)
            self.cmp("!=", b"\0" * 4)
        elif op in ("==", "!=") and not isinstance(right, list) and typ == "ct_status":
            self.cmp(op, struct.pack("=I", bits))
        else:
            raise Unsupported(f"{typ} {op} {right}")

    def prefix(self, typ: str, where: tuple[str, str], p: Any, op: str) -> None:
        """An address prefix: libnftables loads only its bytes when it ends on a byte, else masks."""
        if typ not in ("ipv4_addr", "ipv6_addr") or not isinstance(p, dict) or set(p) != {"addr", "len"}:
            raise Unsupported(f"prefix {p} on {typ}")
        net = ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False)
        addr = net.network_address.packed
        if len(addr) != TYPES[typ][1] or net.prefixlen == 0:
            raise Unsupported(f"prefix {p} on {typ}")
        _, offset, length, _ = PAYLOAD[where]
        if net.prefixlen % 8 == 0:
            n = net.prefixlen // 8
            self.out.pop()                   # the full-length load, replaced by a shorter one
            self.payload(1, 1, offset, n)
            self.cmp(op, addr[:n])
        else:
            mask = int(net.netmask).to_bytes(length, "big")
            self.bitwise(length, mask, b"\0" * length, binop=False)
            self.cmp(op, addr)

    def anon_set(self, typ: str, where: tuple[str, str] | None, items: Any, *, invert: bool) -> None:
        if where not in _TYPEOF or not isinstance(items, list) or not items:
            raise Unsupported(f"anonymous set over {where}")
        interval = typ in ("ipv4_addr", "ipv6_addr") or any(isinstance(i, dict) for i in items)
        elems: list[bytes] = []
        if interval:
            spans = sorted(interval_of(typ, i) for i in items)
            for (_, hi), (lo, _) in zip(spans, spans[1:]):
                after = _bump(hi)
                if after is None or lo <= after:
                    # Overlapping or adjacent: libnftables merges them; not guessed here.
                    raise Unsupported(f"overlapping or adjacent intervals in {items}")
            if spans[0][0] != b"\0" * len(spans[0][0]):
                elems.append(a_u32(3, ELEM_INTERVAL_END) + a_data(1, b"\0" * len(spans[0][0])))
            spec = SetSpec([typ], interval=True, is_map=False)
            for lo, hi in spans:
                elems += element_attrs(spec, {"range": [lo, hi]})
        else:
            keys = sorted(value_bytes(typ, i) for i in items)
            if len(set(keys)) != len(keys):
                raise Unsupported(f"duplicates in {items}")
            elems = [a_data(1, k) for k in keys]
        self.out.append(AnonSet(typ, interval, elems, _TYPEOF[where]))
        self.out.append(b"LOOKUP_INV" if invert else b"LOOKUP")

    def concat_lookup(self, op: str, parts: Any, right: Any) -> None:
        if op not in ("==", "!=") or not isinstance(right, str) or not right.startswith("@") or \
                not isinstance(parts, list) or len(parts) < 2:
            raise Unsupported(f"concatenation {parts} {op} {right}")
        index = 0
        for part in parts:
            _, length, _ = self.load(part, reg32(index))
            index += (length + 3) // 4
        self.lookup(right[1:], invert=op == "!=")

    def mangle(self, body: Any) -> None:
        if not isinstance(body, dict) or body.get("key") != {"meta": {"key": "mark"}}:
            raise Unsupported(f"mangle {body}")
        value = body.get("value")
        if isinstance(value, dict) and len(value) == 1:
            (op, args), = value.items()
            if op in ("|", "&") and isinstance(args, list) and len(args) == 2 and args[0] == {"meta": {"key": "mark"}}:
                bits = _int(args[1]) & 0xFFFFFFFF
                self.load({"meta": {"key": "mark"}})
                if op == "|":
                    self.bitwise(4, struct.pack("=I", ~bits & 0xFFFFFFFF), struct.pack("=I", bits))
                else:
                    self.bitwise(4, struct.pack("=I", bits), b"\0" * 4)
                self.out.append(expr("meta", a_u32(2, META_KEYS["mark"]), a_u32(3, 1)))
                return
        raise Unsupported(f"mangle {body}")

    def log_stmt(self, body: Any) -> None:
        if not isinstance(body, dict) or not set(body) <= {"prefix", "level"}:
            raise Unsupported(f"log {body}")
        parts = []
        if "prefix" in body:
            parts.append(a_str(2, str(body["prefix"])))
        if "level" in body:
            if body["level"] not in LOG_LEVELS:
                raise Unsupported(f"log {body}")
            parts.append(a_u32(5, LOG_LEVELS[body["level"]]))
        self.out.append(expr("log", *parts))

    def vmap(self, body: Any) -> None:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, str) or not data.startswith("@") or set(body) != {"key", "data"}:
            raise Unsupported(f"vmap {body}")
        self.load(body["key"])
        self.lookup(data[1:], dreg=0)

    def masquerade(self, body: Any) -> None:
        flags = body.get("flags", []) if isinstance(body, dict) else None
        if body is not None and (not isinstance(flags, list) or set(body) - {"flags"}):
            raise Unsupported(f"masquerade {body}")
        bits = 0
        for f in flags or []:
            if f not in NAT_FLAGS:
                raise Unsupported(f"masquerade flag {f}")
            bits |= NAT_FLAGS[f]
        self.out.append(expr("masq", *([a_u32(1, bits)] if bits else [])))


def _payload_value(stmt: Any) -> tuple[str, int, int, int, bytes] | None:
    """(op, base, offset, length, value) of ``payload == constant`` (or ``!=``), else None."""
    m = stmt.get("match") if isinstance(stmt, dict) and len(stmt) == 1 else None
    if not isinstance(m, dict) or m.get("op") not in ("==", "!="):
        return None
    left, right = m.get("left"), m.get("right")
    if not isinstance(left, dict) or set(left) != {"payload"} or isinstance(right, (dict, list, bool)) \
            or (isinstance(right, str) and right.startswith("@")):
        return None
    body = left["payload"]
    where = (body.get("protocol"), body.get("field")) if isinstance(body, dict) else None
    if where not in PAYLOAD or len(body) != 2:
        return None
    base, offset, length, typ = PAYLOAD[where]
    if typ in ("ipv4_addr", "ipv6_addr"):
        return None
    return m["op"], base, offset, length, value_bytes(typ, right)


def compile_rule(stmts: Any) -> Compiled:
    """A rule's JSON statements as encoded expressions (and the anonymous sets they need).

    As libnftables does (its payload merge), consecutive matches of constants on adjacent fields
    of the same header, with the same operator, up to 4 bytes together (``th sport 5000 th dport
    80``, ``icmp type 3 icmp code 4``), are one load and one compare."""
    if not isinstance(stmts, list):
        raise Unsupported(f"rule expression {stmts}")
    c = _Compiler()
    i = 0
    while i < len(stmts):
        first = _payload_value(stmts[i])
        if first is not None:
            op, base, offset, length, value = first
            j = i + 1
            while j < len(stmts):
                nxt = _payload_value(stmts[j])
                if nxt is None or nxt[0] != op or nxt[1] != base or nxt[2] != offset + length or \
                        length + nxt[3] > 4:
                    break
                length += nxt[3]
                value += nxt[4]
                j += 1
            if j > i + 1:
                c.payload(1, base, offset, length)
                c.cmp(op, value)
                i = j
                continue
        c.statement(stmts[i])
        i += 1
    # Merge runs of plain bytes, so most rules are one bytes object.
    out: Compiled = []
    for part in c.out:
        if isinstance(part, bytes) and part not in (b"LOOKUP", b"LOOKUP_INV") and out and \
                isinstance(out[-1], bytes) and out[-1] not in (b"LOOKUP", b"LOOKUP_INV"):
            out[-1] = out[-1] + part
        else:
            out.append(part)
    return out


# --- the batch ---------------------------------------------------------------------------------


def _msg(kind: int, flags: int, family: int, seq: int, body: bytes) -> bytes:
    kind |= NFNL_SUBSYS_NFTABLES << 8
    return struct.pack("=IHHII", 20 + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + \
        struct.pack("=BBH", family, 0, 0) + body


class _Batch:
    """The messages of one batch, each with the index of the command it came from."""

    def __init__(self, nl: Encoder) -> None:
        self.nl = nl
        self.parts: list[bytes] = []
        self.owner: list[int] = []           # message i -> command index
        self.seq0 = 0
        self.sets: dict[tuple[str, str, str], SetSpec | None] = {}   # created/deleted in this batch
        self.set_id = 0
        self.cmd = 0
        self.new_interval: set[tuple[str, str, str]] = set()   # interval sets created in this batch

    def add(self, kind: int, flags: int, family: int, body: bytes) -> None:
        self.parts.append(_msg(kind, flags, family, self.seq0 + len(self.parts) + 1, body))
        self.owner.append(self.cmd)

    def spec(self, fam: str, table: str, name: str) -> SetSpec:
        key = (fam, table, name)
        if key in self.sets:
            spec = self.sets[key]
        else:
            spec = self.nl.set_spec(fam, table, name)
        if spec is None:
            raise Unsupported(f"set {fam} {table} {name} not known")
        return spec


def _family(obj: Any) -> tuple[str, int]:
    fam = obj.get("family") if isinstance(obj, dict) else None
    if fam not in FAMILIES:
        raise Unsupported(f"family {fam}")
    return fam, FAMILIES[fam]


class Encoder:
    """Felix's JSON nft commands to nf_tables netlink messages (no socket: what tests check byte for byte)."""

    def __init__(self, *, first_set_id: int = 1) -> None:
        self._seq = 1
        self.first_set_id = first_set_id
        self._specs: dict[tuple[str, str, str], SetSpec] = {}
        self._compiled: dict[str, bytes | Compiled] = {}
        self._heads: dict[tuple[str, str, str], bytes] = {}

    def set_spec(self, fam: str, table: str, name: str) -> SetSpec | None:
        """A set's key types and flags, for its elements (here: only what this encoder made)."""
        return self._specs.get((fam, table, name))

    def encode(self, cmds: list[Any]) -> list[bytes]:
        """The batch's messages (without BEGIN and END); :class:`Unsupported` for what is not covered."""
        return self._encode(cmds).parts

    def _encode(self, cmds: list[Any]) -> _Batch:
        b = _Batch(self)
        b.seq0 = self._seq
        b.set_id = self.first_set_id - 1
        for i, cmd in enumerate(cmds):
            b.cmd = i
            if not isinstance(cmd, dict) or len(cmd) != 1:
                raise Unsupported(f"command {cmd}")
            (verb, body), = cmd.items()
            if not isinstance(body, dict) or len(body) != 1:
                raise Unsupported(f"command {cmd}")
            (what, obj), = body.items()
            handler = getattr(self, f"_{verb}_{what}", None)
            if handler is None:
                raise Unsupported(f"{verb}_{what} command")
            handler(b, obj)
        return b

    def _add_table(self, b: _Batch, obj: Any) -> None:
        _, fam = _family(obj)
        if set(obj) - {"family", "name"}:
            raise Unsupported(f"table {obj}")
        b.add(NFT_MSG_NEWTABLE, NLM_F_CREATE, fam, a_str(1, obj["name"]) + a_u32(2, 0))

    def _delete_table(self, b: _Batch, obj: Any) -> None:
        famname, fam = _family(obj)
        b.add(NFT_MSG_DELTABLE, 0, fam, a_str(1, obj["name"]))
        for key in [k for k in self._specs if k[:2] == (famname, obj["name"])]:
            b.sets[key] = None

    def _add_chain(self, b: _Batch, obj: Any) -> None:
        _, fam = _family(obj)
        extra = set(obj) - {"family", "table", "name"}
        body = a_str(1, obj["table"]) + a_str(3, obj["name"])
        if extra:
            if extra - {"type", "hook", "prio", "policy"} or not {"type", "hook", "prio"} <= extra or \
                    obj["hook"] not in HOOKS or obj.get("policy", "accept") not in POLICIES or \
                    obj["type"] not in ("filter", "nat", "route"):
                raise Unsupported(f"chain {obj}")
            body += a_str(7, obj["type"])
            if "policy" in obj:
                body += a_u32(5, POLICIES[obj["policy"]])
            body += nest(4, a_u32(1, HOOKS[obj["hook"]]), a_u32(2, _int(obj["prio"])))
        b.add(NFT_MSG_NEWCHAIN, NLM_F_CREATE, fam, body)

    def _flush_chain(self, b: _Batch, obj: Any) -> None:
        _, fam = _family(obj)
        b.add(NFT_MSG_DELRULE, 0, fam, a_str(1, obj["table"]) + a_str(2, obj["name"]))

    def _delete_chain(self, b: _Batch, obj: Any) -> None:
        _, fam = _family(obj)
        b.add(NFT_MSG_DELCHAIN, 0, fam, a_str(1, obj["table"]) + a_str(3, obj["name"]))

    _RULE_KEYS = frozenset(("family", "table", "chain", "expr", "comment"))
    _RULE_KIND = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE
    _RULE_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND

    def _add_rule(self, b: _Batch, obj: Any) -> None:
        """The hot path (a first apply sends 50,000 rules): each distinct expression list is compiled
        once and kept as its NFTA_RULE_EXPRESSIONS attribute, each (table, chain) head once."""
        if not obj.keys() <= self._RULE_KEYS:
            raise Unsupported(f"rule {sorted(obj)}")
        ex = obj["expr"]
        key = ex if isinstance(ex, str) else json.dumps(ex, separators=(",", ":"), sort_keys=True)
        compiled = self._compiled.get(key)
        if compiled is None:
            parts = compile_rule(json.loads(ex) if isinstance(ex, str) else ex)
            compiled = nest(4, parts[0]) if len(parts) == 1 and isinstance(parts[0], bytes) else parts
            if len(self._compiled) > 200_000:
                self._compiled.clear()
            self._compiled[key] = compiled
        hkey = (obj["family"], obj["table"], obj["chain"])
        head = self._heads.get(hkey)
        if head is None:
            _, fam = _family(obj)
            head = struct.pack("=BBH", fam, 0, 0) + a_str(1, obj["table"]) + a_str(2, obj["chain"])
            if len(self._heads) > 100_000:
                self._heads.clear()
            self._heads[hkey] = head
        if isinstance(compiled, bytes):
            exprs = compiled
        else:
            exprs = nest(4, self._with_anon_sets(b, FAMILIES[obj["family"]], obj["table"], compiled))
        comment = obj.get("comment")
        if comment is not None:
            raw = comment.encode()
            if len(raw) > 128:
                raise Unsupported("comment longer than 128 bytes")
            # NFTA_RULE_USERDATA holding one NFTNL_UDATA_RULE_COMMENT TLV (type 0, length, text, NUL):
            n = len(raw) + 7           # attribute header, TLV header, the text, its NUL
            tail = struct.pack("=HHBB", n, 7, 0, len(raw) + 1) + raw + b"\0" * (1 + (-n % 4))
        else:
            tail = b""
        parts_ = b.parts
        parts_.append(struct.pack("=IHHII", 16 + len(head) + len(exprs) + len(tail), self._RULE_KIND,
                                  self._RULE_FLAGS, b.seq0 + len(parts_) + 1, 0) + head + exprs + tail)
        b.owner.append(b.cmd)

    def _with_anon_sets(self, b: _Batch, fam: int, table: str, compiled: Compiled) -> bytes:
        out = []
        pending: AnonSet | None = None
        for part in compiled:
            if isinstance(part, AnonSet):
                pending = part
            elif part in (b"LOOKUP", b"LOOKUP_INV"):
                assert pending is not None
                b.set_id += 1
                sid = b.set_id
                typ, length = pending.typ, TYPES[pending.typ][1]
                flags = SET_ANONYMOUS | SET_CONSTANT | (SET_INTERVAL if pending.interval else 0)
                proto, field = pending.typeof
                udata = (bytes((0, 4)) + struct.pack("=I", 2)
                         + (bytes((2, 4)) + struct.pack("=I", 1) if pending.interval else b"")
                         + bytes((3, 20)) + bytes((0, 4)) + struct.pack("=I", 7)
                         + bytes((1, 12)) + bytes((0, 4)) + struct.pack("=I", proto)
                         + bytes((1, 4)) + struct.pack("=I", field))
                body = (a_str(1, table) + a_str(2, "__set%d") + a_u32(3, flags) + a_u32(4, TYPES[typ][0])
                        + a_u32(5, length) + a_u32(10, sid) + nest(9, a_u32(1, len(pending.elems)))
                        + attr(13, udata))
                b.add(NFT_MSG_NEWSET, NLM_F_CREATE, fam, body)
                b.add(NFT_MSG_NEWSETELEM, NLM_F_CREATE, fam,
                      a_str(1, table) + a_str(2, "__set%d") + a_u32(4, sid) + element_list(pending.elems))
                parts = [a_u32(2, 1), a_str(1, "__set%d"), a_u32(4, sid)]
                if part == b"LOOKUP_INV":
                    parts.append(a_u32(5, NFT_LOOKUP_F_INV))
                out.append(expr("lookup", *parts))
                pending = None
            else:
                assert isinstance(part, bytes)
                out.append(part)
        return b"".join(out)

    def _add_set(self, b: _Batch, obj: Any, is_map: bool = False) -> None:
        famname, fam = _family(obj)
        allowed = {"family", "table", "name", "type", "flags"} | ({"map"} if is_map else set())
        if set(obj) - allowed:
            raise Unsupported(f"set {sorted(obj)}")
        types = key_types(obj["type"])
        flags = obj.get("flags", [])
        if flags not in ([], ["interval"]) or (flags and (len(types) > 1 or is_map)):
            raise Unsupported(f"set flags {flags}")
        if is_map and obj.get("map") != "verdict":
            raise Unsupported(f"map to {obj.get('map')}")
        interval = bool(flags)
        bits = (SET_INTERVAL if interval else 0) | (SET_MAP if is_map else 0)
        b.set_id += 1
        body = (a_str(1, obj["table"]) + a_str(2, obj["name"]) + a_u32(3, bits) + a_u32(4, key_type_id(types))
                + a_u32(5, key_len(types)))
        if is_map:
            body += a_u32(6, NFT_DATA_VERDICT) + a_u32(7, 0)
        body += a_u32(10, b.set_id)
        if is_map:
            if types != ["ifname"]:
                raise Unsupported(f"map type {types}")
            body += attr(13, _UDATA_VERDICT_MAP)
        elif len(types) > 1:
            if types[1:] != ["inet_proto", "inet_service"]:
                raise Unsupported(f"set type {types}")
            body += attr(13, _UDATA_CONCAT_SET)
        elif types[0] in ("ipv4_addr", "ipv6_addr"):
            body += attr(13, _UDATA_ADDR_SET)
        else:
            raise Unsupported(f"set type {types}")
        b.add(NFT_MSG_NEWSET, NLM_F_CREATE, fam, body)
        b.sets[(famname, obj["table"], obj["name"])] = SetSpec(types, interval=interval, is_map=is_map)
        if interval:
            b.new_interval.add((famname, obj["table"], obj["name"]))

    def _add_map(self, b: _Batch, obj: Any) -> None:
        self._add_set(b, obj, is_map=True)

    def _delete_set(self, b: _Batch, obj: Any) -> None:
        famname, fam = _family(obj)
        b.add(NFT_MSG_DELSET, 0, fam, a_str(1, obj["table"]) + a_str(2, obj["name"]))
        b.sets[(famname, obj["table"], obj["name"])] = None

    _delete_map = _delete_set

    def _elements(self, b: _Batch, obj: Any, *, add: bool) -> None:
        famname, fam = _family(obj)
        spec = b.spec(famname, obj["table"], obj["name"])
        elems = obj.get("elem")
        if not isinstance(elems, list):
            raise Unsupported(f"elements {elems}")
        if not add and spec.is_map:
            elems = [e[0] if isinstance(e, list) and len(e) == 2 else e for e in elems]
            spec = SetSpec(spec.types, interval=spec.interval, is_map=False)
        items: list[bytes] = []
        for e in elems:
            items += element_attrs(spec, e)
        key = (famname, obj["table"], obj["name"])
        if add and key in b.new_interval:
            # Elements of an interval set made in the same batch: libnftables sends them with the set,
            # led by an interval end at zero unless an interval starts there.
            b.new_interval.discard(key)
            zero = b"\0" * TYPES[spec.types[0]][1]
            if all(interval_of(spec.types[0], e)[0] != zero for e in elems):
                items.insert(0, a_u32(3, ELEM_INTERVAL_END) + a_data(1, zero))
        # An attribute is at most 64 KiB: a long list goes in several messages, as libnftnl splits it.
        head = a_str(1, obj["table"]) + a_str(2, obj["name"])
        kind, flags = (NFT_MSG_NEWSETELEM, NLM_F_CREATE) if add else (NFT_MSG_DELSETELEM, 0)
        chunk: list[bytes] = []
        size = 0
        for item in items:
            if chunk and size + len(item) + 8 > _ELEMS_PER_MESSAGE:
                b.add(kind, flags, fam, head + element_list(chunk))
                chunk, size = [], 0
            chunk.append(item)
            size += len(item) + 8
        if chunk:
            b.add(kind, flags, fam, head + element_list(chunk))

    def _add_element(self, b: _Batch, obj: Any) -> None:
        self._elements(b, obj, add=True)

    def _delete_element(self, b: _Batch, obj: Any) -> None:
        self._elements(b, obj, add=False)


class NetlinkNft(Encoder):
    """An :class:`~felix.dataplane.nft.NftHandle` that writes nf_tables netlink messages itself.

    ``fallback`` runs what this handle does not encode (and every ``list``); built lazily
    (a :class:`~felix.dataplane.nft.LibNft`) when not given."""

    def __init__(self, fallback: nft.NftHandle | None = None,
                 fallback_factory: Callable[[], nft.NftHandle] | None = None) -> None:
        super().__init__()
        self._fallback = fallback
        self._fallback_factory = fallback_factory or nft.LibNft
        self._sock = self._open()
        self._seq = int.from_bytes(os.urandom(2), "big") << 12
        self._fell_back: set[str] = set()
        self.fallbacks = 0               # batches handed to the fallback (tests, bench)

    @staticmethod
    def _open() -> socket.socket:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        try:
            s.bind((0, 0))
            for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
                try:
                    s.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass
            for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF),):
                try:
                    s.setsockopt(socket.SOL_SOCKET, force, 4 << 20)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, plain, 4 << 20)
        except OSError:
            s.close()
            raise
        return s

    @property
    def fallback(self) -> nft.NftHandle:
        if self._fallback is None:
            self._fallback = self._fallback_factory()
        return self._fallback

    def close(self) -> None:
        self._sock.close()
        close = getattr(self._fallback, "close", None)
        if close is not None:
            close()

    # --- NftHandle ---

    def run(self, batch: nft.JSON) -> nft.JSON:
        cmds = batch.get("nftables")
        if not isinstance(cmds, list):
            raise nft.NftError(f"not an nft batch: {str(batch)[:200]}")
        if any(isinstance(c, dict) and ("list" in c) for c in cmds):
            return self.fallback.run(batch)
        try:
            b = self._encode(cmds)
        except Unsupported as exc:
            reason = str(exc)
            first = reason.split(" ", 1)[0]
            if first not in self._fell_back:
                self._fell_back.add(first)
                log.info("nf_tables netlink: %s not encoded here; such batches go through libnftables", reason)
            self.fallbacks += 1
            # What libnftables changes is not known here: forget what this handle remembers of sets.
            self._specs.clear()
            return self.fallback.run(batch)
        if not b.parts:
            return {"nftables": []}
        self._send(b, cmds)
        for key, spec in b.sets.items():
            if spec is None:
                self._specs.pop(key, None)
            else:
                self._specs[key] = spec
        return {"nftables": []}

    # --- the kernel ---

    def set_spec(self, fam: str, table: str, name: str) -> SetSpec | None:
        """A set's key types and flags: remembered, or asked of the kernel (``NFT_MSG_GETSET``)."""
        key = (fam, table, name)
        if key in self._specs:
            return self._specs[key]
        self._seq += 1
        seq = self._seq
        self._sock.send(_msg(NFT_MSG_GETSET, NLM_F_ACK, FAMILIES[fam], seq, a_str(1, table) + a_str(2, name)))
        attrs: dict[int, bytes] = {}
        err = 0
        done = False
        while not done:
            data = self._sock.recv(1 << 16)
            for mtype, mseq, payload in _messages(data):
                if mseq != seq:
                    continue
                if mtype == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", payload)[0]
                    done = True
                elif mtype == NLMSG_DONE:
                    done = True
                else:
                    attrs = _attrs(payload[4:])
        if err or not attrs:
            return None
        if 4 not in attrs:
            return None
        flags = struct.unpack(">I", attrs.get(3, b"\0\0\0\0"))[0]     # the kernel leaves out flags 0
        ktype = struct.unpack(">I", attrs[4])[0]
        types: list[str] = []
        while ktype:
            t = TYPE_NAMES.get(ktype & 0x3F)
            if t is None:
                return None
            types.insert(0, t)
            ktype >>= 6
        if flags & SET_MAP and struct.unpack(">I", attrs.get(6, b"\0\0\0\0"))[0] != NFT_DATA_VERDICT:
            return None
        spec = SetSpec(types, interval=bool(flags & SET_INTERVAL), is_map=bool(flags & SET_MAP))
        self._specs[key] = spec
        return spec

    def _send(self, b: _Batch, cmds: list[Any]) -> None:
        n = len(b.parts)
        # Only the last message asks for an ACK: it marks the end of the kernel's answer.
        last = bytearray(b.parts[-1])
        struct.pack_into("=H", last, 6, struct.unpack_from("=H", last, 6)[0] | NLM_F_ACK)
        b.parts[-1] = bytes(last)
        seq0 = b.seq0
        begin = struct.pack("=IHHII", 20, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq0, 0) + \
            struct.pack("=BBH", 0, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
        end = struct.pack("=IHHII", 20, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq0 + n + 1, 0) + \
            struct.pack("=BBH", 0, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
        data = b"".join((begin, *b.parts, end))
        self._seq = seq0 + n + 2
        if self._seq > 0x7FFF0000:
            self._seq = 1
        try:
            if len(data) > 200_000:
                try:
                    self._sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, len(data) + 4096)
                except OSError:
                    self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, len(data) + 4096)
            self._sock.sendall(data)
            errors = self._read_answer(seq0, seq0 + n)
        except OSError as exc:
            # The answer is lost (ENOBUFS: so many errors the socket overflowed, so the batch failed):
            # start again on a fresh socket.
            self._reopen()
            raise nft.NftError(f"nf_tables netlink batch failed: {os.strerror(exc.errno or errno.EIO)}") from exc
        if errors:
            self._specs.clear()
            seq, code, msg = errors[0]
            i = seq - seq0 - 1
            what = json.dumps(cmds[b.owner[i]], separators=(",", ":"))[:300] if 0 <= i < n else "the batch"
            raise nft.NftError(f"Error: {os.strerror(code)}{': ' + msg if msg else ''} in {what}"
                               + (f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""))

    def _reopen(self) -> None:
        try:
            self._sock.close()
        finally:
            self._sock = self._open()

    def _read_answer(self, seq0: int, last: int) -> list[tuple[int, int, str]]:
        errors: list[tuple[int, int, str]] = []
        while True:
            data = self._sock.recv(1 << 20)
            for mtype, mseq, payload in _messages(data):
                if mtype != NLMSG_ERROR or not seq0 <= mseq <= last + 1:
                    continue
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    errors.append((mseq, code, _ext_ack_msg(payload)))
                if mseq == last or (mseq == seq0 and code):
                    if mseq == seq0:
                        # A commit failure (or the batch refused as a whole): answered on BEGIN.
                        self._drain(last)
                    return errors

    def _drain(self, last: int) -> None:
        self._sock.settimeout(0.5)
        try:
            while True:
                data = self._sock.recv(1 << 20)
                if any(mseq == last for _, mseq, _ in _messages(data)):
                    return
        except (TimeoutError, BlockingIOError):
            return
        finally:
            self._sock.settimeout(None)


def _messages(data: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    off = 0
    while off + 16 <= len(data):
        length, mtype, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
        if length < 16:
            break
        out.append((mtype, seq, data[off + 16:off + length]))
        off += (length + 3) & ~3
    return out


def _attrs(data: bytes) -> dict[int, bytes]:
    out = {}
    off = 0
    while off + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, off)
        if n < 4:
            break
        out[kind & 0x3FFF] = data[off + 4:off + n]
        off += (n + 3) & ~3
    return out


def _ext_ack_msg(payload: bytes) -> str:
    """NLMSGERR_ATTR_MSG of an extended ACK, if the kernel sent one (after the capped header)."""
    if len(payload) <= 20:
        return ""
    attrs = _attrs(payload[20:])
    msg = attrs.get(1, b"")
    return msg.rstrip(b"\0").decode(errors="replace")
