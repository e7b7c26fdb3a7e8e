"""Real BGP between node namespaces: confd renders, BIRD 1.6 peers, routes reach the kernel.

No encapsulation, so pods on different nodes reach each other only through
routes BIRD learned over BGP (``proto bird``). First the full node-to-node
mesh; then the seed's alternative: the mesh off, node1 a route reflector, the
others peering only with it, and routes still converging.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import SEED_NODES, Cluster, block_of, capture, running, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

POOL = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
        "spec": {"cidr": "10.244.0.0/16", "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never",
                 "natOutgoing": True}}
BGPCONFIG = {"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration", "metadata": {"name": "default"},
             "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": True, "logSeverityScreen": "Info"}}


def _now_of_day() -> int:
    """Local time of day in seconds, the clock BIRD's "since" column shows."""
    now = time.localtime()
    return now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec


@pytest.fixture
def bgp_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running("bgp", tmp_path, POOL, BGPCONFIG, bgp=True) as c:
        yield c


def test_full_mesh_establishes_and_bird_routes_carry_pod_traffic(bgp_cluster: Cluster) -> None:
    c = bgp_cluster
    for name in c.nodes:
        wait_until(lambda n=name: len(c.established(n)) == 2, f"{name}'s two mesh sessions", 60)
    assert c.established("node1") == ["Mesh_192_168_3_112", "Mesh_192_168_3_113"]

    # calicoctl node status, inside node1, in the seed's layout.
    env = c.env(CALICO_BIRD_SOCKET=c.nodes["node1"].bird_socket)
    out = c.ns.run(c.nodes["node1"].ns, "calicoctl", "node", "status", env=env).stdout
    lines = out.splitlines()
    rule = "+---------------+-------------------+-------+----------+-------------+"
    assert lines[:6] == ["Calico process is running.", "", "IPv4 BGP status", rule,
                         "| PEER ADDRESS  |     PEER TYPE     | STATE |  SINCE   |    INFO     |", rule]
    assert re.fullmatch(r"\| 192\.168\.3\.112 \| node-to-node mesh \| up    \| \d\d:\d\d:\d\d \| Established \|",
                        lines[6]), lines[6]
    assert lines[7].startswith("| 192.168.3.113 | node-to-node mesh | up ")
    assert lines[8:] == [rule, "", "IPv6 BGP status", "No IPv6 peers found.", ""]

    # A new peer re-renders and reloads BIRD; the sessions that did not change stay up.
    # BIRD 1.6 prints "since" as the wall clock minus an age kept in whole monotonic seconds,
    # so one reading can differ from the next by a second without any state change. A session
    # that restarted would show the reload's time instead: wait until that is at least three
    # seconds after every "since", then allow the one-second jitter and nothing more.
    def mesh_since() -> dict[str, int]:
        def seconds(hms: str) -> int:
            h, m, s = map(int, hms.split(":"))
            return h * 3600 + m * 60 + s
        return {line.split()[0]: seconds(line.split()[4])
                for line in c.birdc("node1", "show", "protocols").splitlines() if line.startswith("Mesh_")}

    def seconds_after(later: int, earlier: int) -> int:
        return (later - earlier + 43200) % 86400 - 43200  # across midnight too

    since = mesh_since()
    wait_until(lambda: all(seconds_after(_now_of_day(), t) >= 3 for t in since.values()),
               "three seconds past the sessions' start")
    c.calicoctl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "tor"},
        "spec": {"peerIP": "192.168.3.250", "asNumber": 65000}}))
    wait_until(lambda: "Global_192_168_3_250" in c.birdc("node1", "show", "protocols"), "BIRD to load the new peer")
    assert c.established("node1") == ["Mesh_192_168_3_112", "Mesh_192_168_3_113"]
    after = mesh_since()
    assert after.keys() == since.keys()
    assert all(abs(seconds_after(after[k], since[k])) <= 1 for k in since), (since, after)
    pa, ip_a = c.add_pod("node1", "pod-a")
    pb, ip_b = c.add_pod("node2", "pod-b")
    wait_until(lambda: re.search(rf"^{re.escape(block_of(ip_b))} via 192.168.3.112 dev ens192 proto bird",
                                 c.routes("node1"), re.M) is not None, "node1's BGP route to node2's block", 60)
    assert re.search(rf"^blackhole {re.escape(block_of(ip_b))} proto bird", c.routes("node2"), re.M)
    assert c.ns.run(pa, "ping", "-c", "2", "-W", "3", ip_b, check=False).returncode == 0


