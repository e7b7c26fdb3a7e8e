"""Calico network policy on a real kernel: a matrix of policy shapes, TCP, UDP and ICMP asserted.

One shared two-node cluster (tests/cluster.py: namespaces only, real etcd, Felix on
each node, a VXLAN pool, pods made by the CNI plugin), module-scoped to keep CI lean.
Pods: ``web`` (node1, default, app=web) and ``db`` (node2, prod, app=db) run a tiny
asyncio server on TCP 80, 8080, 9090 and UDP 5353 (named ports ``http`` = TCP 8080,
``dns`` = UDP 5353); clients ``cl`` (node1, default, role=client), ``other`` (node2,
default, role=other) and ``pc`` (node2, prod, role=client); node2's host serves TCP
7000, 7001 and 22. Each shape applies its resources, waits (with a deadline) until every
probe gives the expected answer, deletes them and waits until everything is open again,
so no shape can pass on the one before it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import hostendpoints
from libcalico import api
from tests.cluster import SEED_NODES, Cluster, running, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

POOL = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
        "spec": {"cidr": "10.244.0.0/16", "blockSize": 26, "vxlanMode": "Always", "natOutgoing": True,
                 "nodeSelector": "all()"}}
PROD: dict[str, Any] = {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "kns.prod"},
        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                 "labelsToApply": {"pcns.projectcalico.org/name": "prod", "pcns.team": "data"}}}
NODE2_IP = SEED_NODES[1][1]

SERVER = r"""
import asyncio, sys
async def main():
    loop = asyncio.get_running_loop()
    async def serve(r, w):
        w.write(b"ok"); await w.drain(); w.close()
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, t): self.t = t
        def datagram_received(self, data, addr): self.t.sendto(data, addr)
    for p in sys.argv[1].split(","):
        await asyncio.start_server(serve, "0.0.0.0", int(p))
    for p in sys.argv[2].split(",") if sys.argv[2] else []:
        await loop.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", int(p)))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

PROBE = r"""
import json, socket, subprocess, sys, concurrent.futures as cf
def one(t):
    proto, ip, port = t
    try:
        if proto == "tcp":
            with socket.create_connection((ip, port), timeout=1.0) as s:
                s.settimeout(1.0)
                return s.recv(2) == b"ok"
        if proto == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(1.0); s.sendto(b"hi", (ip, port))
                return s.recvfrom(16)[0] == b"hi"
        return subprocess.run(["ping", "-c", "1", "-W", "1", ip], capture_output=True).returncode == 0
    except OSError:
        return False
with cf.ThreadPoolExecutor(16) as ex:
    print(json.dumps(list(ex.map(one, json.loads(sys.argv[1])))))
"""

Probe = tuple[str, str, str, int]   # (client, target, protocol, port)


