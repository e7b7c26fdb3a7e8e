"""The nft batches Felix sends, for every shape rules.py renders: shared by the nf_tables netlink tests.

:func:`full_tables` builds the ``ip calico`` and ``ip6 calico`` tables as Felix's managers would
(static chains with VXLAN, natOutgoing, a policy with every rule shape, profiles, workload and host
endpoint chains, dispatch maps, selector sets, interval sets with CIDRs, named-port sets) and
:func:`first_batch` stages them the way :func:`felix.dataplane.nft.apply_tables` does on a first apply.
"""

from __future__ import annotations

from typing import Any

from felix.dataplane import nft, rules
from felix.messages import TierInfo
from felix.policy import ParsedRule, ParsedRules, PolicyID

TIER = "default"
POL = PolicyID(TIER, "", "shapes")
NSPOL = PolicyID(TIER, "prod", "np", kind="NetworkPolicy")

SHAPES: tuple[ParsedRule, ...] = (
    ParsedRule("allow"),
    ParsedRule("deny", protocol=6),
    ParsedRule("allow", protocol=6, dst_ports=((80, 80),)),
    ParsedRule("allow", protocol=17, dst_ports=((53, 53), (5000, 5100))),
    ParsedRule("allow", protocol=6, src_ports=((1024, 65535),), dst_ports=((443, 443),)),
    ParsedRule("pass", protocol=6, not_dst_ports=((22, 22), (8000, 8080))),
    ParsedRule("deny", not_src_ports=((7, 7),), protocol=17),
    ParsedRule("allow", src_nets=("10.0.0.0/8",)),
    ParsedRule("allow", src_nets=("10.1.2.3/32", "192.168.0.0/16"), dst_nets=("172.16.0.0/12",)),
    ParsedRule("allow", src_nets=("fd00::/64",)),
    ParsedRule("allow", dst_nets=("fd00::1/128", "fd01::/48")),
    ParsedRule("deny", not_src_nets=("10.9.0.0/16",), not_dst_nets=("10.8.0.1/32", "10.7.0.0/24")),
    ParsedRule("deny", not_dst_nets=("fd09::/32",)),
    ParsedRule("allow", src_sets=("s:abc",), dst_sets=("s:def",)),
    ParsedRule("deny", not_src_sets=("s:abc",), not_dst_sets=("s:def",)),
    ParsedRule("allow", protocol=6, dst_named_port_sets=("n:http",)),
    ParsedRule("allow", protocol=6, dst_ports=((9090, 9090),), dst_named_port_sets=("n:http",)),
    ParsedRule("allow", protocol=17, src_named_port_sets=("n:dns",)),
    ParsedRule("deny", protocol=6, not_dst_named_port_sets=("n:http",), not_src_named_port_sets=("n:dns",)),
    ParsedRule("allow", protocol=1, icmp_type=8),
    ParsedRule("allow", protocol=1, icmp_type=3, icmp_code=4),
    ParsedRule("deny", protocol=1, not_icmp_type=5),
    ParsedRule("deny", protocol=1, not_icmp_type=5, not_icmp_code=1),
    ParsedRule("allow", protocol=58, icmp_type=128),
    ParsedRule("allow", protocol=58, icmp_type=1, icmp_code=3),
    ParsedRule("deny", protocol=58, not_icmp_type=135, not_icmp_code=0),
    ParsedRule("allow", not_protocol=17),
    ParsedRule("log", protocol=6),
    ParsedRule("allow", ip_version=4, protocol=132),
    ParsedRule("allow", ip_version=6, protocol=6, dst_ports=((8443, 8443),)),
    ParsedRule("allow", protocol=6, src_ports=((5000, 5000),), dst_ports=((80, 80),)),
    ParsedRule("allow", protocol=6, dst_ports=((1024, 2048),)),
    ParsedRule("deny", protocol=6, not_dst_ports=((3000, 3999),)),
    ParsedRule("allow", src_nets=("10.1.1.1/32",), dst_nets=("10.2.2.2/32",)),
    ParsedRule("allow", src_nets=("10.1.1.0/24",), dst_nets=("10.2.2.2/32",)),
    ParsedRule("allow", src_nets=("fd00::1/128",), dst_nets=("fd00::2/128",)),
    ParsedRule("deny", not_src_nets=("10.1.1.1/32",), not_dst_nets=("10.2.2.2/32",)),
    ParsedRule("allow", protocol=17, src_ports=((53, 53),), src_nets=("10.5.5.5/32",), dst_nets=("10.6.6.6/32",)),
    ParsedRule("pass"),
)

SET_IDS = ("s:abc", "s:def")
NAMED_SET_IDS = ("n:http", "n:dns")


