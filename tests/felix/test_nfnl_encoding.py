"""NetlinkNft's encoding, byte for byte, against what libnftables 1.0.6 sent for the same rules (no kernel).

tests/felix/golden/nfnl/libnftables_rules.json holds, for each rule (its ``nft`` text), the nf_tables
messages libnftables sent for it (``nft --debug=mnl -f``, the sets already in the kernel): the
anonymous sets it needed and the rule. Each is rebuilt here from the JSON statements
:mod:`felix.dataplane.rules` renders for the same rule and encoded by
:class:`felix.dataplane.nfnl.NetlinkNft`; the attribute bytes must be the same.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from felix.dataplane import nfnl, nft
from felix.dataplane import rules as r

GOLDEN = json.loads((Path(__file__).parent / "golden" / "nfnl" / "libnftables_rules.json").read_text())

_L4 = {"meta": {"key": "l4proto"}}


def _concat(side: str, port: str) -> dict[str, Any]:
    return {"concat": [r._addr(side), _L4, r._port(port)]}


# The same rules as the golden file's, in order, as rules.py's statements.
RULES: list[tuple[list[Any], str]] = [
    ([r.l4proto(6), r.match(r._port("dport"), 80), r.match(r._addr("saddr"), "@s"), r.COUNTER,
      r.set_mark(0x10000)], ""),
    ([r.match(_concat("daddr", "dport"), "@np"), r.COUNTER, r.ACCEPT], ""),
    ([r.l4proto(1), r.match(r._icmp("type", "ip"), 3), r.match(r._icmp("code", "ip"), 4), r.COUNTER, r.DROP], ""),
    ([r.match(r._addr("saddr"), r._net("10.0.0.0/8")), r.match(r._addr("daddr"), r._net("172.16.0.0/12"), "!="),
      r.COUNTER, r.jump("c")], ""),
    ([r.ct_state("established", "related"), r.COUNTER, r.ACCEPT], ""),
    ([r.iifname("cali*"), r.oifname("eth0"), r.COUNTER, r.goto("c")], ""),
    ([r.mark_set_bit(0x20000), r.COUNTER, r.RETURN], ""),
    ([r.l4proto(6), {"log": {"prefix": "calico-packet: ", "level": "info"}}], ""),
    ([{"vmap": {"key": {"meta": {"key": "iifname"}}, "data": "@vm"}}], ""),
    ([r.match({"ct": {"key": "status"}}, "dnat", "!="), r.match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
      r.COUNTER, {"continue": None}], ""),
    ([r.match(r._addr("saddr"), "@s", "!="), r.match(_concat("daddr", "sport"), "@np", "!="),
      r.clear_mark(0x30000), r.COUNTER, {"masquerade": {"flags": ["fully-random"]}}], ""),
    ([r.l4proto(17), r.match(r._port("dport"), r._ports(((53, 53), (5000, 5100)))), r.COUNTER, r.ACCEPT], "cali:x;"),
    ([r.l4proto(6), r.match(r._port("sport"), r._ports(((1024, 65535),))),
      r.match(r._port("dport"), r._ports(((3000, 3999),)), "!="), r.COUNTER, r.DROP], ""),
    ([r.match(r._addr("saddr"), r._nets(("10.1.2.3/32", "192.168.0.0/16")), "!="), r.COUNTER, r.DROP], ""),
    ([r.match(r._port("dport"), r._ports(((22, 22), (80, 80))), "!="), r.COUNTER, r.DROP], ""),
]


def _messages(cmds: list[nft.JSON], first_set_id: int = 1) -> list[tuple[int, bytes]]:
    out = []
    for m in nfnl.Encoder(first_set_id=first_set_id).encode(cmds):
        kind = struct.unpack_from("=H", m, 4)[0]
        out.append((kind & 0xFF, m[20:]))
    return out


_NESTED = {(9, 9), (12, 3), (6, 4)}     # (message, attribute) pairs that nest further down, by message


def _tree(data: bytes) -> list[Any]:
    """Attributes as a tree: (type, children) for nested ones, (type, hex) for the others."""
    out: list[Any] = []
    off = 0
    while off + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, off)
        body = data[off + 4:off + n]
        out.append((kind & 0x3FFF, _tree(body)) if kind & nfnl.NLA_F_NESTED else (kind, body.hex()))
        off += (n + 3) & ~3
    return out


def _named_lookups_without_set_id(tree: list[Any]) -> list[Any]:
    """libnftables also names an existing set by its ID in a lookup; the kernel finds it by name first."""
    out = []
    for kind, value in tree:
        if isinstance(value, list):
            value = _named_lookups_without_set_id(value)
            if (1, "6c6f6f6b757000") in [(k, v) for k, v in value if not isinstance(v, list)] or \
                    any(k == 1 and v == bytes(b"lookup\0").hex() for k, v in value if not isinstance(v, list)):
                for j, (k, v) in enumerate(value):
                    if k == 2 and isinstance(v, list):
                        names = [bytes.fromhex(x) for kk, x in v if kk == 1 and not isinstance(x, list)]
                        if names and not names[0].startswith(b"__set"):
                            value[j] = (k, [(kk, x) for kk, x in v if kk != 4])
        out.append((kind, value))
    return out


def test_the_golden_file_and_the_rules_here_are_the_same_list() -> None:
    assert len(GOLDEN) == len(RULES)


@pytest.mark.parametrize("i", range(len(RULES)), ids=[g["nft"][len("add rule ip t c "):] for g in GOLDEN])
def test_each_rule_is_encoded_as_libnftables_encodes_it(i: int) -> None:
    stmts, comment = RULES[i]
    rule: nft.JSON = {"family": "ip", "table": "t", "chain": "c", "expr": stmts}
    if comment:
        rule["comment"] = comment
    want = [(k, bytes.fromhex(h)) for k, h in GOLDEN[i]["messages"]]
    first_id = 1
    if want[0][0] == nfnl.NFT_MSG_NEWSET:     # the anonymous set's ID, which libnftables counted on from its cache
        first_id = struct.unpack(">I", bytes.fromhex(dict(_tree(want[0][1]))[10]))[0]
    got = _messages([{"add": {"rule": rule}}], first_id)
    assert [(k, _named_lookups_without_set_id(_tree(m))) for k, m in got] == \
        [(k, _named_lookups_without_set_id(_tree(m))) for k, m in want]


def test_an_encoded_expression_gives_the_same_bytes_as_the_statements() -> None:
    stmts, _ = RULES[0]
    enc = nft.EncodedExpr(json.dumps(stmts, separators=(",", ":"), sort_keys=True))
    plain = _messages([{"add": {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": stmts}}}])
    spliced = _messages([{"add": {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": enc}}}])
    assert plain == spliced


def test_an_interval_element_is_its_start_and_an_interval_end_past_its_last_address() -> None:
    spec = nfnl.SetSpec(["ipv4_addr"], interval=True, is_map=False)
    start, end = nfnl.element_attrs(spec, {"prefix": {"addr": "10.2.0.0", "len": 16}})
    assert bytes.fromhex("0a020000") in start and struct.pack(">I", nfnl.ELEM_INTERVAL_END) not in start
    assert bytes.fromhex("0a030000") in end and struct.pack(">I", nfnl.ELEM_INTERVAL_END) in end
    # The top of the address space has no end: libnftables marks the interval open instead.
    (top,) = nfnl.element_attrs(spec, "255.255.255.255")
    assert bytes.fromhex("010401000000") in top


@pytest.mark.parametrize("stmt", [
    {"limit": {"rate": 10, "per": "second"}},
    {"match": {"op": "<", "left": {"meta": {"key": "mark"}}, "right": 3}},
    {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "flags"}}, "right": 2}},
    {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}},
               "right": {"set": [{"range": [1, 10]}, {"range": [5, 20]}]}}},
    {"snat": {"addr": "10.0.0.1"}},
])
def test_a_statement_not_covered_is_refused_not_guessed(stmt: Any) -> None:
    with pytest.raises(nfnl.Unsupported):
        nfnl.compile_rule([stmt, r.ACCEPT])


def test_a_long_element_list_is_split_into_messages_of_less_than_64_kib() -> None:
    add_map = {"add": {"map": {"family": "ip", "table": "calico", "name": "m", "type": "ifname", "map": "verdict"}}}
    elems = [[f"cali{i:05d}", {"goto": {"target": f"filter-cali-fw-cali{i:05d}"}}] for i in range(10_000)]
    add = {"add": {"element": {"family": "ip", "table": "calico", "name": "m", "elem": elems}}}
    msgs = nfnl.Encoder().encode([add_map, add])
    assert len(msgs) > 10
    assert all(len(m) < 0xFFFF for m in msgs)
    assert sum(m.count(b"filter-cali-fw-") for m in msgs[1:]) == 10_000     # every element, once