class PolicyLab:
    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.pods: dict[str, tuple[str, str]] = {}   # name -> (netns, ip)
        self.servers: list[subprocess.Popen[str]] = []

    def pod(self, node: str, name: str, namespace: str, labels: dict[str, str], server: bool = False) -> None:
        netns, ip = self.c.add_pod(node, name, namespace=namespace)
        self.pods[name] = (netns, ip)
        ports = [{"name": "http", "protocol": "TCP", "port": 8080}, {"name": "dns", "protocol": "UDP", "port": 5353}]
        self.label(name, namespace, labels, ports=ports if server else None)
        if server:
            self.serve(netns, "80,8080,9090", "5353")

    def serve(self, netns: str, tcp: str, udp: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", SERVER, tcp, udp],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.servers.append(proc)

    def wep(self, name: str, namespace: str) -> dict[str, Any]:
        weps = json.loads(self.c.calicoctl("get", "workloadendpoints", "-n", namespace, "-o", "json"))
        items = weps.get("items", [weps]) if isinstance(weps, dict) else weps
        return next(w for w in items if w["spec"].get("pod") == name)

    def label(self, name: str, namespace: str, labels: dict[str, str],
              ports: list[dict[str, Any]] | None = None) -> None:
        """Relabel a pod as the Kubernetes backend would (its WorkloadEndpoint's labels)."""
        wep = self.wep(name, namespace)
        have: dict[str, Any] = wep["metadata"].get("labels", {})
        fixed = ("projectcalico.org/namespace", "projectcalico.org/orchestrator")
        want: dict[str, Any] = {k: None for k in have if k not in fixed}      # a merge patch: null removes
        want.update(labels)
        patch: dict[str, Any] = {"metadata": {"labels": want}}
        if ports is not None:
            patch["spec"] = {"ports": ports}
        self.c.calicoctl("patch", "workloadendpoint", wep["metadata"]["name"], "-n", namespace, "-p",
                         json.dumps(patch), "--type", "merge")

    def target(self, name: str) -> str:
        return NODE2_IP if name == "node2" else self.pods[name][1]

    def probe(self, probes: list[Probe]) -> list[bool]:
        by_client: dict[str, list[int]] = {}
        for i, (client, _, _, _) in enumerate(probes):
            by_client.setdefault(client, []).append(i)
        procs = {}
        for client, idxs in by_client.items():
            todo = [[probes[i][2], self.target(probes[i][1]), probes[i][3]] for i in idxs]
            procs[client] = subprocess.Popen(["ip", "netns", "exec", self.pods[client][0], "python3", "-c", PROBE,
                                              json.dumps(todo)], stdout=subprocess.PIPE, text=True)
        out = [False] * len(probes)
        for client, proc in procs.items():
            stdout, _ = proc.communicate(timeout=30)
            for i, ok in zip(by_client[client], json.loads(stdout)):
                out[i] = ok
        return out

    def expect(self, expected: dict[Probe, bool], what: str, timeout: float = 20.0) -> None:
        probes = list(expected)
        want = [expected[p] for p in probes]
        last: list[bool] = []

        def matches() -> bool:
            last[:] = self.probe(probes)
            return last == want
        try:
            wait_until(matches, what, timeout)
        except AssertionError:
            wrong = {f"{p[0]}->{p[1]} {p[2]}/{p[3]}": got for p, got, w in zip(probes, last, want) if got != w}
            raise AssertionError(f"{what}: these probes disagree (got): {wrong}") from None

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.c.calicoctl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def delete(self, docs: list[dict[str, Any]]) -> None:
        self.c.calicoctl("delete", "-f", "-", stdin=yaml.safe_dump_all(list(reversed(docs))))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyLab]:
    with running("pol", tmp_path_factory.mktemp("policy"), POOL, PROD, nodes=SEED_NODES[:2]) as c:
        pl = PolicyLab(c)
        try:
            pl.pod("node1", "web", "default", {"app": "web"}, server=True)
            pl.pod("node2", "db", "prod", {"app": "db"}, server=True)
            pl.pod("node1", "cl", "default", {"role": "client"})
            pl.pod("node2", "other", "default", {"role": "other"})
            pl.pod("node2", "pc", "prod", {"role": "client"})
            pl.serve(c.nodes["node2"].ns, "7000,7001,22", "")
            yield pl
        finally:
            for proc in pl.servers:
                proc.kill()
                proc.wait(10)


def gnp(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": name},
            "spec": spec}


def np(name: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def tier(name: str, order: float, action: str = "Deny") -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name},
            "spec": {"order": order, "defaultAction": action}}


ALLOW = {"action": "Allow"}
T, U, I = "tcp", "udp", "icmp"
CL_WEB = {("cl", "web", T, 80): True, ("cl", "web", U, 5353): True, ("cl", "web", I, 0): True}
OTHER_WEB = {("other", "web", T, 80): False, ("other", "web", U, 5353): False, ("other", "web", I, 0): False}