def test_route_reflector_instead_of_the_mesh(bgp_cluster: Cluster) -> None:
    c = bgp_cluster
    for name in c.nodes:
        wait_until(lambda n=name: len(c.established(n)) == 2, f"{name}'s mesh", 60)
    rr = {"apiVersion": "projectcalico.org/v3", "kind": "Node",
          "metadata": {"name": "node1", "labels": {"route-reflector": "true"}},
          "spec": {"bgp": {"ipv4Address": "192.168.3.111/24", "routeReflectorClusterID": "224.0.0.1"}}}
    c.calicoctl("apply", "-f", "-", stdin=json.dumps(rr))
    peers = [{"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "peer-with-rr"},
              "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}},
             {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": "rr-to-all"},
              "spec": {"nodeSelector": "route-reflector == 'true'", "peerSelector": "all()"}}]
    for p in peers:
        c.calicoctl("apply", "-f", "-", stdin=json.dumps(p))
    c.calicoctl("patch", "bgpconfiguration", "default", "-p", '{"spec": {"nodeToNodeMeshEnabled": false}}')
    wait_until(lambda: c.established("node2") == ["Node_192_168_3_111"], "node2 peering only with the RR", 60)
    wait_until(lambda: c.established("node3") == ["Node_192_168_3_111"], "node3 peering only with the RR", 60)
    wait_until(lambda: c.established("node1") == ["Node_192_168_3_112", "Node_192_168_3_113"], "the RR", 60)
    pb, ip_b = c.add_pod("node2", "pod-b")
    pc, ip_c = c.add_pod("node3", "pod-c")
    # node2 learns node3's block through the reflector, with node3 as the next hop.
    wait_until(lambda: re.search(rf"^{re.escape(block_of(ip_c))} via 192.168.3.113 dev ens192 proto bird",
                                 c.routes("node2"), re.M) is not None, "the reflected route", 60)
    assert c.ns.run(pb, "ping", "-c", "2", "-W", "3", ip_c, check=False).returncode == 0


@pytest.mark.kernel_vm("ipip")
def test_ipip_when_program_cluster_routes_asks_bird_for_it(tmp_path: Path) -> None:
    """Calico's pre-3.33 split: BGPConfiguration programClusterRoutes Enabled (BIRD programs every
    cluster route) and FelixConfiguration Disabled. Calico's BIRD fork would install the IPIP routes
    with krt_tunnel="tunl0"; stock BIRD 1.6 cannot, so confd keeps the IPIP pool out of BIRD's kernel
    filter and says why, Felix routes it through tunl0, and BGP still carries the blocks."""
    with running("bip", tmp_path,
                 {**POOL, "spec": {**POOL["spec"], "ipipMode": "Always"}},
                 {**BGPCONFIG, "spec": {**BGPCONFIG["spec"], "programClusterRoutes": "Enabled"}},
                 {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration", "metadata": {"name": "default"},
                  "spec": {"programClusterRoutes": "Disabled"}},
                 nodes=SEED_NODES[:2], bgp=True) as c:
        for name in c.nodes:
            wait_until(lambda n=name: len(c.established(n)) == 1, f"{name}'s mesh session", 60)
        pa, ip_a = c.add_pod("node1", "pod-a")
        _, ip_b = c.add_pod("node2", "pod-b")
        block = block_of(ip_b)
        wait_until(lambda: block in c.birdc("node1", "show", "route", "protocol", "Mesh_192_168_3_112"),
                   "BGP to carry node2's block to node1", 60)
        wait_until(lambda: re.search(rf"^{re.escape(block)} via 192.168.3.112 dev tunl0 proto 80 onlink",
                                     c.routes("node1"), re.M) is not None, "Felix's IPIP route")
        assert not re.search(rf"^{re.escape(block)} .*proto bird", c.routes("node1"), re.M)
        ipam_cfg = (tmp_path / "node1" / "confd" / "config" / "bird_ipam.cfg").read_text()
        assert "if (net ~ 10.244.0.0/16) then { reject; } # Cluster routes are handled by Felix." in ipam_cfg
        assert "krt_tunnel" in (tmp_path / "confd-node1.log").read_text()

        tap = capture(c.ns, c.under, "br0", "ip proto 4", count=1)
        assert c.ns.run(pa, "ping", "-c", "2", "-W", "3", ip_b, check=False).returncode == 0
        out, _ = tap.communicate(timeout=30)
        assert re.search(rf"192\.168\.3\.111 > 192\.168\.3\.112: (IP )?{re.escape(ip_a)} > {re.escape(ip_b)}: "
                         "ICMP echo request", out), out
