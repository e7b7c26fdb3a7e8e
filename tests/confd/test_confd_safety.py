"""confd's rendering safety (issue 18, items 4 and 6).

Item 4: calicoctl and confd agree. What Calico's validator refuses (a service
range or an advertised prefix with host bits: Calico's ``net`` tag) calicoctl
refuses, naming the field; what it accepts renders and BIRD accepts. A render
that fails anyway (BIRD refusing a config Calico accepts, or any exception) is
logged with its reason, reported by :meth:`confd.daemon.Confd.problems`, leaves
the previous config in place and is retried on the next change: a running
confd recovers without a restart.

Item 6: no value reaches BIRD's config as raw text. A hostile value in each
rendered field is either refused by the models (naming the field), or left out
and named (a BGP password BIRD 1.6 cannot quote), or rendered into a config
that BIRD accepts with exactly the intended protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from calicoctl.main import main as calicoctl_main
from confd import daemon, render, writer
from libcalico import api, syncers
from libcalico.api import loading
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.errors import ValidationError
from libcalico.model import KVPair, ResourceKey
from libcalico.watching import Syncer
from tests.confd.bird_config import BASE_PROTOCOLS, all_protocols
from tests.etcd_server import EtcdServer

V3 = "projectcalico.org/v3"
NODES = {"node1": "192.168.3.111/24", "node2": "192.168.3.112/24"}


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": V3, "kind": kind, "metadata": {"name": name}, "spec": spec}


def calicoctl(*args: str, stdin: str = "") -> tuple[int, str]:
    """calicoctl in this process (the environment names the test etcd); exit code and stdout + stderr."""
    out, old_stdin = io.StringIO(), sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(out):
            rc = calicoctl_main(list(args))
    finally:
        sys.stdin = old_stdin
    return rc, out.getvalue()


def apply(*docs: dict[str, Any]) -> tuple[int, str]:
    return calicoctl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))


def etcd_dump(endpoint: str) -> str:
    return subprocess.run(["etcdctl", f"--endpoints={endpoint}", "get", "--prefix", ""], capture_output=True,
                          text=True, check=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"}).stdout


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0, *, detail: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {detail()}")
        time.sleep(0.05)


def inputs(*, cfg: dict[str, Any] | None = None, peers: dict[str, dict[str, Any]] | None = None,
           nodes: dict[str, dict[str, Any]] | None = None, pools: dict[str, dict[str, Any]] | None = None,
           blocks: tuple[str, ...] = ("10.244.56.64/26",),
           secrets: dict[tuple[str, str], str] | None = None) -> render.Inputs:
    """Render inputs decoded through the models, as confd gets them (ValidationError for a refused value)."""
    def load(kind: str, name: str, spec: dict[str, Any]) -> Any:
        return loading.parse_resource(doc(kind, name, spec))

    node_specs = nodes if nodes is not None else {n: {"bgp": {"ipv4Address": ip}} for n, ip in NODES.items()}
    return render.Inputs(
        "node1", nodes={n: load("Node", n, s) for n, s in node_specs.items()},
        bgp_configs={"default": load("BGPConfiguration", "default", cfg)} if cfg is not None else {},
        peers={n: load("BGPPeer", n, s) for n, s in (peers or {}).items()},
        pools={n: load("IPPool", n, s) for n, s in (pools or {"p": {"cidr": "10.244.0.0/16"}}).items()},
        blocks=[load("IPAMBlock", "b", {"cidr": b}).spec.cidr for b in blocks], secrets=dict(secrets or {}))


def bird_accepts(files: dict[str, str], tmp: Path) -> None:
    """BIRD (and BIRD 6) parse the files, through confd's own writer (stage, ``bird -p -c``, swap)."""
    writer.write(files, tmp)


def assert_protocols(files: dict[str, str], bgp: list[str], v: int = 4) -> None:
    main = "bird6.cfg" if v == 6 else "bird.cfg"
    got = Counter(all_protocols(files, main))
    assert got == Counter(BASE_PROTOCOLS + [("bgp", n) for n in bgp]), f"{main}: {sorted(got)}"


# --- item 4: calicoctl refuses what Calico's validator refuses, and what it accepts renders -------------------