SHAPES: list[tuple[str, list[dict[str, Any]], dict[Probe, bool]]] = [
    ("deny-all", [gnp("deny-all", selector="all()", types=["Ingress", "Egress"])],
     {("cl", "web", T, 80): False, ("cl", "web", U, 5353): False, ("cl", "web", I, 0): False,
      ("pc", "db", T, 80): False, ("other", "db", I, 0): False}),
    ("allow by label", [np("web", selector="app == 'web'", ingress=[{**ALLOW, "source": {"selector": "role == 'client'"}}])],
     {**CL_WEB, **OTHER_WEB}),
    ("deny by namespace", [gnp("no-prod", selector="app == 'web'", ingress=[
        {"action": "Deny", "source": {"namespaceSelector": "projectcalico.org/name == 'prod'"}}, ALLOW])],
     {("pc", "web", T, 80): False, ("pc", "web", U, 5353): False, ("pc", "web", I, 0): False, **CL_WEB}),
    ("port range", [np("range", selector="app == 'web'", ingress=[{**ALLOW, "protocol": "TCP",
                                                                    "destination": {"ports": ["8000:8100"]}}])],
     {("cl", "web", T, 8080): True, ("cl", "web", T, 80): False, ("cl", "web", T, 9090): False,
      ("cl", "web", U, 5353): False, ("cl", "web", I, 0): False}),
    ("named TCP port", [np("named", selector="app == 'web'", ingress=[{**ALLOW, "protocol": "TCP",
                                                                       "destination": {"ports": ["http"]}}])],
     {("cl", "web", T, 8080): True, ("cl", "web", T, 80): False, ("cl", "web", U, 5353): False}),
    ("named UDP port", [np("dns", selector="app == 'web'", ingress=[{**ALLOW, "protocol": "UDP",
                                                                     "destination": {"ports": ["dns"]}}])],
     {("cl", "web", U, 5353): True, ("cl", "web", T, 80): False, ("cl", "web", I, 0): False}),
    ("egress to nets", [gnp("to-db", selector="role == 'client'", types=["Egress"], egress=[
        {**ALLOW, "destination": {"nets": ["{db}/32"]}}])],
     {("cl", "db", T, 80): True, ("cl", "db", U, 5353): True, ("cl", "db", I, 0): True, ("cl", "web", T, 80): False,
      ("cl", "web", I, 0): False, ("other", "web", T, 80): True}),
    ("egress notNets", [gnp("not-web", selector="role == 'client'", types=["Egress"], egress=[
        {**ALLOW, "destination": {"notNets": ["{web}/32"]}}])],
     {("cl", "web", T, 80): False, ("cl", "web", U, 5353): False, ("cl", "db", T, 80): True,
      ("cl", "db", I, 0): True}),
    ("ICMP only", [np("icmp", selector="app == 'web'", ingress=[{**ALLOW, "protocol": "ICMP"}])],
     {("cl", "web", I, 0): True, ("cl", "web", T, 80): False, ("cl", "web", U, 5353): False}),
    ("ICMP echo type", [np("echo", selector="app == 'web'", ingress=[{**ALLOW, "protocol": "ICMP",
                                                                      "icmp": {"type": 8}}])],
     {("cl", "web", I, 0): True, ("cl", "web", T, 80): False}),
    ("notICMP type", [np("noecho", selector="app == 'web'", ingress=[{**ALLOW, "protocol": "ICMP",
                                                                      "notICMP": {"type": 8}}])],
     {("cl", "web", I, 0): False, ("cl", "web", T, 80): False}),
    ("notProtocol", [np("not-udp", selector="app == 'web'", ingress=[{**ALLOW, "notProtocol": "UDP"}])],
     {("cl", "web", T, 80): True, ("cl", "web", I, 0): True, ("cl", "web", U, 5353): False}),
    ("notPorts", [np("not-80", selector="app == 'web'", ingress=[{**ALLOW, "protocol": "TCP",
                                                                  "destination": {"notPorts": [80]}}])],
     {("cl", "web", T, 8080): True, ("cl", "web", T, 9090): True, ("cl", "web", T, 80): False}),
    ("order: deny first", [gnp("deny-cl", order=10, selector="app == 'web'", ingress=[
        {"action": "Deny", "source": {"selector": "role == 'client'"}}]),
        gnp("allow-all", order=20, selector="app == 'web'", ingress=[ALLOW])],
     {("cl", "web", T, 80): False, ("cl", "web", I, 0): False, ("other", "web", T, 80): True,
      ("other", "web", U, 5353): True}),
    ("order: allow first", [gnp("allow-all", order=10, selector="app == 'web'", ingress=[ALLOW]),
                            gnp("deny-cl", order=20, selector="app == 'web'", ingress=[
                                {"action": "Deny", "source": {"selector": "role == 'client'"}}])],
     {("cl", "web", T, 80): True, ("other", "web", T, 80): True}),
    ("equal order: by name", [gnp("b-deny", order=100, selector="app == 'web'", ingress=[{"action": "Deny"}]),
                              gnp("a-allow", order=100, selector="app == 'web'", ingress=[ALLOW])],
     {("cl", "web", T, 80): True, ("other", "web", I, 0): True}),
    ("Pass to profile", [gnp("pass-cl", selector="app == 'web'", ingress=[
        {"action": "Pass", "source": {"selector": "role == 'client'"}}])],
     {("cl", "web", T, 80): True, ("cl", "web", I, 0): True, ("other", "web", T, 80): False}),
    ("tiers: security before default", [
        tier("security", 100, "Pass"),
        gnp("security.block-other", tier="security", selector="app == 'web'", ingress=[
            {"action": "Deny", "source": {"selector": "role == 'other'"}}, {"action": "Pass"}]),
        np("allow-web", selector="app == 'web'", ingress=[ALLOW])],
     {("cl", "web", T, 80): True, ("other", "web", T, 80): False, ("other", "web", I, 0): False}),
    ("tier defaultAction Pass", [tier("audit", 50, "Pass"),
                                 gnp("audit.nothing", tier="audit", selector="app == 'web'", ingress=[
                                     {**ALLOW, "source": {"selector": "role == 'nobody'"}}])],
     {("cl", "web", T, 80): True, ("other", "web", T, 80): True}),
    ("tier defaultAction Deny", [tier("audit", 50, "Deny"),
                                 gnp("audit.nothing", tier="audit", selector="app == 'web'", ingress=[
                                     {**ALLOW, "source": {"selector": "role == 'nobody'"}}])],
     {("cl", "web", T, 80): False, ("other", "web", T, 80): False}),
    ("Log then allow", [gnp("log-web", selector="app == 'web'", ingress=[
        {"action": "Log"}, {**ALLOW, "source": {"selector": "role == 'client'"}}])],
     {("cl", "web", T, 80): True, ("other", "web", T, 80): False}),
    ("service account", [np("sa", selector="app == 'web'", ingress=[
        {**ALLOW, "source": {"serviceAccounts": {"names": ["robot"]}}}])],
     {("cl", "web", T, 80): True, ("other", "web", T, 80): False}),
    ("notSelector", [np("not-other", selector="app == 'web'", ingress=[
        {**ALLOW, "source": {"selector": "has(role)", "notSelector": "role == 'other'"}}])],
     {("cl", "web", T, 80): True, ("other", "web", T, 80): False}),
    ("egress deny one port", [gnp("no-8080", selector="role == 'client'", types=["Egress"], egress=[
        {"action": "Deny", "protocol": "TCP", "destination": {"ports": [8080]}}, ALLOW])],
     {("cl", "web", T, 8080): False, ("cl", "web", T, 80): True, ("cl", "web", U, 5353): True}),
    ("global network set", [
        {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkSet",
         "metadata": {"name": "dbnet", "labels": {"role": "dbnet"}}, "spec": {"nets": ["{db}/32"]}},
        gnp("to-dbnet", selector="role == 'client'", types=["Egress"], egress=[
            {**ALLOW, "destination": {"selector": "role == 'dbnet'"}}])],
     {("cl", "db", T, 80): True, ("cl", "db", I, 0): True, ("cl", "web", T, 80): False}),
    ("namespaced policy", [np("same-ns", ns="prod", selector="all()", ingress=[
        {**ALLOW, "source": {"selector": "all()"}}])],
     {("pc", "db", T, 80): True, ("pc", "db", U, 5353): True, ("cl", "db", T, 80): False,
      ("cl", "db", I, 0): False}),
    ("host endpoint", [
        {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
         "metadata": {"name": "node2-ens192", "labels": {"host": "node2"}},
         "spec": {"node": "node2", "interfaceName": "ens192", "expectedIPs": [NODE2_IP]}},
        gnp("host-7000", selector="host == 'node2'", ingress=[{**ALLOW, "protocol": "TCP",
                                                               "destination": {"ports": [7000]}}])],
     {("cl", "node2", T, 7000): True, ("cl", "node2", T, 7001): False, ("cl", "node2", T, 22): True,
      ("cl", "db", T, 80): True}),
]


