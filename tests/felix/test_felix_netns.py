"""Felix on a real kernel: three nodes, pods made by the CNI plugin, VXLAN, natOutgoing, resync.

See tests/cluster.py for the topology (namespaces only, nothing touches the host).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, block_of, capture, running, wait_until
from tests.netns import Namespaces, kernel_supports

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

POOL = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
        "spec": {"cidr": "10.244.0.0/16", "blockSize": 26, "vxlanMode": "Always", "natOutgoing": True,
                 "nodeSelector": "all()"}}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running("fx", tmp_path, POOL) as c:
        yield c


def test_pods_on_different_nodes_talk_over_vxlan_and_the_underlay_sees_udp_4789(cluster: Cluster) -> None:
    pa, ip_a = cluster.add_pod("node1", "pod-a")
    pb, ip_b = cluster.add_pod("node2", "pod-b")
    # node1 routes pod-b's block through its VTEP; node2 holds a blackhole for its own block.
    wait_until(lambda: re.search(rf"^{re.escape(block_of(ip_b))} via \S+ dev vxlan\.calico proto 80 onlink",
                                 cluster.routes("node1"), re.M) is not None, "node1's route to node2's block")
    assert re.search(rf"^blackhole {re.escape(block_of(ip_b))} proto 80", cluster.routes("node2"), re.M)
    wait_until(lambda: re.search(rf"^{re.escape(block_of(ip_a))} via \S+ dev vxlan\.calico",
                                 cluster.routes("node2"), re.M) is not None, "node2's route back")
    link = json.loads(cluster.ns.run(cluster.nodes["node1"].ns, "ip", "-d", "-j", "link", "show",
                                     "vxlan.calico").stdout)[0]
    assert link["linkinfo"]["info_data"]["id"] == 4096 and link["linkinfo"]["info_data"]["port"] == 4789

    tap = capture(cluster.ns, cluster.under, "br0", "udp port 4789", count=1)
    ping = cluster.ns.run(pa, "ping", "-c", "3", "-W", "3", ip_b, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    out, _ = tap.communicate(timeout=30)
    assert "192.168.3.111" in out and "192.168.3.112.4789" in out, out  # outer: node to node, VXLAN port

    # Same node: no encapsulation at all.
    pc, ip_c = cluster.add_pod("node1", "pod-c")
    wait_until(lambda: f"{ip_c} dev " in cluster.routes("node1"), "pod-c's route")
    assert cluster.ns.run(pa, "ping", "-c", "1", "-W", "3", ip_c, check=False).returncode == 0


def test_nat_outgoing_hides_the_pod_behind_its_node_and_can_be_switched_off(cluster: Cluster) -> None:
    ext = cluster.ns.add("ext")
    cluster.attach(ext, "192.168.3.200")
    pa, ip_a = cluster.add_pod("node1", "pod-a")
    wait_until(lambda: "masquerade" in _nat_chain(cluster), "the natOutgoing rule")
    wait_until(lambda: f"{ip_a} dev " in cluster.routes("node1"), "pod-a's route (and so its endpoint chains)")
    tap = capture(cluster.ns, ext, "ens192", "icmp", count=1)
    assert cluster.ns.run(pa, "ping", "-c", "1", "-W", "3", "192.168.3.200", check=False).returncode == 0
    out, _ = tap.communicate(timeout=30)
    assert "192.168.3.111 > 192.168.3.200" in out, out

    cluster.calicoctl("patch", "ippool", "default-ipv4-ippool", "-p", '{"spec": {"natOutgoing": false}}')
    wait_until(lambda: "masquerade" not in _nat_chain(cluster), "the natOutgoing rule to go")
    tap = capture(cluster.ns, ext, "ens192", "icmp", count=1)
    cluster.ns.run(pa, "ping", "-c", "1", "-W", "2", "192.168.3.200", check=False)  # no way back: may fail
    out, _ = tap.communicate(timeout=30)
    assert f"{ip_a} > 192.168.3.200" in out, out


def _nat_chain(cluster: Cluster) -> str:
    """natOutgoing lives in Felix's ``ip calico`` table, chain ``nat-cali-nat-outgoing``."""
    return cluster.ns.run(cluster.nodes["node1"].ns, "nft", "list", "chain", "ip", "calico", "nat-cali-nat-outgoing",
                          check=False).stdout