HOST_BITS = [("serviceClusterIPs", [{"cidr": "10.96.0.1/12"}], "spec.serviceClusterIPs[0].cidr"),
             ("serviceExternalIPs", [{"cidr": "10.0.0.0/8"}, {"cidr": "172.16.5.7/24"}],
              "spec.serviceExternalIPs[1].cidr"),
             ("serviceLoadBalancerIPs", [{"cidr": "fd00:96::1/112"}], "spec.serviceLoadBalancerIPs[0].cidr"),
             ("prefixAdvertisements", [{"cidr": "192.168.0.1/16", "communities": ["100:1"]}],
              "spec.prefixAdvertisements[0].cidr")]


@pytest.mark.parametrize(("field", "value", "named"), HOST_BITS, ids=[f for f, _, _ in HOST_BITS])
def test_calicoctl_refuses_a_network_with_host_bits_naming_the_field_and_writes_nothing(
        field: str, value: Any, named: str, etcd_env: dict[str, str], etcd: EtcdServer) -> None:
    assert apply(doc("BGPConfiguration", "default", {"asNumber": 64512}))[0] == 0
    before = etcd_dump(etcd.endpoint)
    rc, out = apply(doc("BGPConfiguration", "default", {field: value}))
    assert rc != 0 and named in out and "host bits" in out, out
    assert etcd_dump(etcd.endpoint) == before


def test_what_calicos_validator_accepts_for_those_fields_renders_and_bird_accepts_it(tmp_path: Path) -> None:
    # Calico's "net": an address (its /32 or /128) or a masked CIDR; "" is omitempty and ignored by confd.
    inp = inputs(cfg={"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}, {"cidr": ""}, {}],
                      "serviceExternalIPs": [{"cidr": "172.16.5.7"}, {"cidr": "10.96.0.0/012"}],
                      "serviceLoadBalancerIPs": [{"cidr": "fd00:96::/112"}],
                      "communities": [{"name": "c", "value": "0100:7"}],
                      "prefixAdvertisements": [{"cidr": "10.96.0.0/12", "communities": ["c", "65000:1:2"]},
                                               {"cidr": "fd00:96::/112", "communities": ["c"]}]},
                 pools={"v4": {"cidr": "10.244.0.0/16"}, "v6": {"cidr": "fd00:244::/48"}},
                 nodes={"node1": {"bgp": {"ipv4Address": "192.168.3.111/24", "ipv6Address": "fd00:3::111/64"}},
                        "node2": {"bgp": {"ipv4Address": "192.168.3.112/24", "ipv6Address": "fd00:3::112/64"}}})
    files = render.render(inp)
    bird_accepts(files, tmp_path / "config")
    aggr = files["bird_aggr.cfg"]
    assert "route 10.96.0.0/12 blackhole;" in aggr and "route 172.16.5.7/32 blackhole;" in aggr
    assert aggr.count("route 10.96.0.0/12 blackhole;") == 1, "a range given twice is one route"
    assert "route fd00:96::/112 blackhole;" in files["bird6_aggr.cfg"]
    assert "if ( net ~ 10.96.0.0/12 ) then {" in files["bird.cfg"] and "fd00:96" not in files["bird.cfg"]
    assert "bgp_community.add((100, 7));" in files["bird.cfg"]
    assert "if ( net ~ fd00:96::/112 ) then {" in files["bird6.cfg"]


# --- item 4: a render that fails is logged, reported, kept out, and retried on the next change ----------------

