"""IPAM semantics, on every backend (real etcd, memory, Kubernetes via the test API server)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
from typing import Any

import pytest

from libcalico import api
from libcalico.api.ipam import IPAMConfigSpec
from libcalico.backend.api import Backend
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.ipam import IPAM, IPAMError, pod_handle, tunnel_handle
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from tests.etcd_server import EtcdServer


async def add_pool(be: Backend, name: str, cidr: str, block_size: int = 26, **spec: Any) -> None:
    pool = api.IPPool.model_validate({"metadata": {"name": name},
                                      "spec": {"cidr": cidr, "blockSize": block_size, **spec}})
    await be.create(KVPair(ResourceKey.for_resource(pool), pool))


async def add_node(be: Backend, name: str, labels: dict[str, str] | None = None) -> None:
    node = api.Node.model_validate({"metadata": {"name": name, "labels": labels or {}}})
    if type(be).__name__ == "KubernetesBackend":
        return  # Kubernetes Nodes are made through the Kubernetes API (see node_via_k8s)
    await be.create(KVPair(ResourceKey.for_resource(node), node))


def attrs(pod: str, node: str) -> dict[str, str]:
    return {"namespace": "default", "pod": pod, "node": node}


class TestAffinity:
    async def test_a_node_fills_its_own_block_then_claims_the_next(self, backend: Backend) -> None:
        await add_pool(backend, "p", "10.244.0.0/16")
        ipam = IPAM(backend)
        first = await ipam.auto_assign("n1", pod_handle("c1"), attrs("a", "n1"))
        block = ipaddress.ip_network(f"{first[0]}/26", strict=False)
        assert ipaddress.ip_address(first[0]) == block.network_address  # ordinal 0 first, as Calico hands out
        rest = await ipam.auto_assign("n1", pod_handle("c2"), attrs("b", "n1"), num=64)
        assert len(set(first + rest)) == 65
        assert sum(ipaddress.ip_address(ip) in block for ip in rest) == 63
        blocks = await ipam.blocks()
        assert sorted(b.used for b in blocks) == [1, 64] and {b.size for b in blocks} == {64}
        assert all(b.affinity == "host:n1" for b in blocks)
        assert await ipam.affine_blocks("n1") == sorted((b.cidr for b in blocks), key=ipaddress.ip_network)

    async def test_nodes_get_their_own_blocks_and_borrow_only_without_strict_affinity(
            self, backend: Backend) -> None:
        await add_pool(backend, "small", "10.0.0.0/29", block_size=30)  # two blocks of four
        ipam = IPAM(backend)
        a = await ipam.auto_assign("a", pod_handle("a"), attrs("a", "a"), num=2)
        b = await ipam.auto_assign("b", pod_handle("b"), attrs("b", "b"), num=4)
        assert {str(ipaddress.ip_network(f"{ip}/30", strict=False)) for ip in a}.isdisjoint(
            {str(ipaddress.ip_network(f"{ip}/30", strict=False)) for ip in b})
        borrowed = await ipam.auto_assign("c", pod_handle("c"), attrs("c", "c"))
        assert ipaddress.ip_network(f"{borrowed[0]}/30", strict=False) == ipaddress.ip_network(f"{a[0]}/30",
                                                                                              strict=False)
        await ipam.set_config(IPAMConfigSpec(strict_affinity=True))
        with pytest.raises(IPAMError, match="strict affinity"):
            await ipam.auto_assign("c", pod_handle("c2"), attrs("c2", "c"))

    async def test_pool_choice_disabled_selector_and_requested(self, backend: Backend) -> None:
        await add_pool(backend, "off", "10.1.0.0/16", disabled=True)
        await add_pool(backend, "rack1", "10.2.0.0/16", nodeSelector="rack == '1'")
        await add_pool(backend, "any", "10.3.0.0/16")
        await add_node(backend, "n1", {"rack": "1"})
        await add_node(backend, "n2", {"rack": "2"})
        ipam = IPAM(backend)
        nets = {n: ipaddress.ip_network(c) for n, c in (("off", "10.1.0.0/16"), ("rack1", "10.2.0.0/16"),
                                                         ("any", "10.3.0.0/16"))}
        [ip2] = await ipam.auto_assign("n2", pod_handle("x"), attrs("x", "n2"))
        assert ipaddress.ip_address(ip2) in nets["any"]
        [ip] = await ipam.auto_assign("n1", pod_handle("y"), attrs("y", "n1"), pools=["rack1"])
        assert ipaddress.ip_address(ip) in nets["rack1"]
        with pytest.raises(IPAMError, match="disabled"):
            await ipam.auto_assign("n1", pod_handle("z"), attrs("z", "n1"), pools=["off"])
        with pytest.raises(IPAMError, match="does not exist"):
            await ipam.auto_assign("n1", pod_handle("z"), attrs("z", "n1"), pools=["10.9.0.0/16"])

    async def test_no_pool_is_a_clear_error_that_changes_nothing(self, backend: Backend) -> None:
        with pytest.raises(IPAMError, match="no configured Calico pools for node n1"):
            await IPAM(backend).auto_assign("n1", pod_handle("c"), attrs("c", "n1"))
        assert (await backend.list(ResourceListOptions("IPAMBlock"))).items == []
        assert (await backend.list(ResourceListOptions("IPAMHandle"))).items == []

    async def test_a_node_stops_at_its_block_limit_with_calicos_error_and_does_not_borrow(
            self, backend: Backend) -> None:
        await add_pool(backend, "p", "10.0.0.0/24", block_size=30)  # 64 blocks of four
        ipam = IPAM(backend)
        await ipam.set_config(IPAMConfigSpec(max_blocks_per_host=2))
        await ipam.auto_assign("n1", pod_handle("full"), attrs("full", "n1"), num=8)
        await ipam.auto_assign("n2", pod_handle("other"), attrs("other", "n2"))  # free addresses to borrow
        before = {kv.key for kv in (await backend.list(ResourceListOptions("IPAMHandle"))).items}
        with pytest.raises(IPAMError, match="cannot allocate new block due to per host block limit: node n1 "
                                            r"already has 2 blocks and the limit is 2 \(IPAMConfig maxBlocksPerHost\)"):
            await ipam.auto_assign("n1", pod_handle("one-more"), attrs("one-more", "n1"))
        assert {kv.key for kv in (await backend.list(ResourceListOptions("IPAMHandle"))).items} == before
        assert len(await ipam.affine_blocks("n1")) == 2
        # Unset (0), the limit is Calico's safeguard of 20 blocks.
        await ipam.set_config(IPAMConfigSpec())
        await ipam.auto_assign("n1", pod_handle("more"), attrs("more", "n1"), num=18 * 4)
        with pytest.raises(IPAMError, match=r"already has 20 blocks and the limit is 20 .*0 means 20"):
            await ipam.auto_assign("n1", pod_handle("too-many"), attrs("too-many", "n1"))
        assert len(await ipam.affine_blocks("n1")) == 20


class TestHandlesAndRelease:
    async def test_allocation_records_handle_and_attributes(self, backend: Backend) -> None:
        await add_pool(backend, "p", "10.244.0.0/16")
        ipam = IPAM(backend)
        [ip] = await ipam.auto_assign("n1", pod_handle("abc"), attrs("web", "n1"))
        found = await ipam.allocation(ip)
        assert found is not None and found.handle_id == "k8s-pod-network.abc"
        assert found.attrs == {"namespace": "default", "pod": "web", "node": "n1"}
        assert await ipam.handles() == {"k8s-pod-network.abc": {found.block: 1}}

    async def test_release_by_handle_is_complete_and_idempotent(self, backend: Backend) -> None:
        await add_pool(backend, "p", "10.244.0.0/16")
        ipam = IPAM(backend)
        ips = await ipam.auto_assign("n1", pod_handle("abc"), attrs("web", "n1"), num=3)
        keep = await ipam.auto_assign("n1", pod_handle("def"), attrs("db", "n1"))
        assert await ipam.release_by_handle(pod_handle("abc")) == 3
        assert await ipam.release_by_handle(pod_handle("abc")) == 0
        assert [a.ip for b in await ipam.blocks() for a in b.allocations] == keep
        assert list(await ipam.handles()) == ["k8s-pod-network.def"]
        again = await ipam.auto_assign("n1", pod_handle("ghi"), attrs("x", "n1"))
        assert again[0] not in ips  # as in Calico, freed ordinals go to the back of the free list

    async def test_release_by_address_reports_what_was_not_allocated(self, backend: Backend) -> None:
        await add_pool(backend, "p", "10.244.0.0/16")
        ipam = IPAM(backend)
        [a, b] = await ipam.auto_assign("n1", pod_handle("abc"), attrs("web", "n1"), num=2)
        assert await ipam.release_ips([a, "10.99.0.1"]) == ["10.99.0.1"]
        assert await ipam.release_ips([a]) == [a]
        assert await ipam.handles() == {"k8s-pod-network.abc": {str(ipaddress.ip_network(f"{b}/26",
                                                                                          strict=False)): 1}}

    async def test_a_borrowed_block_goes_when_its_last_address_is_released(self, backend: Backend) -> None:
        await add_pool(backend, "p", "10.244.0.0/16")
        ipam = IPAM(backend)
        [ip] = await ipam.auto_assign("n1", pod_handle("a"), attrs("a", "n1"))
        await ipam.release_host_affinities("n1")  # the node went away; its block stays while in use
        assert [b.affinity for b in await ipam.blocks()] == [None]
        await ipam.release_ips([ip])
        assert await ipam.blocks() == []

    async def test_assign_a_given_address(self, backend: Backend) -> None:
        await add_pool(backend, "p", "10.244.0.0/16")
        ipam = IPAM(backend)
        await ipam.assign_ip("10.244.7.9", pod_handle("fixed"), attrs("f", "n1"), "n1")
        found = await ipam.allocation("10.244.7.9")
        assert found is not None and found.block == "10.244.7.0/26"
        with pytest.raises(Exception, match="already in use"):
            await ipam.assign_ip("10.244.7.9", pod_handle("other"), attrs("o", "n1"), "n1")


class TestTunnelAddresses:
    async def test_the_tunnel_address_comes_from_the_nodes_block_and_is_recorded(self, backend: Backend) -> None:
        if type(backend).__name__ == "KubernetesBackend":
            pytest.skip("Nodes on Kubernetes come from Kubernetes Nodes: covered in test_kubernetes_datastore")
        await add_pool(backend, "p", "10.244.0.0/16")
        await add_node(backend, "n1")
        ipam = IPAM(backend)
        ip = await ipam.ensure_tunnel_address("n1", "vxlan")
        assert await ipam.ensure_tunnel_address("n1", "vxlan") == ip  # stable
        node = (await backend.get(ResourceKey("Node", "n1"))).value
        assert node.spec.ipv4_vxlan_tunnel_addr == ip
        found = await ipam.allocation(ip)
        assert found is not None and found.handle_id == tunnel_handle("n1", "vxlan")
        assert found.attrs == {"node": "n1", "type": "vxlanTunnelAddress"}
        [pod_ip] = await ipam.auto_assign("n1", pod_handle("p"), attrs("p", "n1"))
        assert ipaddress.ip_network(f"{pod_ip}/26", strict=False) == ipaddress.ip_network(f"{ip}/26", strict=False)


class TestStorageLayout:
    async def test_etcd_holds_ipam_where_and_as_calico_does(self, etcd: EtcdServer) -> None:
        be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,)))
        try:
            await add_pool(be, "p", "10.244.0.0/16")
            [ip] = await IPAM(be).auto_assign("node1", pod_handle("abc"), attrs("web", "node1"))
        finally:
            await be.close()
        out = subprocess.run(["etcdctl", f"--endpoints={etcd.endpoint}", "get", "--prefix", "/calico/ipam/v2/"],
                             env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, check=True)
        lines = out.stdout.splitlines()
        kv = dict(zip(lines[::2], lines[1::2], strict=True))
        block = ipaddress.ip_network(f"{ip}/26", strict=False)
        bname = str(block).replace("/", "-")
        assert set(kv) == {f"/calico/ipam/v2/assignment/ipv4/block/{bname}",
                           f"/calico/ipam/v2/host/node1/ipv4/block/{bname}",
                           "/calico/ipam/v2/handle/k8s-pod-network.abc"}
        stored = json.loads(kv[f"/calico/ipam/v2/assignment/ipv4/block/{bname}"])
        assert stored["cidr"] == str(block) and stored["affinity"] == "host:node1"
        assert stored["allocations"][0] == 0 and stored["unallocated"][:2] == [1, 2]
        assert stored["attributes"] == [{"handle_id": "k8s-pod-network.abc",
                                         "secondary": {"namespace": "default", "pod": "web", "node": "node1"}}]
        assert json.loads(kv[f"/calico/ipam/v2/host/node1/ipv4/block/{bname}"]) == {"state": "confirmed",
                                                                                    "deleted": False}
        assert json.loads(kv["/calico/ipam/v2/handle/k8s-pod-network.abc"]) == {"block": {str(block): 1},
                                                                                "deleted": False}


class TestConcurrency:
    async def test_concurrent_allocators_in_one_process_never_collide(self, backend: Backend) -> None:
        await add_pool(backend, "p", "10.244.0.0/16")
        ipam = IPAM(backend)

        async def allocate(node: str, i: int) -> str:
            [ip] = await ipam.auto_assign(node, pod_handle(f"{node}-{i}"), attrs(f"p{i}", node))
            return ip

        ips = await asyncio.gather(*(allocate(f"n{i % 3}", i) for i in range(30)))
        assert len(set(ips)) == 30
        for b in await ipam.blocks():
            assert all(a.attrs["node"] == (b.affinity or "").removeprefix("host:") for a in b.allocations)
