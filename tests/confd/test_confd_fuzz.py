"""Property-based fuzzing of everything confd renders into BIRD's config (issue 18, item 6).

Hypothesis builds datastore contents field by field: mostly plausible values,
mixed with hostile strings (quotes, newlines, braces, BIRD keywords, IPv6
zones, non-ASCII digits) and out-of-range numbers, in every field that reaches
BIRD. Each resource is decoded through the models, as confd gets it; then:

* a decode either succeeds or raises :class:`libcalico.errors.ValidationError`,
  nothing else;
* rendering what decoded never raises;
* the top-level protocols of every file, read as BIRD's lexer reads them
  (:mod:`tests.confd.bird_config`), are exactly the fixed ones plus one ``bgp``
  protocol per session :func:`confd.render.peerings` planned, each named as
  Calico names it after an address the inputs hold: no value ever adds a block;
* every password written is the secret's value, in one BIRD string;
* for a sample (``bird -p`` costs ~10 ms), BIRD accepts the files, or refuses
  them for one of the few reasons Calico's validator does not cover (an AS
  number 0, neighbor 0.0.0.0; confd then keeps the old config and says so).

Deterministic (``derandomize``) with a modest number of examples.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confd import render, writer
from libcalico.api import loading
from libcalico.errors import ValidationError
from tests.confd.bird_config import all_protocols

HOSTILE = st.sampled_from([
    '"', '";', "\n", "x\ny", "}", "{", ";", "# c", "/*", '"; } protocol bgp Evil from bgp_template { "',
    "protocol bgp Evil { neighbor 10.6.6.6 as 666; }", "10.0.0.1\n", "10.0.0.1;", "10.0.0.0/8;",
    "10.0.0.1/33", "10.96.0.1/12", "fe80::1%eth0", 'fe80::1%"', "fd00::1%\n", "[fe80::1%x]:179",
    "10.0.0.1:179\n", "10.0.0.1:\u0661\u0667\u0669", "\u0661\u0662", "1:2\n", "1:2:3\n", "1:2)); x",
    "65536:1", "1:4294967296:1", "eth0\n", 'eth0"', "*", "a" * 16, "node1\n", "", " ", "\0", "\u2028",
    "0x10", "1e3", "-1", "1.2.3", "65536.1",
]) | st.text(alphabet='ab1:./%"\n{};# \\*-_[]\u0661', max_size=12)
HOSTILE_INT = st.sampled_from([-1, 0, 2**16, 2**31, 2**32 - 1, 2**32, 2**63, True, 1.5])


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` about five times in six, else a hostile string or number (``one_of`` would pick uniformly
    among all the branches it flattens, so most values would be hostile and few resources would decode)."""
    return st.sampled_from([False] * 5 + [True]).flatmap(lambda hostile: (HOSTILE | HOSTILE_INT) if hostile else valid)


def _net(v: int, lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.builds(lambda a, p: str(ipaddress.ip_network(f"{a}/{p}", strict=False)),
                     st.ip_addresses(v=v), st.integers(lo, hi))


IP4 = st.ip_addresses(v=4, network="192.168.3.0/24").map(str) | st.ip_addresses(v=4).map(str)
IP6 = st.ip_addresses(v=6, network="fd00:3::/120").map(str) | st.ip_addresses(v=6).map(str)
ASN = st.integers(1, 2**32 - 1) | st.sampled_from(["64512", "65000", "1.10", 64512])
NAMES = ["node1", "node2", "node3"]


@st.composite
def node(draw: st.DrawFn, name: str) -> dict[str, Any]:
    bgp: dict[str, Any] = {}
    if draw(st.booleans()) or name == "node1":
        bgp["ipv4Address"] = draw(mostly(st.builds(lambda a, p: f"{a}/{p}", IP4, st.integers(8, 32))))
    if draw(st.booleans()):
        bgp["ipv6Address"] = draw(mostly(st.builds(lambda a, p: f"{a}/{p}", IP6, st.integers(48, 128))))
    if draw(st.booleans()):
        bgp["asNumber"] = draw(mostly(ASN))
    if draw(st.integers(0, 7)) == 0:   # rare: a route reflector leaves the mesh, as in Calico
        bgp["routeReflectorClusterID"] = draw(mostly(st.sampled_from(["224.0.0.1", "10.0.0.1"])))
    labels = draw(st.sampled_from([{}, {"rr": "true"}, {"rack": "a"}]))
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "spec": {"bgp": bgp} if bgp else {}}


