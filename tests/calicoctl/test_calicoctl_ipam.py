"""calicoctl's IPAM views against a real etcd, in the seed's layout."""

from __future__ import annotations

import re
import subprocess

from libcalico import api
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.ipam import IPAM, pod_handle
from libcalico.model import KVPair, ResourceKey
from tests.etcd_server import EtcdServer

SEED_NODES = ["master1-k8s.myk8s.example.com", "worker1-k8s.myk8s.example.com",
              "worker2-k8s.myk8s.example.com", "worker3-k8s.myk8s.example.com"]


def calicoctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["calicoctl", *args], env=env, capture_output=True, text=True, timeout=60)


async def seed_cluster(endpoint: str) -> dict[str, list[str]]:
    """The seed's cluster: its pool, four nodes, a VXLAN tunnel address and three pods on each."""
    be = EtcdBackend(EtcdConfig(endpoints=(endpoint,)))
    try:
        pool = api.IPPool.model_validate({"metadata": {"name": "default-ipv4-ippool"}, "spec": {
            "cidr": "10.244.0.0/16", "blockSize": 26, "vxlanMode": "Always", "natOutgoing": True}})
        await be.create(KVPair(ResourceKey.for_resource(pool), pool))
        ipam = IPAM(be)
        out: dict[str, list[str]] = {}
        for n in SEED_NODES:
            node = api.Node.model_validate({"metadata": {"name": n}})
            await be.create(KVPair(ResourceKey.for_resource(node), node))
            out[n] = [await ipam.ensure_tunnel_address(n, "vxlan")]
            for i in range(3):
                pod = f"client-{n.split('-')[0]}-{i}"
                out[n] += await ipam.auto_assign(n, pod_handle(pod), {"namespace": "default", "pod": pod, "node": n})
        return out
    finally:
        await be.close()


async def test_ipam_show_blocks_in_the_seeds_layout(etcd: EtcdServer, etcd_env: dict[str, str]) -> None:
    await seed_cluster(etcd.endpoint)
    r = calicoctl(etcd_env, "ipam", "show", "--show-blocks")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rule = "+----------+-------------------+-----------+------------+--------------+"
    assert lines[:4] == [rule, "| GROUPING |       CIDR        | IPS TOTAL | IPS IN USE |   IPS FREE   |", rule,
                         "| IP Pool  | 10.244.0.0/16     |     65536 | 16 (0%)    | 65520 (100%) |"]
    blocks = lines[4:8]
    assert lines[8:] == [rule]
    cidrs = []
    for line in blocks:
        m = re.fullmatch(r"\| Block    \| (10\.244\.\d+\.\d+/26) *\|        64 \| 4 \(6%\)     \| 60 \(94%\)     \|",
                         line)
        assert m, line
        cidrs.append(m.group(1))
    assert cidrs == sorted(cidrs)  # Calico sorts the blocks as text, as the seed shows
    r = calicoctl(etcd_env, "ipam", "show")
    assert r.stdout.splitlines()[3] == "| IP Pool  | 10.244.0.0/16 |     65536 | 16 (0%)    | 65520 (100%) |"
    assert len(r.stdout.splitlines()) == 5


async def test_ipam_show_ip(etcd: EtcdServer, etcd_env: dict[str, str]) -> None:
    placed = await seed_cluster(etcd.endpoint)
    tunnel, pod_ip = placed[SEED_NODES[1]][:2]
    r = calicoctl(etcd_env, "ipam", "show", "--ip", pod_ip)
    assert r.stdout == (f"IP {pod_ip} is in use\nHandle ID: k8s-pod-network.client-worker1-0\n"
                        "Active Owner Attributes:\n  namespace: default\n"
                        f"  node: {SEED_NODES[1]}\n  pod: client-worker1-0\n")
    r = calicoctl(etcd_env, "ipam", "show", "--ip", tunnel)
    assert f"Handle ID: vxlan-tunnel-addr-{SEED_NODES[1]}" in r.stdout and "type: vxlanTunnelAddress" in r.stdout
    r = calicoctl(etcd_env, "ipam", "show", "--ip", "10.9.9.9")
    assert r.stdout == "10.9.9.9 is not assigned\n"
    r = calicoctl(etcd_env, "ipam", "show", "--ip", "10.9.9.999")
    assert r.returncode == 1 and "invalid IP address specified: 10.9.9.999" in r.stderr