def test_routes_follow_pods_and_survive_a_felix_restart_without_stale_or_foreign_damage(cluster: Cluster) -> None:
    pa, ip_a = cluster.add_pod("node1", "pod-a")
    pb, ip_b = cluster.add_pod("node2", "pod-b")
    pd, ip_d = cluster.add_pod("node1", "pod-d")
    node1 = cluster.nodes["node1"].ns
    wait_until(lambda: block_of(ip_b) in cluster.routes("node1"), "route to node2's block")
    cluster.ns.run(node1, "ip", "route", "add", "10.99.0.0/24", "via", "192.168.3.1")  # someone else's route

    # Felix dies; the dataplane keeps working meanwhile; a pod goes while it is down.
    cluster.stop_felix("node1", kill=True)
    assert cluster.ns.run(pa, "ping", "-c", "2", "-W", "3", ip_b, check=False).returncode == 0
    cluster.cni("node1", "DEL", "pod-d", pd)
    cluster.ns.run(node1, "ip", "route", "add", "blackhole", "10.244.250.0/26", "proto", "80")  # stale, Felix's
    cluster.start_felix("node1")
    wait_until(lambda: "10.244.250.0/26" not in cluster.routes("node1"), "the stale Felix route to go")
    routes = cluster.routes("node1")
    assert "10.99.0.0/24 via 192.168.3.1" in routes  # foreign route untouched
    assert f"{ip_d} " not in routes
    assert cluster.ns.run(pa, "ping", "-c", "2", "-W", "3", ip_b, check=False).returncode == 0

    # Deleting a pod removes its route.
    cluster.cni("node1", "DEL", "pod-a", pa)
    wait_until(lambda: f"{ip_a} " not in cluster.routes("node1"), "pod-a's route to go")


def test_health_and_metrics(cluster: Cluster) -> None:
    cluster.add_pod("node1", "pod-a")
    assert cluster.health("node1", "readiness") == 204
    assert cluster.health("node1", "liveness") == 204
    assert cluster.health("node1", "nope") == 404

    def local_endpoints() -> bool:
        lines = cluster.metrics("node1").splitlines()  # Go's format: "1", not "1.0"
        return "felix_active_local_endpoints 1" in lines and "felix_cluster_num_hosts 3" in lines
    wait_until(local_endpoints, "felix_active_local_endpoints to count the pod")
    text = cluster.metrics("node1")
    assert "felix_resync_state 3" in text.splitlines()
    assert "felix_int_dataplane_apply_time_seconds_count" in text
    assert "felix_int_dataplane_failures 0" in text.splitlines()
    assert cluster.stop_felix("node1") == 0  # SIGTERM: a clean exit
    assert "shutting down" in (cluster.nodes["node1"].log or Path("/dev/null")).read_text()


def _set_pool(cluster: Cluster, **spec: Any) -> None:
    cluster.calicoctl("patch", "ippool", "default-ipv4-ippool", "-p", json.dumps({"spec": spec}))


@pytest.mark.skipif(kernel_supports("ipip"), reason="this kernel has ipip: the missing-module report cannot happen")
def test_ipip_on_a_kernel_without_the_module_is_reported_not_faked(cluster: Cluster) -> None:
    _set_pool(cluster, vxlanMode="Never", ipipMode="Always")
    wait_until(lambda: cluster.health("node1", "readiness") == 503, "Felix to report IPIP as impossible")
    body = cluster.ns.run(cluster.nodes["node1"].ns, "python3", "-c", (
        "import urllib.request\ntry: urllib.request.urlopen('http://127.0.0.1:9099/readiness')\n"
        "except urllib.error.HTTPError as e: print(e.read().decode())")).stdout
    assert "no ipip module" in body
    assert "no ipip module" in (cluster.nodes["node1"].log or Path("/dev/null")).read_text()
    assert cluster.health("node1", "liveness") == 204


@pytest.mark.kernel_vm("ipip")
def test_ipip_pods_talk_through_tunl0(cluster: Cluster) -> None:
    _set_pool(cluster, vxlanMode="Never", ipipMode="Always")
    pa, ip_a = cluster.add_pod("node1", "pod-a")
    pb, ip_b = cluster.add_pod("node2", "pod-b")
    wait_until(lambda: re.search(rf"^{re.escape(block_of(ip_b))} via 192.168.3.112 dev tunl0 proto 80 onlink",
                                 cluster.routes("node1"), re.M) is not None, "node1's IPIP route")
    # tunl0 is up and holds the node's IPIP tunnel address, allocated from the pool and recorded on the Node.
    node1 = cluster.nodes["node1"].ns
    wait_until(lambda: bool(json.loads(cluster.ns.run(node1, "ip", "-j", "addr", "show", "tunl0").stdout)[0]
                            ["addr_info"]), "tunl0's address")
    tunl = json.loads(cluster.ns.run(node1, "ip", "-j", "addr", "show", "tunl0").stdout)[0]
    assert "UP" in tunl["flags"]
    addr = tunl["addr_info"][0]["local"]
    assert ipaddress.ip_address(addr) in ipaddress.ip_network("10.244.0.0/16")
    node = json.loads(cluster.calicoctl("get", "node", "node1", "-o", "json"))
    assert node["spec"]["bgp"]["ipv4IPIPTunnelAddr"] == addr
    assert "vxlan.calico" not in cluster.ns.run(node1, "ip", "link").stdout  # the VXLAN device went
    # On the wire: IP protocol 4, outer node addresses, inner pod addresses.
    tap = capture(cluster.ns, cluster.under, "br0", "ip proto 4", count=1)
    assert cluster.ns.run(pa, "ping", "-c", "2", "-W", "3", ip_b, check=False).returncode == 0
    out, _ = tap.communicate(timeout=30)
    assert re.search(rf"192\.168\.3\.111 > 192\.168\.3\.112: (IP )?{re.escape(ip_a)} > {re.escape(ip_b)}: "
                     "ICMP echo request", out), out


