"""NetlinkNft against libnftables on the real kernel: the same batches must leave the same ruleset.

Each test makes two throwaway network namespaces, applies the same Felix batches through
:class:`felix.dataplane.nft.LibNft` in one and :class:`felix.dataplane.nfnl.NetlinkNft` in the
other (each in a process started inside its namespace), and compares ``nft -j list ruleset``
(without handles) and ``nft --debug=netlink list ruleset`` (the kernel's expressions and
elements; the elements of a hash set listed in any order). The batches are those
:mod:`tests.felix.nfnl_shapes` builds: every rule shape :mod:`felix.dataplane.rules` renders, base
chains, sets, interval sets, named-port sets, verdict maps and their elements, then the
incremental batches Felix sends as endpoints, policies and IP sets change. Run under the netns
lock (``flock /tmp/pycalico-netns.lock``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from felix.dataplane import nft, rules
from felix.messages import TierInfo
from felix.policy import ParsedRule, ParsedRules
from tests.felix import nfnl_shapes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

ROOT = Path(__file__).resolve().parents[2]

APPLY = r"""
import json, sys
from felix.dataplane import nft, nfnl
kind, batches = sys.argv[1], json.loads(sys.stdin.read())
h = nft.LibNft() if kind == "lib" else nfnl.NetlinkNft()
out = []
for b in batches:
    try:
        h.run(b)
        out.append("ok")
    except nft.NftError as exc:
        out.append("error: " + str(exc))
print(json.dumps({"results": out, "fallbacks": getattr(h, "fallbacks", 0)}))
"""


def _ns_run(ns: str, *cmd: str, stdin: str = "") -> str:
    r = subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    return r.stdout


def apply(ns: str, kind: str, batches: list[nft.JSON]) -> dict[str, Any]:
    text = "[" + ",".join(nft.encode_batch(b) for b in batches) + "]"
    out: dict[str, Any] = json.loads(_ns_run(ns, sys.executable, "-c", APPLY, kind, stdin=text))
    return out


def ruleset_json(ns: str) -> list[Any]:
    items = json.loads(_ns_run(ns, "nft", "-j", "list", "ruleset"))["nftables"]
    for item in items:
        for body in item.values():
            if isinstance(body, dict):
                body.pop("handle", None)
    return [i for i in items if "metainfo" not in i]


def ruleset_netlink(ns: str) -> list[str]:
    """The kernel's view (``--debug=netlink``), element lines of each set sorted."""
    lines = _ns_run(ns, "nft", "--debug=netlink", "list", "ruleset").splitlines()
    out: list[str] = []
    elems: list[str] = []
    for line in lines:
        if line.startswith("\telement"):
            elems.append(line)
            continue
        out += sorted(elems)
        elems = []
        out.append(line)
    return out + sorted(elems)


@pytest.fixture
def two_ns() -> Iterator[tuple[str, str]]:
    names = (f"pcnfl{os.getpid() % 100000}a", f"pcnfl{os.getpid() % 100000}b")
    try:
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
        yield names
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def assert_same(lib_ns: str, nl_ns: str) -> None:
    a, b = ruleset_json(lib_ns), ruleset_json(nl_ns)
    assert a, "nothing was programmed"
    assert a == b
    assert ruleset_netlink(lib_ns) == ruleset_netlink(nl_ns)


# --- the batches ----------------------------------------------------------------------------------


