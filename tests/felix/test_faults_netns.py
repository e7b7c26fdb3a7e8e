"""Fault tests of issue 18 on a real kernel: Felix restarted under traffic, etcd gone for 30 s.

One two-node cluster (tests/cluster.py: namespaces only, real etcd, Felix, confd and
BIRD, pods made by the CNI plugin, a VXLAN pool) serves both tests; each one first
waits until the cluster is healthy, so neither depends on what the other left.

* Felix must reconcile, never flush: a restart (SIGTERM, then kill -9) on either
  node may not drop one packet of a ping running between pods on the two nodes.
* An etcd outage (frozen, then killed, then restarted on its data dir) leaves the
  dataplane as it is, also under a Felix that starts during it; CNI ADDs fail with
  the spec's error object in bounded time and leak nothing; Felix and confd resync
  afterwards without losing or duplicating a route.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cni import config as cni_config
from libcalico.names import veth_name_for_workload
from tests.cluster import SEED_NODES, Cluster, block_of, running, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

POOL = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "default-ipv4-ippool"},
        "spec": {"cidr": "10.244.0.0/16", "blockSize": 26, "vxlanMode": "Always", "natOutgoing": True,
                 "nodeSelector": "all()"}}
OUTAGE = 30.0  # seconds etcd is away
# How long a CNI ADD may take to fail while etcd is frozen: its first read is tried twice, each for
# the plugins' datastore timeout, and the plugin has to start first (a deadline, not an expectation).
FROZEN_ADD_DEADLINE = 2 * cni_config.DATASTORE_TIMEOUT + 60


def _ready(c: Cluster, name: str) -> bool:
    return c.health(name, "readiness") == 204


def _meshed(c: Cluster, name: str) -> bool:
    return len(c.established(name)) == len(c.nodes) - 1


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running("flt", tmp_path_factory.mktemp("faults"), POOL, nodes=SEED_NODES[:2], bgp=True) as c:
        yield c


@pytest.fixture
def cluster(shared: Cluster) -> Cluster:
    """The shared cluster, once it is healthy: etcd answers, Felix ready and BGP up on both nodes."""
    assert shared.etcd is not None and shared.etcd.proc is not None and shared.etcd.proc.poll() is None
    for name, node in shared.nodes.items():
        assert node.felix is not None and node.felix.poll() is None, f"Felix on {name} is not running"
        assert node.confd is not None and node.confd.poll() is None, f"confd on {name} is not running"
        wait_until(functools.partial(_ready, shared, name), f"Felix on {name} to be ready")
        wait_until(functools.partial(_meshed, shared, name), f"{name}'s mesh session", 60)
    return shared


class Ping:
    """``ping -i 0.01`` from a pod, stopped with SIGINT; every sequence number is accounted for."""

    def __init__(self, netns: str, dst: str) -> None:
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, "ping", "-n", "-i", "0.01", dst],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> tuple[int, int, list[int], str]:
        """(transmitted, received, sequence numbers lost, ping's summary line)."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received.*", out)
        assert m, out[-2000:]
        sent, received = int(m.group(1)), int(m.group(2))
        answered = {int(s) for s in re.findall(r"icmp_seq=(\d+) ttl=", out)}
        # The last request may still be in flight when SIGINT arrives: not a loss.
        lost = [s for s in range(1, sent) if s not in answered]
        return sent, received, lost, m.group(0)


def _felix_applies(c: Cluster, name: str) -> int:
    m = re.search(r"^felix_int_dataplane_apply_time_seconds_count (\S+)", c.metrics(name), re.M)
    return int(float(m.group(1))) if m else 0


def _applied_since(c: Cluster, name: str, applies: int) -> bool:
    return _felix_applies(c, name) > applies


def _dataplane(c: Cluster, name: str) -> dict[str, str]:
    """What Felix programs on a node, as the kernel shows it: routes, the VXLAN device (its index
    tells a re-created device from the same one), its ARP and FDB entries, Felix's nftables table (policy and natOutgoing)."""
    ns = c.nodes[name].ns
    return {"routes": c.routes(name),
            "device": c.ns.run(ns, "ip", "-o", "link", "show", "vxlan.calico").stdout.split(": ")[0],
            "arp": c.ns.run(ns, "ip", "neigh", "show", "dev", "vxlan.calico").stdout,
            "fdb": c.ns.run(ns, "bridge", "fdb", "show", "dev", "vxlan.calico").stdout,
            "nft": c.ns.run(ns, "nft", "-s", "list", "table", "ip", "calico").stdout}  # -s: counters aside


def test_felix_restarted_by_sigterm_and_kill_under_a_ping_between_nodes_loses_no_packet(cluster: Cluster) -> None:
    c = cluster
    pa, ip_a = c.add_pod("node1", "ping-a")
    pb, ip_b = c.add_pod("node2", "ping-b")
    wait_until(lambda: block_of(ip_b) in c.routes("node1") and block_of(ip_a) in c.routes("node2"),
               "routes between the two pods' blocks")
    wait_until(lambda: c.ns.run(pa, "ping", "-c", "1", "-W", "1", ip_b, check=False).returncode == 0,
               "the first ping to get through")
    before = {n: _dataplane(c, n) for n in c.nodes}
    assert all(before[n]["arp"] and before[n]["fdb"] and "masquerade" in before[n]["nft"] for n in c.nodes), before

    ping = Ping(pa, ip_b)
    try:
        for name in ("node1", "node2"):
            for kill in (False, True):
                code = c.stop_felix(name, kill=kill)
                assert code == (-signal.SIGKILL if kill else 0), f"Felix on {name} exited with {code}"
                assert _dataplane(c, name) == before[name], f"Felix on {name} cleaned up on its way out"
                c.start_felix(name)  # waits for readiness: the first in-sync apply is done
                # ... and one more apply after it (the periodic resync), which must not flush either.
                wait_until(functools.partial(_applied_since, c, name, _felix_applies(c, name)),
                           f"another apply on {name}")
    finally:
        sent, _, lost, summary = ping.stop()
    assert not lost, f"{summary}; lost icmp_seq {lost}"
    assert sent > 100, summary  # the ping ran across all four restarts
    assert {n: _dataplane(c, n) for n in c.nodes} == before  # reconciled: nothing re-created
    for node, (pod, netns) in (("node1", ("ping-a", pa)), ("node2", ("ping-b", pb))):
        c.cni(node, "DEL", pod, netns)


SECOND_POOL = {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "after-outage"},
               "spec": {"cidr": "10.245.0.0/16", "blockSize": 26, "vxlanMode": "Always", "natOutgoing": True,
                        "nodeSelector": "all()"}}