def test_changing_the_encapsulation_at_run_time_reprograms_without_restart(cluster: Cluster) -> None:
    pa, ip_a = cluster.add_pod("node1", "pod-a")
    pb, ip_b = cluster.add_pod("node2", "pod-b")
    wait_until(lambda: "vxlan.calico" in cluster.routes("node1"), "VXLAN routes")
    _set_pool(cluster, vxlanMode="CrossSubnet")  # all nodes share 192.168.3.0/24: direct routes
    wait_until(lambda: re.search(rf"^{re.escape(block_of(ip_b))} via 192.168.3.112 dev ens192 proto 80",
                                 cluster.routes("node1"), re.M) is not None, "a direct route in the subnet")
    tap = capture(cluster.ns, cluster.under, "br0", f"icmp and host {ip_b}", count=1)
    assert cluster.ns.run(pa, "ping", "-c", "2", "-W", "3", ip_b, check=False).returncode == 0
    out, _ = tap.communicate(timeout=30)
    assert f"{ip_a} > {ip_b}" in out, out  # plain pod addresses on the wire: no encapsulation
    _set_pool(cluster, vxlanMode="Never")
    wait_until(lambda: cluster.ns.run(cluster.nodes["node1"].ns, "ip", "link", "show", "vxlan.calico",
                                      check=False).returncode != 0, "the VXLAN device to go")
    assert block_of(ip_b) not in cluster.routes("node1")  # unencapsulated: BIRD's routes, not Felix's


@pytest.mark.parametrize("encap", ["vxlan", pytest.param("ipip", marks=pytest.mark.kernel_vm("ipip"))])
def test_cross_subnet_encapsulates_only_between_subnets(tmp_path: Path, encap: str) -> None:
    """The seed's CrossSubnet story: node1 and node2 share 192.168.3.0/24, node3 sits behind a router
    on 192.168.4.0/24. Pod traffic inside the subnet is plain; across the router it is VXLAN (UDP 4789
    between the nodes) or IPIP (IP protocol 4 between the nodes, through tunl0)."""
    with Namespaces("xs") as ns:
        c = Cluster(ns, tmp_path)
        try:
            c.start()
            c.add_subnet("br1", "192.168.4.1/24")
            modes = {"vxlanMode": "CrossSubnet"} if encap == "vxlan" else {"vxlanMode": "Never",
                                                                           "ipipMode": "CrossSubnet"}
            c.calicoctl("apply", "-f", "-", stdin=json.dumps({**POOL, "spec": {**POOL["spec"], **modes}}))
            c.add_node("node1", "192.168.3.111")
            c.add_node("node2", "192.168.3.112")
            c.add_node("node3", "192.168.4.113", bridge="br1", gateway="192.168.4.1")
            for name in c.nodes:
                c.start_felix(name)
            pa, ip_a = c.add_pod("node1", "pod-a")
            _, ip_b = c.add_pod("node2", "pod-b")
            _, ip_c = c.add_pod("node3", "pod-c")
            wait_until(lambda: re.search(rf"^{re.escape(block_of(ip_b))} via 192.168.3.112 dev ens192 proto 80",
                                         c.routes("node1"), re.M) is not None, "the in-subnet direct route")
            across = (rf"^{re.escape(block_of(ip_c))} via \S+ dev vxlan\.calico proto 80 onlink" if encap == "vxlan"
                      else rf"^{re.escape(block_of(ip_c))} via 192\.168\.4\.113 dev tunl0 proto 80 onlink")
            wait_until(lambda: re.search(across, c.routes("node1"), re.M) is not None, "the cross-subnet route")
            wait_until(lambda: block_of(ip_a) in c.routes("node3"), "node3's route back")

            plain = capture(ns, c.under, "br0", f"icmp and host {ip_b}")
            assert ns.run(pa, "ping", "-c", "2", "-W", "3", ip_b, check=False).returncode == 0
            out, _ = plain.communicate(timeout=30)
            assert f"{ip_a} > {ip_b}" in out, out

            tunnel = capture(ns, c.under, "br0", "udp port 4789" if encap == "vxlan" else "ip proto 4")
            assert ns.run(pa, "ping", "-c", "2", "-W", "3", ip_c, check=False).returncode == 0
            out, _ = tunnel.communicate(timeout=30)
            if encap == "vxlan":
                assert "192.168.3.111" in out and "192.168.4.113.4789" in out, out
            else:  # outer node addresses, inner pod addresses, one packet
                assert re.search(rf"192\.168\.3\.111 > 192\.168\.4\.113: (IP )?{re.escape(ip_a)} > "
                                 rf"{re.escape(ip_c)}: ICMP echo request", out), out
        finally:
            c.stop()