def incremental_batches() -> list[nft.JSON]:
    """Felix's first batch, then the incremental ones as things change (each one as Table sends it)."""
    rec = nfnl_shapes.Recorder()
    tables = nfnl_shapes.full_tables(rec)
    nft.apply_tables(rec, tables)
    ip, ip6 = tables
    steps = []

    def step() -> None:
        n = len(rec.batches)
        nft.apply_tables(rec, tables)
        assert len(rec.batches) == n + 1, "a step changed nothing"
        steps.append(rec.batches[-1])

    # An endpoint goes: its chains, its map entries.
    for t in tables:
        for c in rules.workload_chains("calib2", (), ()):
            t.remove_chain(c.name)
        t.remove_elements(rules.FROM_WL_MAP, ["calib2"])
        t.remove_elements(rules.TO_WL_MAP, ["calib2"])
    step()
    # An endpoint comes; a map entry changes its verdict; a policy's rules change.
    pol = rules.policy_chains(nfnl_shapes.POL, ParsedRules(
        (ParsedRule("allow", protocol=6, dst_ports=((8080, 8080),)),), (ParsedRule("deny"),), ()))
    tiers = (TierInfo(nfnl_shapes.TIER, "Deny", (nfnl_shapes.POL,), ()),)
    for t in tables:
        for c in rules.workload_chains("calic3", tiers, ("kns.default",)):
            t.set_chain(c)
        t.add_elements(rules.FROM_WL_MAP, {"calic3": "goto " + rules.endpoint_chain("cali-fw-", "calic3"),
                                           "calia1": "goto " + rules.endpoint_chain("cali-fw-", "calic3")})
        t.add_elements(rules.TO_WL_MAP, {"calic3": "goto " + rules.endpoint_chain("cali-tw-", "calic3")})
        for c in rules.policy_chains(nfnl_shapes.POL, ParsedRules(
                (ParsedRule("allow", protocol=6, dst_ports=((8080, 8080),)),), (ParsedRule("deny"),), ()),
                family=t.family):
            t.set_chain(c)
    del pol
    step()
    # IP set members come and go: addresses, CIDRs, named ports; a set goes, a new one comes.
    abc, named = rules.set_name("s:abc"), rules.set_name("n:http")
    ip.remove_elements(abc, ["10.0.0.1", ("prefix", "10.2.0.0", 16)])
    ip.add_elements(abc, {"10.0.0.9": None, ("prefix", "10.5.0.0", 20): None, "255.255.255.255": None})
    ip.remove_elements(named, [("concat", "10.0.0.1", 6, 8080)])
    ip.add_elements(named, {("concat", "10.0.0.7", 17, 53): None})
    ip6.remove_elements(rules.set_name("s:abc", "ip6"), [("prefix", "fd02::", 64)])
    ip6.add_elements(rules.set_name("s:abc", "ip6"), {"fd00::9": None})
    ip.ensure_set("cali40s-new", "ipv4_addr", flags=("interval",))
    ip.add_elements("cali40s-new", {("prefix", "0.0.0.0", 0): None})
    ip.remove_set(rules.ALL_VXLAN_SET)
    ip.set_chain(rules.input_chain(vxlan=False))
    ip.set_chain(rules.output_chain(vxlan=False))
    step()
    return [rec.batches[0], *steps]


# --- tests --------------------------------------------------------------------------------------------


def test_felix_first_batch_leaves_the_same_ruleset_as_libnftables(two_ns: tuple[str, str]) -> None:
    lib_ns, nl_ns = two_ns
    batch = nfnl_shapes.first_batch()
    assert apply(lib_ns, "lib", [batch])["results"] == ["ok"]
    got = apply(nl_ns, "nl", [batch])
    assert got == {"results": ["ok"], "fallbacks": 0}
    assert_same(lib_ns, nl_ns)


def test_incremental_batches_leave_the_same_ruleset_as_libnftables(two_ns: tuple[str, str]) -> None:
    lib_ns, nl_ns = two_ns
    batches = incremental_batches()
    assert apply(lib_ns, "lib", batches)["results"] == ["ok"] * len(batches)
    got = apply(nl_ns, "nl", batches)
    assert got == {"results": ["ok"] * len(batches), "fallbacks": 0}
    assert_same(lib_ns, nl_ns)