def _fill(doc: Any, lab: PolicyLab) -> Any:
    text = json.dumps(doc)
    for name, (_, ip) in lab.pods.items():
        text = text.replace("{" + name + "}", ip)
    return json.loads(text)


@pytest.mark.parametrize("name, docs, expected", SHAPES, ids=[s[0] for s in SHAPES])
def test_policy_shape_enforces_tcp_udp_and_icmp_as_calico(lab: PolicyLab, name: str, docs: list[dict[str, Any]],
                                                          expected: dict[Probe, bool]) -> None:
    docs = [_fill(d, lab) for d in docs]
    if name == "service account":
        lab.label("cl", "default", {"role": "client", "projectcalico.org/serviceaccount": "robot"})
    lab.apply(docs)
    try:
        lab.expect(expected, f"{name}: enforced")
        if name == "Log then allow":
            chain = lab.c.ns.run(lab.c.nodes["node1"].ns, "nft", "list", "chain", "ip", "calico",
                                 "filter-cali-pi-default/log-web").stdout
            log_rule = next(line for line in chain.splitlines() if "log prefix" in line)
            assert "packets 0 " not in log_rule, chain   # the Log rule counted the probes
    finally:
        lab.delete(docs)
        if name == "service account":
            lab.label("cl", "default", {"role": "client"})
    lab.expect({p: True for p in expected}, f"{name}: open again after the delete")


