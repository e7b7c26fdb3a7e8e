"""Felix's calculation, state by state: no kernel, no datastore, just inputs and the desired output.

Each test builds a named cluster state and checks what node1 should program.
The last test replays the same updates in every order and expects one answer:
the calculation depends on the current state only.
"""

from __future__ import annotations

import itertools
from typing import Any

from felix import calc
from libcalico import api
from libcalico.api.ipam import IPAMBlock
from libcalico.ipam import new_block


def pool(name: str = "p", cidr: str = "10.244.0.0/16", **spec: Any) -> api.IPPool:
    return api.IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, "blockSize": 26, **spec}})


def node(name: str, ip: str, vtep: str = "", mac: str = "", ipip: str = "") -> api.Node:
    bgp: dict[str, Any] = {"ipv4Address": ip}
    if ipip:
        bgp["ipv4IPIPTunnelAddr"] = ipip
    spec: dict[str, Any] = {"bgp": bgp}
    if vtep:
        spec["ipv4VXLANTunnelAddr"] = vtep
    if mac:
        spec["vxlanTunnelMACAddr"] = mac
    return api.Node.model_validate({"metadata": {"name": name}, "spec": spec})


def block(cidr: str, owner: str) -> IPAMBlock:
    return new_block(cidr, owner)


def wep(name: str, node_name: str, ip: str, iface: str) -> api.WorkloadEndpoint:
    return api.WorkloadEndpoint.model_validate({"metadata": {"name": name, "namespace": "default"}, "spec": {
        "node": node_name, "orchestrator": "k8s", "pod": name, "endpoint": "eth0", "interfaceName": iface,
        "ipNetworks": [f"{ip}/32"]}})


def state(pools: list[api.IPPool], nodes: list[api.Node], blocks: list[IPAMBlock],
          weps: list[api.WorkloadEndpoint] = ()) -> calc.ClusterState:  # type: ignore[assignment]
    return calc.ClusterState(pools={p.metadata.name: p for p in pools}, nodes={n.metadata.name: n for n in nodes},
                             blocks={b.spec.cidr: b for b in blocks},
                             endpoints={(w.metadata.namespace, w.metadata.name): w for w in weps})


THREE_NODES = [node("node1", "192.168.3.111/24", "10.244.1.0", "66:00:00:00:00:01"),
               node("node2", "192.168.3.112/24", "10.244.2.0", "66:00:00:00:00:02"),
               node("node3", "10.0.9.9/24", "10.244.3.0", "66:00:00:00:00:03")]
BLOCKS = [block("10.244.1.0/26", "node1"), block("10.244.2.0/26", "node2"), block("10.244.3.0/26", "node3")]


class TestVXLAN:
    def test_always_routes_every_remote_block_through_its_vtep(self) -> None:
        d = calc.calculate(state([pool(vxlanMode="Always")], THREE_NODES, BLOCKS), "node1")
        assert d.routes["10.244.1.0/26"] == calc.Route("10.244.1.0/26", "blackhole")
        assert d.routes["10.244.2.0/26"] == calc.Route("10.244.2.0/26", "vxlan", "vxlan.calico", "10.244.2.0", True)
        assert d.routes["10.244.3.0/26"].gateway == "10.244.3.0"
        assert d.vxlan == calc.VTEP("node1", "10.244.1.0", "66:00:00:00:00:01", "192.168.3.111")
        assert [v.node for v in d.remote_vteps] == ["node2", "node3"]

    def test_cross_subnet_goes_direct_in_the_subnet_and_tunnels_across_it(self) -> None:
        d = calc.calculate(state([pool(vxlanMode="CrossSubnet")], THREE_NODES, BLOCKS), "node1")
        assert d.routes["10.244.2.0/26"] == calc.Route("10.244.2.0/26", "noencap", "", "192.168.3.112")
        assert d.routes["10.244.3.0/26"].kind == "vxlan"

    def test_a_route_waits_for_its_vtep_and_the_node_for_its_own(self) -> None:
        no_vtep = [THREE_NODES[0], node("node2", "192.168.3.112/24")]
        d = calc.calculate(state([pool(vxlanMode="Always")], no_vtep, BLOCKS[:2]), "node1")
        assert "10.244.2.0/26" not in d.routes
        d = calc.calculate(state([pool(vxlanMode="Always")], [node("node1", "192.168.3.111/24"), THREE_NODES[1]],
                                 BLOCKS[:2]), "node1")
        assert d.vxlan is None and "10.244.2.0/26" not in d.routes

    def test_no_vxlan_pool_means_no_device(self) -> None:
        d = calc.calculate(state([pool()], THREE_NODES, BLOCKS), "node1")
        assert d.vxlan is None and d.remote_vteps == []
        assert d.routes == {}  # unencapsulated: routes and blackholes are BIRD's by default