def test_a_fresh_handle_learns_the_sets_from_the_kernel(two_ns: tuple[str, str]) -> None:
    """Each batch from a new process: elements of sets made before are encoded from NFT_MSG_GETSET."""
    lib_ns, nl_ns = two_ns
    batches = incremental_batches()
    assert apply(lib_ns, "lib", batches)["results"] == ["ok"] * len(batches)
    for b in batches:
        assert apply(nl_ns, "nl", [b]) == {"results": ["ok"], "fallbacks": 0}
    assert_same(lib_ns, nl_ns)


def test_a_refused_batch_raises_naming_the_command_and_changes_nothing(two_ns: tuple[str, str]) -> None:
    _, nl_ns = two_ns
    first = nfnl_shapes.first_batch()
    assert apply(nl_ns, "nl", [first])["results"] == ["ok"]
    before = ruleset_netlink(nl_ns)
    obj = {"family": "ip", "table": "calico"}
    bad = {"nftables": [
        {"add": {"chain": {**obj, "name": "filter-cali-new"}}},
        {"add": {"element": {**obj, "name": rules.set_name("s:abc"), "elem": ["10.99.0.1"]}}},
        {"flush": {"chain": {**obj, "name": rules.FORWARD}}},
        {"add": {"rule": {**obj, "chain": "filter-cali-new", "expr": [rules.jump("filter-cali-missing")],
                          "comment": "cali:x;"}}},
        {"add": {"rule": {**obj, "chain": "filter-cali-new", "expr": [rules.ACCEPT]}}},
    ]}
    (result,) = apply(nl_ns, "nl", [bad])["results"]
    assert result.startswith("error: Error: No such file or directory")
    assert "filter-cali-missing" in result
    assert ruleset_netlink(nl_ns) == before


def test_a_batch_with_a_statement_not_covered_goes_whole_to_libnftables(two_ns: tuple[str, str]) -> None:
    lib_ns, nl_ns = two_ns
    obj = {"family": "ip", "table": "calico"}
    batch = {"nftables": [
        {"add": {"table": {"family": "ip", "name": "calico"}}},
        {"add": {"chain": {**obj, "name": "filter-cali-x"}}},
        {"add": {"rule": {**obj, "chain": "filter-cali-x", "expr": [rules.l4proto(6)], "comment": "cali:a;"}}},
        {"add": {"rule": {**obj, "chain": "filter-cali-x", "expr": [{"limit": {"rate": 10, "per": "second"}},
                                                                     rules.ACCEPT], "comment": "cali:b;"}}},
    ]}
    assert apply(lib_ns, "lib", [batch])["results"] == ["ok"]
    assert apply(nl_ns, "nl", [batch]) == {"results": ["ok"], "fallbacks": 1}
    assert_same(lib_ns, nl_ns)


def test_elements_of_a_set_made_elsewhere_are_encoded_by_the_kernel_s_idea_of_it(two_ns: tuple[str, str]) -> None:
    """A set this handle did not make (nft made it, as an interval set of ifnames... or of addresses): its
    type and flags come from the kernel (NFT_MSG_GETSET); a set that does not exist is refused."""
    _, nl_ns = two_ns
    _ns_run(nl_ns, "nft", "add table ip calico; add set ip calico n { type ifname; }; "
                          "add set ip calico a { type ipv4_addr; flags interval; }")
    obj = {"family": "ip", "table": "calico"}
    batch = {"nftables": [{"add": {"element": {**obj, "name": "n", "elem": ["calia1"]}}},
                          {"add": {"element": {**obj, "name": "a", "elem": [{"prefix": {"addr": "10.1.0.0",
                                                                                         "len": 16}}]}}}]}
    missing = {"nftables": [{"add": {"element": {**obj, "name": "nope", "elem": ["10.0.0.1"]}}}]}
    results = apply(nl_ns, "nl", [batch, missing])
    assert results["results"][0] == "ok"
    assert results["results"][1].startswith("error:")
    listed = _ns_run(nl_ns, "nft", "list", "table", "ip", "calico")
    assert re.search(r'elements = \{ "calia1" \}', listed)
    assert re.search(r"elements = \{ 10\.1\.0\.0/16 \}", listed)