PASSWORD_REF = st.sampled_from([{"secretKeyRef": {"name": "s", "key": k}} for k in ("good", "good", "bad", "missing")])


@st.composite
def peer(draw: st.DrawFn, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["peerIP"] = draw(mostly(IP4 | IP6.map(lambda a: f"[{a}]:{179 + len(a) % 3}") |
                                     st.builds(lambda a, p: f"{a}:{p}", IP4, st.integers(0, 65535)) | IP6))
        spec["asNumber"] = draw(mostly(ASN))
    else:
        spec["peerSelector"] = draw(mostly(st.sampled_from(["all()", "rr == 'true'", "has(rack)"])))
    scope = draw(st.integers(0, 3))   # 0, 1: a global peer
    if scope == 2:
        spec["node"] = draw(mostly(st.sampled_from(NAMES)))
    elif scope == 3:
        spec["nodeSelector"] = draw(mostly(st.sampled_from(["all()", "rr == 'true'", "!has(rr)"])))
    for key, strategy in (("localASNumber", mostly(ASN)), ("ttlSecurity", mostly(st.integers(0, 255))),
                          ("keepOriginalNextHop", st.booleans()), ("password", PASSWORD_REF),
                          ("filters", st.lists(mostly(st.just("f1")), max_size=2))):
        if draw(st.integers(0, 3)) == 0 or key == "password" and draw(st.booleans()):
            spec[key] = draw(strategy)
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": name}, "spec": spec}


COMMUNITY = st.builds(lambda a, b: f"{a}:{b}", st.integers(0, 65535), st.integers(0, 65535)) | st.builds(
    lambda a, b, c: f"{a}:{b}:{c}", st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
SERVICE = mostly(_net(4, 8, 32) | _net(6, 64, 128) | IP4 | st.just(""))


@st.composite
def bgp_config(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    optional: list[tuple[str, st.SearchStrategy[Any]]] = [
        ("asNumber", mostly(ASN)), ("nodeToNodeMeshEnabled", st.booleans()),
        ("listenPort", mostly(st.integers(1, 65535))),
        ("serviceClusterIPs", st.lists(st.fixed_dictionaries({"cidr": SERVICE}), max_size=2)),
        ("serviceExternalIPs", st.lists(st.fixed_dictionaries({"cidr": SERVICE}), max_size=2)),
        ("serviceLoadBalancerIPs", st.lists(st.fixed_dictionaries({"cidr": SERVICE}), max_size=2)),
        ("ignoredInterfaces", st.lists(mostly(st.from_regex(r"\A[a-z][a-z0-9.*_-]{0,7}\Z")), max_size=3)),
        ("nodeMeshPassword", PASSWORD_REF),
        ("programClusterRoutes", st.sampled_from(["Enabled", "Disabled", "EnabledIPIPOnly", "EnabledNoEncapOnly"])),
    ]
    for key, strategy in optional:
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    if draw(st.booleans()):
        names = ["c1", "c2"]
        spec["communities"] = [{"name": draw(mostly(st.just(n))), "value": draw(mostly(COMMUNITY))} for n in names]
        spec["prefixAdvertisements"] = draw(st.lists(st.fixed_dictionaries({
            "cidr": mostly(_net(4, 8, 32) | _net(6, 48, 128)),
            "communities": st.lists(mostly(st.sampled_from(names) | COMMUNITY), min_size=1, max_size=3)}),
            min_size=1, max_size=2))
    if spec.get("nodeToNodeMeshEnabled") is False:
        spec.pop("nodeMeshPassword", None)
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
            "spec": spec}


@st.composite
def pool(draw: st.DrawFn, name: str) -> dict[str, Any]:
    cidr = draw(mostly(_net(4, 12, 24).filter(lambda c: not c.startswith("169.254")) | _net(6, 48, 112).filter(
        lambda c: not c.startswith("fe8"))))
    mode = draw(st.sampled_from([{}, {"ipipMode": "Always"}, {"vxlanMode": "Always"}, {"ipipMode": "CrossSubnet"}]))
    if ":" in str(cidr):
        mode.pop("ipipMode", None)
    spec = {"cidr": cidr, **mode, "disabled": draw(st.booleans()), "disableBGPExport": draw(st.booleans())}
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name}, "spec": spec}