class TestIPIPAndClusterRoutes:
    def test_ipip_routes_are_felixs_whatever_program_cluster_routes_says(self) -> None:
        # Calico's Disabled / EnabledNoEncapOnly hand IPIP to BIRD's fork (krt_tunnel); stock BIRD
        # cannot route through tunl0, so Felix keeps them (confd warns).
        s = state([pool(ipipMode="Always")], THREE_NODES, BLOCKS)
        for value in ("EnabledIPIPOnly", "Enabled", "Disabled", "EnabledNoEncapOnly"):
            d = calc.calculate(s, "node1", program_cluster_routes=value)
            assert d.routes["10.244.2.0/26"] == calc.Route("10.244.2.0/26", "ipip", "tunl0", "192.168.3.112", True)

    def test_unencapsulated_pools_follow_program_cluster_routes(self) -> None:
        s = state([pool()], THREE_NODES, BLOCKS)
        for value, expected in (("Enabled", True), ("EnabledNoEncapOnly", True), ("EnabledIPIPOnly", False),
                                ("Disabled", False)):
            d = calc.calculate(s, "node1", program_cluster_routes=value)
            assert ("10.244.2.0/26" in d.routes) is expected, value

    def test_ipip_cross_subnet(self) -> None:
        d = calc.calculate(state([pool(ipipMode="CrossSubnet")], THREE_NODES, BLOCKS), "node1")
        assert d.routes["10.244.2.0/26"].kind == "noencap"
        assert d.routes["10.244.3.0/26"].kind == "ipip"


class TestWorkloadsAndNAT:
    def test_local_workloads_get_link_routes_and_remote_ones_do_not(self) -> None:
        weps = [wep("a", "node1", "10.244.1.5", "cali1111"), wep("b", "node2", "10.244.2.5", "cali2222"),
                wep("x", "node1", "10.244.1.6", "tap0")]
        d = calc.calculate(state([pool(vxlanMode="Always")], THREE_NODES, BLOCKS, weps), "node1")
        assert d.routes["10.244.1.5/32"] == calc.Route("10.244.1.5/32", "local", "cali1111")
        assert d.routes["10.244.1.5/32"].proto == calc.PROTO_BOOT
        assert "10.244.2.5/32" not in d.routes and "10.244.1.6/32" not in d.routes
        assert d.local_endpoints == 1

    def test_nat_sources_are_enabled_nat_pools_and_every_pool_is_excluded(self) -> None:
        pools = [pool("a", "10.244.0.0/16", natOutgoing=True), pool("b", "10.9.0.0/16"),
                 pool("c", "10.8.0.0/16", natOutgoing=True, disabled=True)]
        d = calc.calculate(state(pools, THREE_NODES, []), "node1")
        assert d.nat_sources == ["10.244.0.0/16"]
        assert d.all_pools == ["10.244.0.0/16", "10.8.0.0/16", "10.9.0.0/16"]


def test_the_result_depends_on_the_state_not_the_order_it_arrived_in() -> None:
    updates: list[tuple[str, Any]] = [("pool", pool(vxlanMode="Always", natOutgoing=True))]
    updates += [("node", n) for n in THREE_NODES] + [("block", b) for b in BLOCKS]
    updates += [("wep", wep("a", "node1", "10.244.1.5", "cali1111"))]
    expected = None
    for order in itertools.islice(itertools.permutations(updates), 0, 5040, 97):
        s = calc.ClusterState()
        for kind, value in order:
            if kind == "pool":
                s.pools[value.metadata.name] = value
            elif kind == "node":
                s.nodes[value.metadata.name] = value
            elif kind == "block":
                s.blocks[value.spec.cidr] = value
            else:
                s.endpoints[("default", value.metadata.name)] = value
        got = calc.calculate(s, "node1")
        expected = expected or got
        assert got == expected
