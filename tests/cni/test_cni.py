"""The calico and calico-ipam CNI plugins on a real kernel, in network namespaces.

A node is a namespace with its own etcd on its loopback and an underlay NIC
(``ens192``) into another test namespace, which gives it the default route that
proxy ARP for 169.254.1.1 needs. Pods are namespaces; the plugins run inside
the node, as a runtime on that node would run them. Nothing reaches the host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from libcalico.names import veth_name_for_workload
from tests.etcd_server import EtcdServer
from tests.netns import Namespaces

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

BIN = os.path.dirname(shutil.which("calico") or "/usr/local/bin/calico")


@dataclass
class Node:
    ns: Namespaces
    name: str
    etcd: EtcdServer

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "DATASTORE_", "CNI_", "KUBE"))}
        env.update({"ETCD_ENDPOINTS": self.etcd.endpoint, "DATASTORE_TYPE": "etcdv3", "CNI_PATH": BIN})
        env.update(extra)
        return env

    def calicoctl(self, *args: str) -> str:
        return self.ns.run(self.name, "calicoctl", *args, env=self.env()).stdout

    def cni(self, plugin: str, command: str, pod: str, netconf: dict[str, Any] | str,
            netns: str = "", container: str = "") -> tuple[int, dict[str, Any] | None]:
        env = self.env(CNI_COMMAND=command, CNI_CONTAINERID=container or f"c-{pod}", CNI_IFNAME="eth0",
                       CNI_NETNS=f"/var/run/netns/{netns}" if netns else "",
                       CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}")
        stdin = netconf if isinstance(netconf, str) else json.dumps(netconf)
        r = self.ns.run(self.name, plugin, env=env, stdin=stdin, check=False, timeout=120)
        return r.returncode, json.loads(r.stdout) if r.stdout.strip() else None


def netconf(**overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico",
                            "nodename": "worker1", "mtu": 1440, "log_level": "warning",
                            "ipam": {"type": "calico-ipam", "assign_ipv4": "true"}, "policy": {"type": "k8s"}}
    conf.update(overrides)
    return conf


@pytest.fixture
def node() -> Iterator[Node]:
    with Namespaces("cni") as ns:
        n = ns.add("node")
        under = ns.add("under")
        ns.link(n, "ens192", "192.168.3.111/24", under, "sw0", "192.168.3.1/24")
        ns.run(n, "ip", "route", "add", "default", "via", "192.168.3.1")
        etcd = EtcdServer(netns=n)
        try:
            etcd.start()
            node = Node(ns, n, etcd)
            pool = ("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: default-ipv4-ippool}\n"
                    "spec: {cidr: 10.244.0.0/16, blockSize: 26, natOutgoing: true}\n")
            ns.run(n, "calicoctl", "apply", "-f", "-", env=node.env(), stdin=pool)
            yield node
        finally:
            etcd.cleanup()


def add_pod(node: Node, pod: str) -> tuple[str, dict[str, Any]]:
    netns = node.ns.add(pod)
    rc, result = node.cni("calico", "ADD", pod, netconf(), netns)
    assert rc == 0 and result is not None, result
    return netns, result


def test_two_pods_on_one_node_get_wired_and_reach_each_other(node: Node) -> None:
    ns1, r1 = add_pod(node, "web-0")
    ns2, r2 = add_pod(node, "web-1")
    ip1, ip2 = (r["ips"][0]["address"].split("/")[0] for r in (r1, r2))
    assert r1["ips"][0]["address"].endswith("/32") and r1["ips"][0]["interface"] == 1
    host_if = veth_name_for_workload("default", "web-0")
    assert r1["interfaces"][0] == {"name": host_if, "mac": "ee:ee:ee:ee:ee:ee"}
    assert r1["interfaces"][1]["name"] == "eth0" and r1["interfaces"][1]["sandbox"] == f"/var/run/netns/{ns1}"

    # Host side as Calico leaves it: MAC, proxy ARP, the /32 route; container side: /32 and 169.254.1.1.
    link = node.ns.run(node.name, "ip", "-j", "link", "show", host_if).stdout
    assert json.loads(link)[0]["address"] == "ee:ee:ee:ee:ee:ee" and json.loads(link)[0]["mtu"] == 1440
    assert node.ns.run(node.name, "cat", f"/proc/sys/net/ipv4/conf/{host_if}/proxy_arp").stdout.strip() == "1"
    assert re.search(rf"^{re.escape(ip1)} dev {host_if} (proto \S+ )?scope link",
                     node.ns.run(node.name, "ip", "route").stdout, re.M)
    routes = node.ns.run(ns1, "ip", "route").stdout
    assert "default via 169.254.1.1 dev eth0" in routes and "169.254.1.1 dev eth0" in routes
    assert f"inet {ip1}/32" in node.ns.run(ns1, "ip", "addr", "show", "eth0").stdout

    ping = node.ns.run(ns1, "ping", "-c", "2", "-W", "3", ip2, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    weps = node.calicoctl("get", "wep").splitlines()
    assert weps[0].split() == ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]  # the seed's `get wep` view
    assert weps[1].split() == ["web-0", "worker1", f"{ip1}/32", host_if]
    assert f"IP {ip2} is in use" in node.calicoctl("ipam", "show", "--ip", ip2)


def test_repeated_add_answers_the_same_and_del_removes_everything_idempotently(node: Node) -> None:
    netns, first = add_pod(node, "db-0")
    rc, again = node.cni("calico", "ADD", "db-0", netconf(), netns)
    assert rc == 0 and again == first
    ip = first["ips"][0]["address"].split("/")[0]
    rc, out = node.cni("calico", "CHECK", "db-0", netconf(prevResult=first), netns)
    assert rc == 0, out

    rc, out = node.cni("calico", "DEL", "db-0", netconf(), netns)
    assert rc == 0 and out is None
    host_if = veth_name_for_workload("default", "db-0")
    assert node.ns.run(node.name, "ip", "link", "show", host_if, check=False).returncode != 0
    assert node.ns.run(netns, "ip", "link", "show", "eth0", check=False).returncode != 0
    assert "db-0" not in node.calicoctl("get", "wep")
    assert node.calicoctl("ipam", "show", "--ip", ip) == f"{ip} is not assigned\n"
    rc, out = node.cni("calico", "DEL", "db-0", netconf(), netns)
    assert rc == 0, out
    rc, out = node.cni("calico", "DEL", "db-0", netconf(), "")  # the runtime already removed the netns
    assert rc == 0, out


@pytest.mark.parametrize("bad, code, words", [
    ("{not json", 6, "not JSON"),
    (json.dumps({"cniVersion": "1.0.0", "name": "x", "type": "calico"}), 7, "ipam section"),
    (json.dumps(netconf(cniVersion="9.9.9")), 1, "unsupported CNI version"),
    (json.dumps(netconf(mtu=20)), 7, "mtu"),
    (json.dumps(netconf(ipam={"type": "calico-ipam", "ipv4_pools": ["10.99.0.0/16"]})), 100,
     "the given pool (10.99.0.0/16) does not exist"),
    (json.dumps(netconf(ipam={"type": "no-such-ipam"})), 100, "failed to find plugin 'no-such-ipam'"),
])
def test_bad_input_is_a_cni_error_and_leaks_nothing(node: Node, bad: str, code: int, words: str) -> None:
    netns = node.ns.add("bad")
    rc, out = node.cni("calico", "ADD", "bad-0", bad, netns)
    assert rc == 1 and out is not None
    assert out["code"] == code and words in out["msg"], out
    assert set(out) == {"cniVersion", "code", "msg", "details"}
    assert len(node.ns.run(netns, "ip", "-o", "link").stdout.splitlines()) == 1  # only lo
    assert veth_name_for_workload("default", "bad-0") not in node.ns.run(node.name, "ip", "-o", "link").stdout
    assert "bad-0" not in node.calicoctl("get", "wep")
    assert "IPS IN USE" in (show := node.calicoctl("ipam", "show")) and "| 0 (0%)" in show


def test_eight_adds_racing_for_one_pod_wire_it_once_and_all_answer_the_same(node: Node) -> None:
    netns = node.ns.add("race")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: node.cni("calico", "ADD", "race-0", netconf(), netns), range(8)))
    assert [rc for rc, _ in results] == [0] * 8, results
    first = results[0][1]
    assert first is not None and all(r == first for _, r in results), results
    ip = first["ips"][0]["address"].split("/")[0]
    assert node.calicoctl("ipam", "show", "--ip", ip).startswith(f"IP {ip} is in use")
    show = node.calicoctl("ipam", "show")
    assert "| 1 (0%)" in show, show  # one address for the pod, however many ADDs raced
    host_if = veth_name_for_workload("default", "race-0")
    assert node.ns.run(node.name, "ip", "-o", "link").stdout.count(host_if) == 1
    assert f"inet {ip}/32" in node.ns.run(netns, "ip", "addr", "show", "eth0").stdout
    assert len(node.calicoctl("get", "wep").strip().splitlines()) == 2
    rc, out = node.cni("calico", "DEL", "race-0", netconf(), netns)
    assert rc == 0, out
    assert "| 0 (0%)" in node.calicoctl("ipam", "show")


def test_missing_environment_is_code_4(node: Node) -> None:
    env = node.env(CNI_COMMAND="ADD")
    r = node.ns.run(node.name, "calico", env=env, stdin=json.dumps(netconf()), check=False)
    assert r.returncode == 1 and json.loads(r.stdout)["code"] == 4
    assert "CNI_CONTAINERID" in json.loads(r.stdout)["msg"]


def test_version_and_the_ipam_plugin_alone(node: Node) -> None:
    r = node.ns.run(node.name, "calico-ipam", env=node.env(CNI_COMMAND="VERSION"), stdin="")
    assert json.loads(r.stdout) == {"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}
    conf = netconf(type="calico-ipam")
    rc, out = node.cni("calico-ipam", "ADD", "solo", conf, container="solo1")
    assert rc == 1 and out is not None and out["code"] == 4 and "CNI_NETNS" in out["msg"]
    netns = node.ns.add("solo")
    rc, out = node.cni("calico-ipam", "ADD", "solo", conf, netns, container="solo1")
    assert rc == 0 and out is not None and out["ips"][0]["address"].startswith("10.244.")
    rc, again = node.cni("calico-ipam", "ADD", "solo", conf, netns, container="solo1")
    assert again == out
    old = dict(conf, cniVersion="0.3.1")
    rc, older = node.cni("calico-ipam", "ADD", "solo2", old, netns, container="solo2")
    assert older is not None and older["ips"][0]["version"] == "4"
    for cid in ("solo1", "solo2"):
        assert node.cni("calico-ipam", "DEL", "solo", conf, container=cid)[0] == 0
    assert "| 0 (0%)" in node.calicoctl("ipam", "show")