BLOCK = st.builds(lambda c: {"apiVersion": "projectcalico.org/v3", "kind": "IPAMBlock",
                             "metadata": {"name": "b"}, "spec": {"cidr": c, "affinity": "host:node1"}},
                  mostly(_net(4, 26, 26) | _net(6, 122, 122)))


@st.composite
def datastore(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[tuple[str, str], str]]:
    docs = [draw(node(n)) for n in NAMES[:draw(st.integers(1, 3))]]
    docs += [draw(peer(f"peer{i}")) for i in range(draw(st.integers(0, 3)))]
    docs += [draw(bgp_config())] if draw(st.booleans()) else []
    docs += [draw(pool(f"pool{i}")) for i in range(draw(st.integers(1, 2)))]
    docs += draw(st.lists(BLOCK, max_size=2))
    secrets = {("s", "good"): draw(st.text(min_size=1, max_size=20)), ("s", "bad"): draw(HOSTILE)}
    return docs, secrets


def decode(docs: list[dict[str, Any]]) -> tuple[render.Inputs, int]:
    """The resources that pass validation (as confd would hold them), and how many were refused."""
    inputs, refused = render.Inputs("node1"), 0
    for doc in docs:
        try:
            res = loading.parse_resource(doc)
        except ValidationError:
            refused += 1
            continue
        name = res.metadata.name
        kind = doc["kind"]
        if kind == "IPAMBlock":
            inputs.blocks.append(res.spec.cidr)
        else:
            {"Node": inputs.nodes, "BGPPeer": inputs.peers, "BGPConfiguration": inputs.bgp_configs,
             "IPPool": inputs.pools}[kind][name] = res
    return inputs, refused


_PROTOCOL_NAME = re.compile(r"(Mesh|Node|Global)_([0-9a-f_]+?)(?:_port_([0-9]+))?\Z")
# What BIRD refuses although Calico's validator lets it through (an AS number 0, a peer or a node at
# 0.0.0.0, whose router id BIRD 6 then lacks); confd keeps the old config and logs it.
BIRD_REFUSES_CALICO_VALID = ("Local AS number must be set", "Remote AS number must be set",
                             "Neighbor must be configured", "Router ID must be configured manually")


def addresses(inputs: render.Inputs) -> set[str]:
    """Every address the inputs name (node addresses, peer IPs), normalised: what a protocol may be named after."""
    out = set()
    for n in inputs.nodes.values():
        for cidr in (n.spec.bgp.ipv4_address, n.spec.bgp.ipv6_address) if n.spec.bgp else ():
            if cidr:
                out.add(str(ipaddress.ip_interface(cidr).ip))
    for p in inputs.peers.values():
        if p.spec.peer_ip:
            host = p.spec.peer_ip[1:].partition("]")[0] if p.spec.peer_ip.startswith("[") else (
                p.spec.peer_ip.partition(":")[0] if p.spec.peer_ip.count(":") == 1 else p.spec.peer_ip)
            out.add(str(ipaddress.ip_address(host)))
    return out


