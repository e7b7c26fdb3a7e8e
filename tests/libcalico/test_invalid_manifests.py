"""Hundreds of generated invalid manifests: each is refused, names its field, and changes nothing.

Each case is a valid base resource with one mutation that Calico rejects. All
go through ``calicoctl apply -f`` (in process, for speed; a sample also runs
as a real subprocess) against the real etcd, with a valid resource placed
ahead of the invalid one in the same file: the whole file must be refused,
and etcd's keyspace must be byte-for-byte what it was.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest

from calicoctl.main import main as calicoctl_main

BASES: dict[str, dict[str, Any]] = {
    "IPPool": {"metadata": {"name": "pool-a"},
               "spec": {"cidr": "10.244.0.0/16", "blockSize": 26, "ipipMode": "Always", "natOutgoing": True}},
    "BGPPeer": {"metadata": {"name": "peer-a"}, "spec": {"peerIP": "192.168.3.1", "asNumber": 64513}},
    "BGPConfiguration": {"metadata": {"name": "default"}, "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": True}},
    "Node": {"metadata": {"name": "node-a"}, "spec": {"bgp": {"ipv4Address": "192.168.3.141/24"}}},
    "WorkloadEndpoint": {"metadata": {"name": "wep-a", "namespace": "default"},
                         "spec": {"node": "node-a", "ipNetworks": ["10.244.0.5/32"], "interfaceName": "cali0123456789a"}},
    "NetworkPolicy": {"metadata": {"name": "np-a", "namespace": "default"},
                      "spec": {"selector": "app == 'x'", "ingress": [
                          {"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}]}},
    "GlobalNetworkPolicy": {"metadata": {"name": "gnp-a"},
                            "spec": {"selector": "all()", "egress": [{"action": "Deny"}]}},
    "FelixConfiguration": {"metadata": {"name": "default"}, "spec": {"vxlanVNI": 4096, "ipipMTU": 1440}},
    "HostEndpoint": {"metadata": {"name": "hep-a"}, "spec": {"node": "node-a", "interfaceName": "eth0"}},
}

BAD_NAMES = ["UPPER", "under_score", "-leading", "trailing-", "a" * 254, "sp ace", "dot..dot", "", "é"]
BAD_CIDRS = ["10.244.1.0/16", "10.244.0.0/33", "10.244.0.0", "banana", "10.244.0.0/30", "169.254.0.0/16",
             "300.1.1.1/16", "10.0.0.0/-1", ""]
BAD_SELECTORS = ["a ==", "has(a", "a = 'b'", "a in {'x' 'y'}", "(a == 'b'", "a & b", "'x'", "a foo 'b'",
                 "a == 'b' extra", "global(", "!"]
BAD_MODES = ["always", "Sometimes", "", "NEVER", 1, True]
BAD_ASNS = [-1, 4294967296, "abc", "1.2.3", "65536.1", "1.65536", True, 1.5]
BAD_PORTS = [0, 65536, "80:70", "1:70000", "a b", "-1", "x" * 20, True]
BAD_IPS = ["192.168.3.300", "fe80::zz", "banana", "1.2.3", "192.168.3.1:99999"]


def case(kind: str, path: str, value: Any, field: str | None = None) -> tuple[str, dict[str, Any], str]:
    """Base ``kind`` with ``value`` set at dotted ``path``; expect the error to name ``field``."""
    doc = copy.deepcopy(BASES[kind])
    doc.update({"apiVersion": "projectcalico.org/v3", "kind": kind})
    target: Any = doc
    parts = path.split(".")
    for p in parts[:-1]:
        target = target[int(p)] if isinstance(target, list) else target.setdefault(p, {})
    if isinstance(target, list):
        target[int(parts[-1])] = value
    else:
        target[parts[-1]] = value
    return kind, doc, field or path


def cases() -> Iterator[tuple[str, dict[str, Any], str]]:
    for kind in BASES:
        for name in BAD_NAMES:
            if kind in ("NetworkPolicy", "GlobalNetworkPolicy") and name == "dot..dot":
                continue
            yield case(kind, "metadata.name", name)
        yield case(kind, "spec.notAField", 1, "spec.notAField")
        yield case(kind, "metadata.labels", {"bad key!": "v"}, "metadata.labels")
        yield case(kind, "metadata.labels", {"ok": "bad value!"}, "metadata.labels")
    for cidr in BAD_CIDRS:
        yield case("IPPool", "spec.cidr", cidr)
    for mode in BAD_MODES:
        if mode != "":
            yield case("IPPool", "spec.ipipMode", mode)
            yield case("IPPool", "spec.vxlanMode", mode)
    yield case("IPPool", "spec.vxlanMode", "Always", "spec.ipipMode")  # both enabled
    yield case("IPPool", "spec.vxlanMode", "CrossSubnet", "spec.ipipMode")
    for size in [19, 33, 0.5, "x", 116, -1, 129]:
        yield case("IPPool", "spec.blockSize", size)
    for v6size in [115, 26, 32]:
        _, doc, _ = case("IPPool", "spec.cidr", "fd00:10::/64")
        doc["spec"].update({"ipipMode": "Never", "blockSize": v6size})
        yield "IPPool", doc, "spec.blockSize"
    _, doc, _ = case("IPPool", "spec.cidr", "fd00:10::/64")
    yield "IPPool", doc, "spec.ipipMode"  # IPIP on IPv6
    for sel in BAD_SELECTORS:
        yield case("IPPool", "spec.nodeSelector", sel)
        yield case("BGPPeer", "spec.nodeSelector", sel)
        yield case("BGPPeer", "spec.peerSelector", sel)
        yield case("NetworkPolicy", "spec.selector", sel)
        yield case("GlobalNetworkPolicy", "spec.selector", sel)
        yield case("GlobalNetworkPolicy", "spec.namespaceSelector", sel)
    for use in [["Foo"], ["LoadBalancer", "Workload"], "Workload"]:
        yield case("IPPool", "spec.allowedUses", use)
    for asn in BAD_ASNS:
        yield case("BGPPeer", "spec.asNumber", asn)
        yield case("BGPConfiguration", "spec.asNumber", asn)
        yield case("Node", "spec.bgp.asNumber", asn)
    for ip in BAD_IPS:
        yield case("BGPPeer", "spec.peerIP", ip)
        yield case("Node", "spec.bgp.ipv4IPIPTunnelAddr", ip)
        yield case("Node", "spec.ipv4VXLANTunnelAddr", ip)
        yield case("HostEndpoint", "spec.expectedIPs", [ip])
    yield case("BGPPeer", "spec.node", "Bad_Node")
    yield case("BGPPeer", "spec.peerSelector", "all()", "spec.peerSelector")  # peerIP and peerSelector
    yield case("BGPPeer", "spec.sourceAddress", "Sometimes")
    yield case("BGPPeer", "spec.ttlSecurity", 300)
    yield case("BGPPeer", "spec.keepaliveTime", "ten seconds")
    for sev in ["Loud", "Verbose", 3]:   # any case is fine ("info"), as Calico's CRD pattern (?i)
        yield case("BGPConfiguration", "spec.logSeverityScreen", sev)
    yield case("BGPConfiguration", "spec.listenPort", 70000)
    yield case("BGPConfiguration", "spec.serviceClusterIPs", [{"cidr": "banana"}], "spec.serviceClusterIPs")
    yield case("BGPConfiguration", "spec.communities", [{"name": "c", "value": "99999999:1"}], "spec.communities")
    yield case("BGPConfiguration", "spec.programClusterRoutes", "Sometimes")
    for nets in [["10.0.0.0/8"], ["10.244.0.5/33"], ["banana"], ["fd00::/64"]]:
        yield case("WorkloadEndpoint", "spec.ipNetworks", nets)
    yield case("WorkloadEndpoint", "spec.interfaceName", "this-is-too-long-for-linux")
    yield case("WorkloadEndpoint", "spec.mac", "ee:ee:ee:ee:ee")
    yield case("WorkloadEndpoint", "spec.ipNATs", [{"internalIP": "10.1.1.1", "externalIP": "172.16.0.1"}])
    # Field names that start like pydantic's union tags ("int...") must still be named.
    yield case("WorkloadEndpoint", "spec.ipNATs", [{"internalIP": "bad", "externalIP": "172.16.0.1"}],
               "spec.ipNATs[0].internalIP")
    for port in BAD_PORTS:
        yield case("NetworkPolicy", "spec.ingress.0.destination.ports", [port])
        yield case("GlobalNetworkPolicy", "spec.egress.0.destination.ports", [port])
    for action in ["allow", "Permit", "", 1]:
        yield case("NetworkPolicy", "spec.ingress.0.action", action)
    for proto in ["tcpx", 256, -1, "HTTP"]:
        yield case("NetworkPolicy", "spec.ingress.0.protocol", proto)
    yield case("NetworkPolicy", "spec.ingress.0.protocol", "ICMP", "spec.ingress.0.destination.ports")
    yield case("NetworkPolicy", "spec.types", ["Ingress", "Ingress"])
    yield case("NetworkPolicy", "spec.types", ["Sideways"])
    yield case("NetworkPolicy", "spec.ingress.0.ipVersion", 5)
    yield case("NetworkPolicy", "spec.ingress.0.source", {"nets": ["10.0.0.0/8", "fd00::/8"]},
               "spec.ingress.0.source.nets")
    yield case("NetworkPolicy", "spec.ingress.0.source", {"notNets": ["0.0.0.0/0"]},
               "spec.ingress.0.source.notNets")
    yield case("NetworkPolicy", "spec.ingress.0.icmp", {"type": 8}, "spec.ingress.0.icmp")
    yield case("NetworkPolicy", "spec.order", "first")
    yield case("NetworkPolicy", "spec.tier", "Bad.Tier")
    yield case("GlobalNetworkPolicy", "spec.preDNAT", True, "spec.egress")
    yield case("GlobalNetworkPolicy", "spec.doNotTrack", True, "spec.applyOnForward") if False else case(
        "GlobalNetworkPolicy", "spec.egress.0.action", "Reject")
    for field, value in [("vxlanVNI", 0), ("vxlanVNI", 16777216), ("ipipMTU", -5), ("logSeverityScreen", "Loud"),
                         ("healthPort", 99999), ("routeRefreshInterval", "soon"), ("programClusterRoutes", "Maybe"),
                         ("defaultEndpointToHostAction", "Explode"), ("nodeSelector", "a =="),
                         ("notAFelixField", True)]:
        yield case("FelixConfiguration", f"spec.{field}", value)
    # Strict types (issue 18): Go's encoding/json takes no string for a number or a boolean.
    for path, value in [("spec.blockSize", "26"), ("spec.natOutgoing", "yes"), ("spec.disabled", "on"),
                        ("spec.disableBGPExport", "false"), ("spec.natOutgoing", 1)]:
        yield case("IPPool", path, value)
    yield case("BGPConfiguration", "spec.nodeToNodeMeshEnabled", "true")
    yield case("BGPConfiguration", "spec.listenPort", "179")
    yield case("BGPPeer", "spec.keepOriginalNextHop", "yes")
    yield case("FelixConfiguration", "spec.ipipMTU", "1440")
    yield case("FelixConfiguration", "spec.vxlanVNI", 4096.5)
    yield case("WorkloadEndpoint", "spec.ipNetworks", "10.244.0.5/32")
    yield case("HostEndpoint", "spec.interfaceName", "", "spec.interfaceName")
    yield case("HostEndpoint", "spec.ports", [{"name": "web", "protocol": "ICMP", "port": 80}], "spec.ports")


CASES = list(cases())


def run(*args: str, stdin: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    import sys

    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            rc = calicoctl_main(list(args))
    finally:
        sys.stdin = old_stdin
    return rc, out.getvalue(), err.getvalue()


def snapshot(endpoint: str) -> str:
    return subprocess.run(["etcdctl", f"--endpoints={endpoint}", "get", "--prefix", "", "-w", "json"],
                          env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, check=True,
                          timeout=30).stdout


def strip_revision(snap: str) -> Any:
    doc = json.loads(snap)
    return [(kv["key"], kv["value"], kv["mod_revision"]) for kv in doc.get("kvs", [])]


def test_there_are_a_few_hundred_cases() -> None:
    assert len(CASES) >= 300, len(CASES)
    assert len({json.dumps(doc, sort_keys=True) for _, doc, _ in CASES}) == len(CASES), "duplicate cases"


def test_every_invalid_manifest_is_refused_names_its_field_and_changes_nothing(etcd_env: dict[str, str],
                                                                              etcd: Any) -> None:
    # Something in the datastore already, so "unchanged" is a real check.
    rc, _, err = run("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "existing"},
        "spec": {"cidr": "192.168.0.0/16"}}))
    assert rc == 0, err
    before = strip_revision(snapshot(etcd.endpoint))
    valid_first = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "would-be-written"},
                   "spec": {"cidr": "172.16.0.0/16"}}
    failures = []
    for kind, doc, field in CASES:
        stream = json.dumps(valid_first) + "\n---\n" + json.dumps(doc)
        rc, out, err = run("apply", "-f", "-", stdin=stream)
        expected_field = field.replace(".0.", "[0].").replace(".0", "[0]")
        if rc != 1 or out or expected_field not in err or "error with" not in err:
            failures.append((kind, field, rc, err.strip()[:300]))
    assert not failures, "\n".join(map(str, failures[:20])) + f"\n... {len(failures)} of {len(CASES)} failed"
    assert strip_revision(snapshot(etcd.endpoint)) == before


@pytest.mark.parametrize("kind,doc,field", list(itertools.islice(CASES, 0, len(CASES), 40)))
def test_a_sample_through_the_real_console_script(etcd_env: dict[str, str], kind: str, doc: dict[str, Any],
                                                  field: str) -> None:
    r = subprocess.run(["calicoctl", "create", "-f", "-"], input=json.dumps(doc), env=etcd_env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("failed to execute command: ")