def _route_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _destinations(text: str) -> list[str]:
    return [line.split()[1] if line.split()[0] in ("blackhole", "unreachable") else line.split()[0]
            for line in _route_lines(text)]


def _failed_add_leaves_nothing(c: Cluster, node: str, pod: str, netns: str) -> None:
    veth = veth_name_for_workload("default", pod)
    assert veth not in c.ns.run(c.nodes[node].ns, "ip", "-o", "link").stdout, f"{pod}'s veth was left on {node}"
    assert c.ns.run(netns, "ip", "link", "show", "eth0", check=False).returncode != 0, f"{pod} kept its eth0"


def test_etcd_gone_for_30s_keeps_the_dataplane_fails_cni_cleanly_and_everything_resyncs(cluster: Cluster) -> None:
    c = cluster
    etcd = c.etcd
    assert etcd is not None and etcd.proc is not None
    pa, ip_a = c.add_pod("node1", "outage-a")
    pb, ip_b = c.add_pod("node2", "outage-b")
    wait_until(lambda: block_of(ip_b) in c.routes("node1") and block_of(ip_a) in c.routes("node2"),
               "routes between the two pods' blocks")
    wait_until(lambda: c.ns.run(pa, "ping", "-c", "1", "-W", "1", ip_b, check=False).returncode == 0,
               "the first ping to get through")
    wait_until(lambda: "found 0 problems" in c.calicoctl("ipam", "check"), "a clean IPAM before the outage")
    before = {n: c.routes(n) for n in c.nodes}
    for text in before.values():
        assert len(set(_destinations(text))) == len(_destinations(text)), text
    failed: dict[str, tuple[str, str]] = {}  # pod -> (node, netns) of the ADDs made during the outage

    def during_outage() -> None:
        for name, node in c.nodes.items():
            assert c.routes(name) == before[name], f"{name}'s routes changed during the outage"
            assert node.felix is not None and node.felix.poll() is None, f"Felix on {name} exited"
            assert node.confd is not None and node.confd.poll() is None, f"confd on {name} exited"

    def failing_add(node: str, pod: str) -> None:
        netns = c.ns.add(pod)
        r = c.cni_run(node, "ADD", pod, netns, timeout=FROZEN_ADD_DEADLINE)  # a hang fails the test here
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        err = json.loads(r.stdout)  # the spec's error object, nothing else on stdout
        assert err["cniVersion"] == "1.0.0" and isinstance(err["code"], int) and err["code"] >= 100, err
        assert err["msg"].startswith("etcd ") and "failed" in err["msg"], err  # names the datastore and why
        failed[pod] = (node, netns)
        during_outage()

    ping = Ping(pa, ip_b)
    started = time.monotonic()
    os.kill(etcd.proc.pid, signal.SIGSTOP)  # first frozen: connections stay open, requests hang
    try:
        failing_add("node1", "outage-c")
        etcd.proc.kill()  # then dead: connections refused
        etcd.proc.wait(10)
        etcd.stop()
        failing_add("node2", "outage-d")
        # A Felix that starts while the datastore is away waits for it: it programs nothing until in sync.
        c.stop_felix("node2", kill=True)
        c.start_felix("node2", ready=False)
        wait_until(lambda: c.health("node2", "liveness") == 204, "the new Felix on node2 to answer")
        assert c.health("node2", "readiness") == 503
        while time.monotonic() - started < OUTAGE:  # the outage lasts its 30 s; look at the nodes meanwhile
            during_outage()
            time.sleep(1)
    finally:
        if etcd.proc is not None:
            etcd.proc.kill()
            etcd.proc.wait(10)
            etcd.stop()
        etcd.start()  # the same data dir and port
    _, _, lost, summary = ping.stop()
    assert not lost, f"pods lost packets during the outage: {summary}; lost icmp_seq {lost}"

    # Felix and confd resync; nothing the failed ADDs started was left behind.
    for name in c.nodes:
        wait_until(functools.partial(_ready, c, name), f"Felix on {name} to be ready again", 60)
        assert "felix_resync_state 3" in c.metrics(name).splitlines()
    report = c.calicoctl("ipam", "check", "--show-problem-ips")
    assert "found 0 problems" in report, report
    weps = c.calicoctl("get", "workloadendpoints", "-A", "-o", "json")
    for pod, (node, netns) in failed.items():
        assert pod not in weps, f"a WorkloadEndpoint of {pod} was left"
        _failed_add_leaves_nothing(c, node, pod, netns)
    assert {n: c.routes(n) for n in c.nodes} == before  # nothing lost, nothing duplicated

    # The datastore works again: the failed ADD succeeds when repeated; a pod from a new pool gets
    # a new block, whose route reaches the other node (Felix followed) and whose blackhole reaches
    # BIRD's config on its own node (confd followed).
    c.calicoctl("apply", "-f", "-", stdin=json.dumps(SECOND_POOL))
    node_c, netns_c = failed["outage-c"]
    result = c.cni(node_c, "ADD", "outage-c", netns_c)
    assert result is not None
    ip_c = result["ips"][0]["address"].split("/")[0]
    _, ip_e = c.add_pod("node1", "after-e", ipam={"type": "calico-ipam", "ipv4_pools": ["10.245.0.0/16"]})
    assert ip_e.startswith("10.245."), ip_e
    wait_until(lambda: re.search(rf"^{re.escape(block_of(ip_e))} via \S+ dev vxlan\.calico proto 80 onlink",
                                 c.routes("node2"), re.M) is not None, "node2's route to the new block")
    wait_until(lambda: re.search(rf"^blackhole {re.escape(block_of(ip_e))} proto 80", c.routes("node1"), re.M)
               is not None, "node1's blackhole for its new block")
    bird_cfg = c.tmp / "node1" / "confd" / "config" / "bird_aggr.cfg"
    wait_until(lambda: f"route {block_of(ip_e)} blackhole;" in bird_cfg.read_text(), "node1's BIRD config")
    for src, dst in ((pb, ip_c), (pb, ip_e), (pa, ip_b)):
        assert c.ns.run(src, "ping", "-c", "2", "-W", "3", dst, check=False).returncode == 0, (src, dst)

    # Every route from before is still there once, plus only the new pods' and the new block's.
    for name in c.nodes:
        after = c.routes(name)
        assert len(set(_destinations(after))) == len(_destinations(after)), after
        assert set(_route_lines(before[name])) <= set(_route_lines(after)), after
        extra = set(_destinations(after)) - set(_destinations(before[name]))
        assert extra <= {ip_c, ip_e, block_of(ip_e)}, extra
    assert "found 0 problems" in c.calicoctl("ipam", "check")