def test_a_relabel_flips_reachability_without_a_restart(lab: PolicyLab) -> None:
    docs = [gnp("web", selector="app == 'web'", order=10, ingress=[
                {**ALLOW, "source": {"selector": "role == 'client'"}}]),
            gnp("no-data", selector="app == 'web'", order=1, ingress=[
                {"action": "Deny", "source": {"namespaceSelector": "team == 'data'"}}])]
    lab.apply(docs)
    try:
        lab.expect({("other", "web", T, 80): False, ("cl", "web", T, 80): True, ("pc", "web", T, 80): False},
                   "before the relabel")
        lab.label("other", "default", {"role": "client"})                 # the pod's label
        prod = {**PROD, "spec": {**PROD["spec"], "labelsToApply": {"pcns.projectcalico.org/name": "prod",
                                                                   "pcns.team": "apps"}}}
        lab.c.calicoctl("apply", "-f", "-", stdin=json.dumps(prod))         # the namespace's label
        lab.expect({("other", "web", T, 80): True, ("pc", "web", T, 80): True}, "after the relabels", timeout=10)
    finally:
        lab.label("other", "default", {"role": "other"})
        lab.c.calicoctl("apply", "-f", "-", stdin=json.dumps(PROD))
        lab.delete(docs)


def test_ipv6_rules_and_sets_are_programmed_in_the_ip6_table_beside_ipv4s(lab: PolicyLab) -> None:
    docs = [gnp("v6", selector="app == 'web'", ingress=[
        {**ALLOW, "ipVersion": 6, "protocol": "ICMPv6", "source": {"nets": ["fd00::/8"]}},
        {**ALLOW, "source": {"selector": "role == 'client'"}}])]
    node1 = lab.c.nodes["node1"].ns
    iface = lab.wep("web", "default")["spec"]["interfaceName"]
    lab.apply(docs)
    try:
        lab.expect({("cl", "web", T, 80): True, ("other", "web", T, 80): False}, "IPv4 enforced as before")

        def chain(family: str, name: str) -> str:
            return lab.c.ns.run(node1, "nft", "list", "chain", family, "calico", name, check=False).stdout
        wait_until(lambda: "fd00::/8" in chain("ip6", "filter-cali-pi-default/v6"), "the IPv6 rule")
        v6, v4 = chain("ip6", "filter-cali-pi-default/v6"), chain("ip", "filter-cali-pi-default/v6")
        assert "ip6 saddr fd00::/8" in v6 and "@cali60s-" in v6, v6
        assert "fd00" not in v4 and "@cali40s-" in v4, v4
        assert "filter-cali-pi-default/v6" in chain("ip6", f"filter-cali-tw-{iface}")
        assert "type ipv6_addr" in lab.c.ns.run(node1, "nft", "list", "sets", "ip6").stdout
    finally:
        lab.delete(docs)


