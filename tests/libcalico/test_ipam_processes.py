"""IPAM under real concurrency: separate processes allocating against one real etcd.

8 processes on 4 nodes (two per node, so they race for the same blocks) make 250
allocations each. Then allocators are killed with SIGKILL in the middle of an ADD,
and ``calicoctl ipam check`` must report exactly what was left behind and
``calicoctl ipam release --from-report`` must repair it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libcalico import api
from libcalico.backend.etcdv3 import EtcdBackend, EtcdConfig
from libcalico.ipam import IPAM
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from tests.etcd_server import EtcdServer

ROOT = Path(__file__).resolve().parents[2]


def worker(endpoint: str, node: str, prefix: str, count: int, stall_at: int = -1) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.libcalico.ipam_worker", endpoint, node, prefix, str(count),
                             "--stall-at", str(stall_at)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


async def seed_pool(endpoint: str) -> EtcdBackend:
    be = EtcdBackend(EtcdConfig(endpoints=(endpoint,)))
    pool = api.IPPool.model_validate({"metadata": {"name": "default-ipv4-ippool"},
                                      "spec": {"cidr": "10.244.0.0/16", "blockSize": 26}})
    await be.create(KVPair(ResourceKey.for_resource(pool), pool))
    return be


def calicoctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["calicoctl", *args], env=env, capture_output=True, text=True, timeout=120)


async def test_eight_processes_make_2000_distinct_allocations_in_their_nodes_blocks(etcd: EtcdServer) -> None:
    be = await seed_pool(etcd.endpoint)
    procs = [worker(etcd.endpoint, f"node{i % 4}", f"p{i}", 250) for i in range(8)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    try:
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        ips = [line for out, _ in outs for line in out.split()]
        assert len(ips) == 2000 and len(set(ips)) == 2000
        blocks = await IPAM(be).blocks()
        assert sum(b.used for b in blocks) == 2000
        for b in blocks:
            assert b.affinity is not None
            assert {a.attrs["node"] for a in b.allocations} == {b.affinity.removeprefix("host:")}
        affinities = (await be.list(ResourceListOptions("BlockAffinity"))).items
        assert sorted(a.value.spec.cidr for a in affinities) == sorted(b.cidr for b in blocks)
        assert all(a.value.spec.state == "confirmed" for a in affinities)
    finally:
        await be.close()


async def test_allocators_killed_mid_add_leave_what_ipam_check_reports_and_release_repairs(
        etcd: EtcdServer, etcd_env: dict[str, str], tmp_path: Path) -> None:
    be = await seed_pool(etcd.endpoint)
    info = api.ClusterInformation.model_validate({"metadata": {"name": "default"},
                                                  "spec": {"clusterGUID": "abc", "datastoreReady": True}})
    await be.create(KVPair(ResourceKey.for_resource(info), info))
    procs = [worker(etcd.endpoint, f"node{i % 2}", f"k{i}", 1000, stall_at=20 + 5 * i) for i in range(4)]
    stalled: list[str] = []
    try:
        for p in procs:
            assert p.stdout is not None
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                line = p.stdout.readline()
                assert line, p.stderr.read() if p.stderr else "worker exited"
                if line.startswith("STALLED "):
                    stalled.append(line.split()[1])
                    break
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    try:
        # What the datastore really holds: allocations whose pod got no endpoint.
        weps = {n.split("/")[0] for kv in (await be.list(ResourceListOptions("WorkloadEndpoint"))).items
                for n in kv.value.spec.ip_networks}
        allocated = {a.ip for b in await IPAM(be).blocks() for a in b.allocations}
        leaked = allocated - weps
        assert leaked == set(stalled) and len(leaked) == 4

        report = tmp_path / "report.json"
        r = calicoctl(etcd_env, "ipam", "check", "--show-problem-ips", "-o", str(report))
        assert r.returncode == 0, r.stderr
        assert "Found 4 IPs that are allocated in IPAM but not actually in use.\n" in r.stdout
        for ip in stalled:
            assert f"  {ip} leaked; attrs Main:k8s-pod-network." in r.stdout
        assert "Check complete; found 4 problems.\n" in r.stdout
        data = json.loads(report.read_text())
        assert {ip for ip, allocs in data["allocations"].items() if not allocs[0]["inUse"]} == set(stalled)

        r = calicoctl(etcd_env, "ipam", "release", "--from-report", str(report))
        assert r.returncode == 1 and "data store is not locked" in r.stderr
        r = calicoctl(etcd_env, "ipam", "release", "--from-report", str(report), "--force")
        assert r.returncode == 0, r.stderr
        assert "Released 4 IPs successfully" in r.stdout
        r = calicoctl(etcd_env, "ipam", "check")
        assert r.stdout.endswith("Check complete; found 0 problems.\n"), r.stdout
        assert {a.ip for b in await IPAM(be).blocks() for a in b.allocations} == weps
    finally:
        await be.close()


@pytest.mark.parametrize("bad", ["10.0.0.300", "nope"])
def test_release_of_a_bad_address_names_it(etcd_env: dict[str, str], bad: str) -> None:
    r = calicoctl(etcd_env, "ipam", "release", "--ip", bad)
    assert r.returncode == 1 and f"invalid IP address specified: {bad}" in r.stderr