def _members(family: str) -> dict[str, dict[Any, Any]]:
    nets: dict[str, list[Any]]
    named: dict[str, list[Any]]
    if family == "ip":
        nets = {"s:abc": ["10.0.0.1", ("prefix", "10.2.0.0", 16), ("prefix", "192.168.7.0", 24), "10.3.3.3"],
                "s:def": [("prefix", "0.0.0.0", 1), "255.255.255.255", "172.16.0.5"]}
        named = {"n:http": [("concat", "10.0.0.1", 6, 8080), ("concat", "10.0.0.2", 6, 8080)],
                 "n:dns": [("concat", "10.0.0.3", 17, 5353)]}
    else:
        nets = {"s:abc": ["fd00::1", ("prefix", "fd02::", 64)], "s:def": [("prefix", "fd03::", 48), "::1"]}
        named = {"n:http": [("concat", "fd00::1", 6, 8080)], "n:dns": []}
    out: dict[str, dict[Any, Any]] = {}
    for sid, ms in nets.items():
        out[rules.set_name(sid, family)] = {m: None for m in ms}
    for sid, ms in named.items():
        out[rules.set_name(sid, family)] = {m: None for m in ms}
    return out


def fill(table: nft.Table, *, ifaces: tuple[str, ...] = ("calia1", "calib2"), hosts: tuple[str, ...] = ("eth9",)) -> None:
    """Everything Felix's managers put in one family's table."""
    fam = table.family
    addr = "ipv6_addr" if fam == "ip6" else "ipv4_addr"
    for sid in SET_IDS:
        table.ensure_set(rules.set_name(sid, fam), addr, flags=("interval",))
    for sid in NAMED_SET_IDS:
        table.ensure_set(rules.set_name(sid, fam), [addr, "inet_proto", "inet_service"])
    for name, elems in _members(fam).items():
        if elems:
            table.add_elements(name, elems)
    table.ensure_set(rules.FROM_WL_MAP, "ifname", map_to="verdict")
    table.ensure_set(rules.TO_WL_MAP, "ifname", map_to="verdict")
    for c in rules.static_chains(family=fam):
        table.set_chain(c)
    if fam == "ip":
        table.ensure_set(rules.ALL_VXLAN_SET, "ipv4_addr", flags=("interval",))
        table.add_elements(rules.ALL_VXLAN_SET, {"192.0.2.1": None, ("prefix", "198.51.100.0", 24): None})
        table.ensure_set(rules.MASQ_SET, "ipv4_addr", flags=("interval",))
        table.ensure_set(rules.ALL_POOLS_SET, "ipv4_addr", flags=("interval",))
        table.add_elements(rules.MASQ_SET, {("prefix", "10.244.0.0", 16): None})
        table.add_elements(rules.ALL_POOLS_SET, {("prefix", "10.244.0.0", 16): None})
        table.set_chain(rules.input_chain(vxlan=True))
        table.set_chain(rules.output_chain(vxlan=True))
        table.set_chain(rules.nat_outgoing_chain(True))
    for c in rules.policy_chains(POL, ParsedRules(SHAPES, SHAPES[::-1], ()), family=fam):
        table.set_chain(c)
    for c in rules.policy_chains(NSPOL, ParsedRules((), (), ()), family=fam):
        table.set_chain(c)
    prof = ParsedRules((ParsedRule("allow"),), (ParsedRule("allow"),), ())
    for c in rules.profile_chains("kns.default", prof, family=fam):
        table.set_chain(c)
    tiers = (TierInfo(TIER, "Deny", (POL, NSPOL), (POL,)), TierInfo("t2", "Pass", (), (NSPOL,)))
    for i in ifaces:
        for c in rules.workload_chains(i, tiers, ("kns.default",)):
            table.set_chain(c)
        table.add_elements(rules.FROM_WL_MAP, {i: "goto " + rules.endpoint_chain("cali-fw-", i)})
        table.add_elements(rules.TO_WL_MAP, {i: "goto " + rules.endpoint_chain("cali-tw-", i)})
    for h in hosts:
        for c in rules.host_chains(h, tiers, ("kns.default",)):
            table.set_chain(c)
    for c in rules.host_dispatch(list(hosts)):
        table.set_chain(c)


class Recorder:
    """A handle that records batches and reports an empty kernel on ``list``."""

    def __init__(self) -> None:
        self.batches: list[nft.JSON] = []

    def run(self, batch: nft.JSON) -> nft.JSON:
        if len(batch["nftables"]) == 1 and "list" in batch["nftables"][0]:
            raise nft.NftError("Error: No such file or directory")
        self.batches.append(batch)
        return {"nftables": []}


def full_tables(handle: nft.NftHandle) -> list[nft.Table]:
    tables = [nft.Table(handle, family="ip"), nft.Table(handle, family="ip6")]
    for t in tables:
        fill(t)
    return tables


def first_batch() -> nft.JSON:
    rec = Recorder()
    nft.apply_tables(rec, full_tables(rec))
    return rec.batches[0]