def test_an_auto_host_endpoint_is_enforced_on_all_host_interfaces_by_a_node_label_policy(lab: PolicyLab) -> None:
    """node2's automatic host endpoint, as calico-kube-controllers writes it (interfaceName "*", the node's
    labels, projectcalico-default-allow): open with no policy; a policy by node label allows 7000 and
    denies 7001 to the host, keeps the failsafe port 22, and leaves forwarded pod traffic alone."""
    lab.c.calicoctl("patch", "node", "node2", "-p", json.dumps({"metadata": {"labels": {"edge": "true"}}}),
                    "--type", "merge")
    node = api.Node.model_validate(json.loads(lab.c.calicoctl("get", "node", "node2", "-o", "json")))
    [hep] = hostendpoints.wanted_host_endpoints(node, default=True, templates=[])
    assert hep.spec.interface_name == "*" and hep.metadata.labels["edge"] == "true"
    policy = gnp("edge-hosts", selector="edge == 'true'", types=["Ingress"], ingress=[
        {**ALLOW, "protocol": "TCP", "destination": {"ports": [7000]}},
        {"action": "Deny", "protocol": "TCP", "destination": {"ports": [7001]}}])
    lab.apply([hep.to_wire()])
    try:
        lab.expect({("cl", "node2", T, 7000): True, ("cl", "node2", T, 7001): True, ("cl", "db", T, 80): True},
                   "the default-allow profile with no policy")
        wait_until(lambda: "filter-cali-fh-any-interface-at-all" in lab.c.ns.run(
            lab.c.nodes["node2"].ns, "nft", "list", "chain", "ip", "calico", "filter-cali-from-host-endpoint").stdout,
            "the all-interfaces dispatch")
        lab.apply([policy])
        lab.expect({("cl", "node2", T, 7000): True, ("cl", "node2", T, 7001): False, ("cl", "node2", T, 22): True,
                    ("cl", "db", T, 80): True}, "the policy on every host interface")
    finally:
        lab.delete([hep.to_wire(), policy])
        lab.c.calicoctl("patch", "node", "node2", "-p", json.dumps({"metadata": {"labels": {"edge": None}}}),
                        "--type", "merge")
    lab.expect({("cl", "node2", T, 7001): True}, "open again after the delete")


def test_felix_reports_its_policy_metrics(lab: PolicyLab) -> None:
    docs = [np("web", selector="app == 'web'", ingress=[{**ALLOW, "source": {"selector": "role == 'client'"}}])]
    lab.apply(docs)
    try:
        lab.expect({("other", "web", T, 80): False}, "the policy")
        wait_until(lambda: "felix_active_local_policies 1" in lab.c.metrics("node1").splitlines(),
                   "the policy's metric")
        text = lab.c.metrics("node1")
        assert "felix_active_local_selectors 1" in text.splitlines()
        assert "felix_int_dataplane_failures 0" in text.splitlines()
        assert "felix_int_dataplane_failures_total" not in text
    finally:
        lab.delete(docs)


def test_the_table_is_felixs_and_a_restarted_felix_repairs_it(lab: PolicyLab, tmp_path: Path) -> None:
    node1 = lab.c.nodes["node1"].ns
    lab.c.ns.run(node1, "nft", "add", "table", "ip", "someone-else")
    lab.c.ns.run(node1, "nft", "add", "chain", "ip", "calico", "filter-stray")
    lab.c.stop_felix("node1")
    lab.c.ns.run(node1, "nft", "flush", "chain", "ip", "calico", "filter-cali-FORWARD")
    lab.c.start_felix("node1")
    wait_until(lambda: "filter-stray" not in lab.c.ns.run(node1, "nft", "list", "table", "ip", "calico").stdout,
               "the stray chain to go")
    assert "someone-else" in lab.c.ns.run(node1, "nft", "list", "tables").stdout
    assert "jump filter-cali-from-wl-dispatch" in lab.c.ns.run(node1, "nft", "list", "chain", "ip", "calico",
                                                               "filter-cali-FORWARD").stdout
    lab.expect({("cl", "web", T, 80): True, ("other", "web", I, 0): True}, "traffic after the repair")