@pytest.fixture
def confd_process(etcd_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """``calico-confd`` following the test etcd as node1 (config dir, log file); stopped afterwards."""
    log = tmp_path / "confd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["calico-confd", "-confdir", str(tmp_path), "--nodename", "node1", "--bird-socket",
                                 str(tmp_path / "no-bird.ctl")], env=etcd_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield tmp_path / "config", log
        assert proc.poll() is None, f"confd exited ({proc.returncode}):\n{log.read_text()}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_running_confd_logs_a_failed_render_keeps_the_old_config_and_recovers_when_it_is_fixed(
        confd_process: tuple[Path, Path], etcd: EtcdServer) -> None:
    config, log = confd_process
    rc, out = apply(*(doc("Node", n, {"bgp": {"ipv4Address": ip}}) for n, ip in NODES.items()),
                    doc("IPPool", "p", {"cidr": "10.244.0.0/16"}))
    assert rc == 0, out
    bird_cfg, aggr = config / "bird.cfg", config / "bird_aggr.cfg"

    def text(path: Path) -> str:
        return path.read_text() if path.exists() else ""

    wait_for("the mesh config", lambda: "protocol bgp Mesh_192_168_3_112" in text(bird_cfg), detail=log.read_text)

    # The value that used to pass calicoctl and then stop confd for good: refused, naming the field.
    rc, out = apply(doc("BGPConfiguration", "default", {"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]}))
    assert rc != 0 and "spec.serviceClusterIPs[0].cidr" in out, out
    # Written around calicoctl, straight into etcd, it is a parse failure: logged, treated as absent.
    key = "/calico/resources/v3/projectcalico.org/bgpconfigurations/default"
    bad = json.dumps(doc("BGPConfiguration", "default", {"serviceClusterIPs": [{"cidr": "10.96.0.1/12"}]}))
    subprocess.run(["etcdctl", f"--endpoints={etcd.endpoint}", "put", key, bad], check=True, capture_output=True,
                   env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
    wait_for("the parse failure in the log", lambda: "parse failure" in log.read_text(), detail=log.read_text)

    # A config Calico accepts and BIRD refuses (neighbor 0.0.0.0): logged with BIRD's reason, old config kept.
    good = text(bird_cfg)
    assert apply(doc("BGPPeer", "zero", {"peerIP": "0.0.0.0", "asNumber": 65000}))[0] == 0
    wait_for("BIRD's reason in the log", lambda: "Neighbor must be configured" in log.read_text(),
             detail=log.read_text)
    assert "rejected the new config" in log.read_text() and text(bird_cfg) == good

    # Fixed: the next changes are rendered, without a restart.
    assert calicoctl("delete", "bgppeer", "zero")[0] == 0
    assert calicoctl("delete", "bgpconfiguration", "default")[0] == 0   # the entry that does not parse
    rc, out = apply(doc("BGPConfiguration", "default", {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}))
    assert rc == 0, out
    wait_for("the fixed service range", lambda: "route 10.96.0.0/12 blackhole;" in text(aggr), detail=log.read_text)
    assert "rendered and installed again" in log.read_text()
    assert "Global_0_0_0_0" not in text(bird_cfg) and "Traceback" not in log.read_text()


async def test_problems_report_a_failed_render_until_a_change_fixes_it(
        etcd: EtcdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Confd with the syncer on a real etcd: what :meth:`Confd.problems` says through each state."""
    be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,), timeout=5))
    confd = daemon.Confd("node1", tmp_path / "config", writer.Commands(socket=str(tmp_path / "none.ctl")))
    assert confd.problems() == ["not in sync with the datastore (wait-for-ready)"]

    async def put(kind: str, name: str, spec: dict[str, Any]) -> None:
        res = loading.parse_resource(doc(kind, name, spec))
        await be.apply(KVPair(ResourceKey.for_resource(res), res))

    async def until(what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {confd.problems()}"
            await asyncio.sleep(0.02)

    for n, ip in NODES.items():
        await put("Node", n, {"bgp": {"ipv4Address": ip}})
    syncer = Syncer(be, syncers.bgp("node1").types, confd)
    tasks = [asyncio.create_task(syncer.run()), asyncio.create_task(confd.loop(be))]
    try:
        await until("the first config", lambda: confd.rendered and confd.problems() == [])
        await put("BGPPeer", "zero", {"peerIP": "0.0.0.0", "asNumber": 65000})   # BIRD refuses it
        await until("BIRD's refusal", lambda: any("Neighbor must be configured" in p for p in confd.problems()))
        assert confd.render_error is not None and "rejected the new config" in confd.render_error
        await be.delete(ResourceKey("BGPPeer", "zero"))
        await until("the recovery", lambda: confd.problems() == [])

        # Any exception from rendering is a failed render too, not the end of confd's render task.
        real = render.render

        def broken(inputs: render.Inputs) -> dict[str, str]:
            if "boom" in inputs.peers:
                raise KeyError("boom")
            return real(inputs)

        monkeypatch.setattr(render, "render", broken)
        with caplog.at_level(logging.ERROR, logger="confd"):
            await put("BGPPeer", "boom", {"peerIP": "192.168.3.1", "asNumber": 65000})
            await until("the render error", lambda: any("KeyError" in p for p in confd.problems()))
        assert any("rendering BIRD's config failed: KeyError" in r.getMessage() for r in caplog.records)
        await be.delete(ResourceKey("BGPPeer", "boom"))
        await until("the recovery", lambda: confd.problems() == [])
        assert not any(t.done() for t in tasks), "a task ended"
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await be.close()


def test_onetime_reports_a_failed_render_in_one_line_and_exits_1(etcd_env: dict[str, str], tmp_path: Path) -> None:
    rc, out = apply(*(doc("Node", n, {"bgp": {"ipv4Address": ip}}) for n, ip in NODES.items()),
                    doc("BGPPeer", "zero", {"peerIP": "0.0.0.0", "asNumber": 65000}))
    assert rc == 0, out
    r = subprocess.run(["calico-confd", "-onetime", "-confdir", str(tmp_path), "--nodename", "node1"],
                       env=etcd_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "calico-confd: bird -p -c" in r.stderr and "Neighbor must be configured" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "config" / "bird.cfg").exists()


async def test_onetime_turns_any_render_exception_into_render_failed(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from libcalico.backend.memory import MemoryBackend

    def broken(inputs: render.Inputs) -> dict[str, str]:
        raise ValueError("10.96.0.1/12 has host bits set")

    monkeypatch.setattr(render, "render", broken)
    confd = daemon.Confd("node1", tmp_path / "config", writer.Commands(socket=str(tmp_path / "none.ctl")))
    be = MemoryBackend()
    try:
        with pytest.raises(daemon.RenderFailed, match="ValueError: 10.96.0.1/12 has host bits set"):
            await daemon.onetime(be, confd)
    finally:
        await be.close()
    assert confd.problems() == [confd.render_error] and confd.render_error is not None


# --- item 6: hostile values in every rendered field ------------------------------------------------------

INJECT = 'x";\n}\nprotocol bgp Evil from bgp_template {\n  neighbor 10.6.6.6 as 666;\n  password "y'
MESH = ["Mesh_192_168_3_112"]
PW_REF = {"secretKeyRef": {"name": "bgp", "key": "tor"}}


@pytest.mark.parametrize("password", [INJECT, 'a"b', "line\nbreak", "nul\0byte", '"'])
def test_a_password_bird_cannot_quote_leaves_its_peer_out_and_is_named(password: str, tmp_path: Path) -> None:
    inp = inputs(peers={"tor": {"peerIP": "192.168.3.1", "asNumber": 65000, "password": PW_REF},
                        "plain": {"peerIP": "192.168.3.2", "asNumber": 65000}},
                 secrets={("bgp", "tor"): password})
    files = render.render(inp)
    bird_accepts(files, tmp_path / "config")
    assert_protocols(files, MESH + ["Global_192_168_3_2"])
    assert "password" not in files["bird.cfg"]
    [warning] = render.warnings(inp)
    assert warning.startswith("BGPPeer tor password (secret bgp, key tor) contains ") and "no BGP session" in warning


def test_a_mesh_password_bird_cannot_quote_leaves_the_mesh_out_and_is_named(tmp_path: Path) -> None:
    inp = inputs(cfg={"nodeMeshPassword": PW_REF}, secrets={("bgp", "tor"): INJECT},
                 peers={"plain": {"peerIP": "192.168.3.2", "asNumber": 65000}})
    files = render.render(inp)
    bird_accepts(files, tmp_path / "config")
    assert_protocols(files, ["Global_192_168_3_2"])
    assert "BGPConfiguration default nodeMeshPassword (secret bgp, key tor) contains a double quote" in \
        render.warnings(inp)[0]


@pytest.mark.parametrize("password", ["s3cret!", "back\\slash\\", "# not a comment", "/* not a comment */",
                                      "}{;'", "sp ace\ttab\r", "пароль-密码", "a" * 80, "protocol bgp X {"])
def test_any_other_password_is_written_as_one_bird_string(password: str, tmp_path: Path) -> None:
    inp = inputs(cfg={"nodeMeshPassword": PW_REF}, secrets={("bgp", "tor"): password},
                 peers={"tor": {"peerIP": "192.168.3.1", "asNumber": 65000, "password": PW_REF}})
    files = render.render(inp)
    bird_accepts(files, tmp_path / "config")
    assert_protocols(files, MESH + ["Global_192_168_3_1"])
    assert files["bird.cfg"].count(f'  password "{password}";\n') == 2 and render.warnings(inp) == []


# (resource kind, spec, the field the error names): each hostile value is refused by the models.
HOSTILE_SPECS: list[tuple[str, dict[str, Any], str]] = [
    ("BGPPeer", {"peerIP": '192.168.3.1";', "asNumber": 65000}, "spec.peerIP"),
    ("BGPPeer", {"peerIP": "192.168.3.1\n", "asNumber": 65000}, "spec.peerIP"),
    ("BGPPeer", {"peerIP": 'fe80::1%eth0";\nprotocol bgp Evil {', "asNumber": 65000}, "spec.peerIP"),
    ("BGPPeer", {"peerIP": "[fe80::1%x]:179", "asNumber": 65000}, "spec.peerIP"),
    ("BGPPeer", {"peerIP": "192.168.3.1:1\u0661", "asNumber": 65000}, "spec.peerIP"),
    ("BGPPeer", {"peerIP": "192.168.3.1", "asNumber": "65000; protocol"}, "spec.asNumber"),
    ("BGPPeer", {"peerIP": "192.168.3.1", "asNumber": "\u0661\u0662"}, "spec.asNumber"),
    ("BGPPeer", {"peerIP": "192.168.3.1", "asNumber": 2**32}, "spec.asNumber"),
    ("BGPPeer", {"peerIP": "192.168.3.1", "asNumber": 1, "localASNumber": -1}, "spec.localASNumber"),
    ("BGPPeer", {"peerIP": "192.168.3.1", "asNumber": 1, "ttlSecurity": 256}, "spec.ttlSecurity"),
    ("BGPPeer", {"peerIP": "192.168.3.1", "asNumber": 1, "node": "node1\n"}, "spec.node"),
    ("BGPPeer", {"peerIP": "192.168.3.1", "asNumber": 1, "filters": ["f\n"]}, "spec.filters"),
    ("BGPPeer", {"peerSelector": "has(x)\n}", "nodeSelector": "all()"}, "spec.peerSelector"),
    ("Node", {"bgp": {"ipv4Address": "192.168.3.5/24\n"}}, "spec.bgp.ipv4Address"),
    ("Node", {"bgp": {"ipv4Address": "192.168.3.5/24", "ipv6Address": "fd00::1%a\"/64"}}, "spec.bgp.ipv6Address"),
    ("Node", {"bgp": {"ipv4Address": "192.168.3.5/\u0662\u0664"}}, "spec.bgp.ipv4Address"),
    ("Node", {"bgp": {"ipv4Address": "192.168.3.5/24", "asNumber": "1; x"}}, "spec.bgp.asNumber"),
    ("Node", {"bgp": {"ipv4Address": "192.168.3.5/24", "routeReflectorClusterID": "1.2.3.4;"}},
     "spec.bgp.routeReflectorClusterID"),
    ("Node", {"bgp": {"ipv4Address": "192.168.3.5/24", "routeReflectorClusterID": "fd00::1"}},
     "spec.bgp.routeReflectorClusterID"),
    ("BGPConfiguration", {"asNumber": "64512\n"}, "spec.asNumber"),
    ("BGPConfiguration", {"listenPort": "179; x"}, "spec.listenPort"),
    ("BGPConfiguration", {"listenPort": 70000}, "spec.listenPort"),
    ("BGPConfiguration", {"ignoredInterfaces": ['eth0", "*']}, "spec.ignoredInterfaces[0]"),
    ("BGPConfiguration", {"ignoredInterfaces": ["eth0", "eth1\n"]}, "spec.ignoredInterfaces[1]"),
    ("BGPConfiguration", {"ignoredInterfaces": ["*"]}, "spec.ignoredInterfaces[0]"),
    ("BGPConfiguration", {"ignoredInterfaces": ["a" * 16]}, "spec.ignoredInterfaces[0]"),
    ("BGPConfiguration", {"serviceClusterIPs": [{"cidr": "10.96.0.0/12; }"}]}, "spec.serviceClusterIPs[0].cidr"),
    ("BGPConfiguration", {"serviceExternalIPs": [{"cidr": "fd00::%x/64"}]}, "spec.serviceExternalIPs[0].cidr"),
    ("BGPConfiguration", {"communities": [{"name": "c", "value": "1:2)); protocol"}],
                          "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c"]}]},
     "spec.communities[0].value"),
    ("BGPConfiguration", {"communities": [{"name": "c", "value": "\u0661:\u0662"}],
                          "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c"]}]},
     "spec.communities[0].value"),
    ("BGPConfiguration", {"communities": [{"name": "c", "value": "1:2\n"}],
                          "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c"]}]},
     "spec.communities[0].value"),
    ("BGPConfiguration", {"communities": [{"name": 'c"', "value": "1:2"}],
                          "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ['c"']}]},
     "spec.communities[0].name"),
    ("BGPConfiguration", {"prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["1:2; x"]}]},
     "spec.prefixAdvertisements[0].communities"),
    ("BGPConfiguration", {"prefixAdvertisements": [{"cidr": "10.0.0.0/8 ", "communities": ["1:2"]}]},
     "spec.prefixAdvertisements[0].cidr"),
    ("IPPool", {"cidr": "10.244.0.0/16\n"}, "spec.cidr"),
    ("IPPool", {"cidr": "fd00::%z/48"}, "spec.cidr"),
    ("IPAMBlock", {"cidr": "10.244.0.0/26;"}, "spec.cidr"),
]


@pytest.mark.parametrize(("kind", "spec", "named"), HOSTILE_SPECS,
                         ids=[f"{k}-{n}-{i}" for i, (k, _, n) in enumerate(HOSTILE_SPECS)])
def test_a_hostile_value_in_a_rendered_field_is_refused_naming_the_field(kind: str, spec: dict[str, Any],
                                                                        named: str) -> None:
    with pytest.raises(ValidationError) as err:
        loading.parse_resource(doc(kind, "x", spec))
    assert named in str(err.value), str(err.value)


def test_odd_but_valid_values_render_to_exactly_the_intended_protocols(tmp_path: Path) -> None:
    """Values the models accept that a naive template would write wrongly: normalised, named as Calico names them."""
    inp = inputs(
        cfg={"asNumber": "1.10", "listenPort": 1790, "ignoredInterfaces": ["eth*", "docker.0", "a-b_c"],
             "serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]},
        nodes={"node1": {"bgp": {"ipv4Address": "192.168.3.111/24", "ipv6Address": "fd00:3::111/64"}},
               "node2": {"bgp": {"ipv4Address": "192.168.3.112/24", "asNumber": 4294967295}}},
        peers={"v6-peer": {"peerIP": "[fd00:0:0::0001]:1791", "asNumber": "65000"},
               "tor": {"peerIP": "192.168.3.1:179", "asNumber": 65000, "localASNumber": 0, "ttlSecurity": 255},
               "tor2": {"peerIP": "192.168.3.1", "asNumber": 65001, "localASNumber": 64999}},
        pools={"v4": {"cidr": "10.244.0.0/16"}, "v6": {"cidr": "fd00:244:0000::/48"}},
        blocks=("10.244.56.64/26", "10.244.56.65/26", "fd00:244::1/122"))
    files = render.render(inp)
    bird_accepts(files, tmp_path / "config")
    assert_protocols(files, ["Mesh_192_168_3_112", "Global_192_168_3_1_port_179", "Global_192_168_3_1"])
    assert_protocols(files, ["Global_fd00__1_port_1791"], v=6)
    text = files["bird.cfg"]
    assert 'interface -"eth*", -"docker.0", -"a-b_c", -"cali*", -"kube-ipvs*", "*";' in text
    # The mesh peer is a Calico node: it listens on the global listenPort, as Calico peers it.
    assert "local as 65546;" in text and "neighbor 192.168.3.112 port 1790 as 4294967295;" in text
    assert "local as 0" not in text and "local as 64999;" in text and "multihop 255;" in text
    assert "neighbor fd00::1 port 1791 as 65000;" in files["bird6.cfg"]
    assert files["bird_aggr.cfg"].count("route 10.244.56.64/26 blackhole;") == 1
    assert "route fd00:244::/122 blackhole;" in files["bird6_aggr.cfg"]