def fields_version(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


def check_protocols(inputs: render.Inputs, files: dict[str, str], v: int) -> None:
    main = "bird6.cfg" if v == 6 else "bird.cfg"
    if main not in files:
        return
    planned = render.peerings(inputs, v)
    fixed = [("kernel", ""), ("device", ""), ("direct", "")]   # always, as in Calico's template
    got = sorted(all_protocols(files, main))
    # A static protocol only with routes for it (blocks, service ranges, reachableBy routes), as Calico's confd.
    static = [("static", "")] if "protocol static from static_template" in files[main.replace(".cfg", "_aggr.cfg")] else []
    assert got == sorted([*fixed, *static, *(("bgp", p.name) for p in planned)]), (main, got)
    assert bool(static) == ("blackhole;" in files[main.replace(".cfg", "_aggr.cfg")] or " via " in files[
        main.replace(".cfg", "_aggr.cfg")] or any(fields_version(b) == v for b in inputs.blocks)), main
    known = {render._name(a) for a in addresses(inputs)}
    for p in planned:
        m = _PROTOCOL_NAME.match(p.name)
        assert m and m.group(2) in known and len(p.name) <= 64, p.name
        if p.password:
            assert files[main].count(f'  password "{p.password}";\n') >= 1 and not render.unusable_password(p.password)


def test_every_rendered_value_is_refused_or_rendered_in_its_slot(tmp_path_factory: pytest.TempPathFactory) -> None:
    stats: Counter[str] = Counter()

    @settings(max_examples=200, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(datastore())
    def check(data: tuple[list[dict[str, Any]], dict[tuple[str, str], str]]) -> None:
        docs, secrets = data
        inputs, refused = decode(docs)
        inputs.secrets = secrets
        files = render.render(inputs)
        warnings = render.warnings(inputs)
        for v in (4, 6):
            check_protocols(inputs, files, v)
        for name, text in files.items():
            for line in text.split("\n"):   # BIRD's lines ("\r", "\u2028"... are not line ends to it)
                if "password" in line and not line.lstrip().startswith("#"):
                    assert line.count('"') == 2, (name, line)
        planned = render.peerings(inputs) + render.peerings(inputs, 6)
        stats.update(examples=1, refused=refused, sessions=len(planned),
                     passwords=sum(1 for p in planned if p.password),
                     passwords_left_out=sum(1 for w in warnings if "cannot quote" in w))
        if stats["examples"] % 4 == 1:   # bird -p for a sample
            stats["bird_checked"] += 1
            try:
                writer.write(files, tmp_path_factory.mktemp("bird") / "config")
            except writer.CheckFailed as exc:
                assert any(reason in str(exc) for reason in BIRD_REFUSES_CALICO_VALID), str(exc)
                stats["bird_refused_calico_valid"] += 1

    check()
    # The strategies reach every outcome: refusals, sessions, passwords written and left out, BIRD's check.
    assert stats["refused"] >= 50 and stats["sessions"] >= 50 and stats["passwords"] >= 5, stats
    assert stats["passwords_left_out"] >= 3 and stats["bird_checked"] >= 40, stats


def test_a_sample_of_generated_passwords_is_written_as_one_string(tmp_path: Path) -> None:
    """The fuzz's secret values through the whole path once, BIRD checking each (no sampling)."""
    values = ['a"b', "x\ny", "\0", "ok", "back\\", "}{;", "# x", "/* x", "пароль"]
    for i, value in enumerate(values):
        docs = [{"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "node1"},
                 "spec": {"bgp": {"ipv4Address": "192.168.3.111/24"}}},
                {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"},
                 "spec": {"peerIP": "192.168.3.1", "asNumber": 65000,
                          "password": {"secretKeyRef": {"name": "s", "key": "good"}}}},
                {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "p"},
                 "spec": {"cidr": "10.244.0.0/16"}}]
        inputs, refused = decode(docs)
        inputs.secrets = {("s", "good"): value}
        files = render.render(inputs)
        check_protocols(inputs, files, 4)
        writer.write(files, tmp_path / str(i))
        assert refused == 0 and ('password "' in files["bird.cfg"]) == (not render.unusable_password(value))


def test_two_nodes_on_one_address_get_one_mesh_session_and_a_warning() -> None:
    """calico/node refuses an address another Node has; if the datastore holds two anyway, Calico's template
    would write two ``Mesh_<ip>`` protocols and BIRD would refuse the whole config: one session, and a warning."""
    def node(name: str, ip: str) -> dict[str, Any]:
        return {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
                "spec": {"bgp": {"ipv4Address": ip}}}

    inputs, _ = decode([node("node1", "192.168.3.110/24"), node("node2", "192.168.3.111/24"),
                        node("node3", "192.168.3.111/24")])
    files = render.render(inputs)
    assert files["bird.cfg"].count("protocol bgp Mesh_192_168_3_111 ") == 1
    assert any("Nodes node2, node3 all have the address 192.168.3.111" in w for w in render.warnings(inputs))