async def test_ipam_configure_and_show_configuration(etcd: EtcdServer, etcd_env: dict[str, str]) -> None:
    r = calicoctl(etcd_env, "ipam", "configure", "--strictaffinity", "true")
    assert r.returncode == 0 and r.stdout == "Successfully set StrictAffinity to: true\n", r.stderr
    r = calicoctl(etcd_env, "ipam", "show", "--show-configuration")
    assert "| StrictAffinity     | true  |" in r.stdout
    r = calicoctl(etcd_env, "ipam", "configure", "--strictaffinity", "maybe")
    assert r.returncode == 1 and "--strictaffinity = 'maybe' (must be true or false)" in r.stderr


def _block(cidr: str, *, allocations: list[int | None], unallocated: list[int],
           attributes: list[dict[str, object]]) -> api.IPAMBlock:
    from libcalico.api.ipam import cidr_to_name

    return api.IPAMBlock.model_validate({"metadata": {"name": cidr_to_name(cidr)}, "spec": {
        "cidr": cidr, "allocations": allocations, "unallocated": unallocated, "attributes": attributes}})


async def test_ipam_check_flags_every_kind_of_inconsistent_block(etcd: EtcdServer, etcd_env: dict[str, str]) -> None:
    # A /30 has four ordinals. Each block breaks one of the rules Calico's validateBlock checks.
    attr = {"handle_id": "h", "secondary": {}}
    broken = {
        "10.9.0.0/30": (_block("10.9.0.0/30", allocations=[], unallocated=[], attributes=[]),
                        "block has 0 allocation slots, expected 4"),
        "10.9.0.4/30": (_block("10.9.0.4/30", allocations=[0, None, None, None], unallocated=[0, 1, 2, 3],
                               attributes=[attr]), "ordinal 0 is allocated but appears in Unallocated"),
        "10.9.0.8/30": (_block("10.9.0.8/30", allocations=[None, None, None, None], unallocated=[0, 1, 2],
                               attributes=[]), "Unallocated (3) + Allocated (0) = 3"),
        "10.9.0.12/30": (_block("10.9.0.12/30", allocations=[1, None, None, None], unallocated=[1, 2, 3],
                                attributes=[attr]), "allocation 0 indexes a nonexistent attribute 1"),
        "10.9.0.16/30": (_block("10.9.0.16/30", allocations=[-1, None, None, None], unallocated=[1, 2, 3],
                                attributes=[]), "allocation 0 indexes a nonexistent attribute -1"),
    }
    good = _block("10.9.0.20/30", allocations=[None] * 4, unallocated=[0, 1, 2, 3], attributes=[])
    be = EtcdBackend(EtcdConfig(endpoints=(etcd.endpoint,)))
    try:
        for blk in [b for b, _ in broken.values()] + [good]:
            await be.create(KVPair(ResourceKey.for_resource(blk), blk))
    finally:
        await be.close()
    r = calicoctl(etcd_env, "ipam", "check")
    assert r.returncode == 0, r.stderr
    invalid = [line for line in r.stdout.splitlines() if " is invalid: " in line]
    for cidr, (_, why) in broken.items():
        assert any(f"BlockKey(cidr={cidr}) is invalid: " in line and why in line for line in invalid), (cidr, invalid)
    assert len(invalid) == len(broken)
    assert f"Found {len(broken)} invalid IPAMBlocks." in r.stdout.splitlines()
    problems = int(re.search(r"Check complete; found (\d+) problems\.", r.stdout).group(1))  # type: ignore[union-attr]
    assert problems >= len(broken)


async def test_ipam_check_with_a_report_in_a_missing_directory_fails_before_checking(
        etcd: EtcdServer, etcd_env: dict[str, str]) -> None:
    r = calicoctl(etcd_env, "ipam", "check", "-o", "/nonexistent/dir/r.json")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == "cannot write the report /nonexistent/dir/r.json: directory /nonexistent/dir does not exist\n"
