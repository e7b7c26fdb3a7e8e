"""A small Calico cluster of network namespaces for tests: underlay, etcd, nodes, Felix, pods.

The underlay is a bridge in its own namespace (``under``), like the seed's
192.168.3.0/24 network; etcd listens there on 192.168.3.1, which is also the
nodes' default gateway (a dead end: nothing routes further). Each node is a
namespace with ``ens192`` on the bridge. Pods are made through the real CNI
plugin running inside their node; Felix runs inside its node. An "external
server" is one more namespace on the bridge. Everything is removed on exit.

The cluster is built with the lab's steps (:class:`lab.cluster.Builder`), so a
node, its environment, Felix, confd + BIRD, the CNI plugin's config and the
health probe are made here exactly as ``calico-lab up`` makes them; what is the
tests' own is where things are kept: namespaces in a :class:`Namespaces` that
removes them, files in the test's ``tmp_path``, processes as handles.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.cluster import GATEWAY, Builder
from lab.cluster import wait_until as _lab_wait
from libcalico.backend.kubernetes import conversion
from tests.etcd_server import EtcdServer
from tests.netns import Namespaces


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """The lab's wait, failing as a test assertion."""
    try:
        _lab_wait(cond, what, timeout)
    except Exception as exc:
        raise AssertionError(str(exc)) from None


def block_of(ip: str) -> str:
    """The /26 IPAM block an IPv4 pod address sits in (the pools here use blockSize 26)."""
    a, b, c, d = (int(x) for x in ip.split("."))
    return f"{a}.{b}.{c}.{d & ~63}/26"


@dataclass
class ClusterNode:
    name: str
    ns: str
    ip: str
    felix: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    bird: subprocess.Popen[bytes] | None = None
    confd: subprocess.Popen[bytes] | None = None
    bird_socket: str = ""


@dataclass
class Cluster(Builder):
    ns: Namespaces
    tmp: Path
    under: str = ""
    etcd: EtcdServer | None = None
    nodes: dict[str, ClusterNode] = field(default_factory=dict)
    _port: int = 2

    # --- where things are kept (the lab's Builder does the rest) ----------------------------------

    @property
    def underlay(self) -> str:
        return self.under

    @property
    def workdir(self) -> Path:
        return self.tmp

    def run(self, ns: str, *cmd: str, env: dict[str, str] | None = None, stdin: str | None = None,
            check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.ns.run(ns, *cmd, env=env, stdin=stdin, check=check, timeout=timeout)

    def datastore(self) -> tuple[str, str]:
        assert self.etcd is not None
        return "etcdv3", self.etcd.endpoint

    def _new_port(self) -> str:
        self._port += 1
        return f"p{self._port}"

    # --- setup ------------------------------------------------------------------------------

    def start(self) -> None:
        self.under = self.ns.add("under")
        self.add_bridge("br0", f"{GATEWAY}/24")
        self.etcd = EtcdServer(netns=self.under, host=GATEWAY)
        self.etcd.start()
        # The namespace's profile, as Calico's kube-controllers make it in etcd mode: pods without
        # policy stay open, and carry the namespace's labels.
        self.apply(conversion.namespace_profile("default"))

    def add_subnet(self, bridge: str, gateway_cidr: str) -> None:
        """A second underlay subnet on its own bridge; ``under`` routes between them (the router)."""
        self.add_bridge(bridge, gateway_cidr)
        self.run(self.under, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def add_node(self, name: str, ip: str, bridge: str = "br0", gateway: str = GATEWAY) -> ClusterNode:
        ns = self.ns.add(name)
        self.wire_node(ns, ip, bridge=bridge, gateway=gateway)
        self.apply(self.node_resource(name, ip))
        self.nodes[name] = ClusterNode(name, ns, ip)
        return self.nodes[name]

    def start_felix(self, name: str, *, ready: bool = True) -> None:
        """Start Felix in its node; wait until it is ready unless ``ready`` is False."""
        node = self.nodes[name]
        node.log = self.tmp / f"felix-{name}.log"
        node.felix = self.spawn_felix(name, node.ns, FELIX_ROUTEREFRESHINTERVAL="5",
                                      FELIX_LOGSEVERITYSCREEN="INFO")
        if ready:
            wait_until(lambda: self.health(name, "readiness") == 204, f"Felix on {name} to be ready", 60)

    def stop_felix(self, name: str, kill: bool = False) -> int | None:
        """Stop Felix (SIGTERM, or SIGKILL); return its exit code."""
        node = self.nodes[name]
        code = None
        if node.felix is not None:
            if kill:
                node.felix.kill()
            else:
                node.felix.terminate()
            code = node.felix.wait(30)
            node.felix = None
        return code

    def start_bgp(self, name: str) -> None:
        """confd (once, then following the datastore) and BIRD on its config, inside the node."""
        node = self.nodes[name]
        node.bird_socket = self.bird_socket(name)
        self.confd_onetime_done(name, self.confd_onetime(name, node.ns))
        node.bird, node.confd = self.spawn_bgp(name, node.ns)

    def birdc(self, name: str, *cmd: str) -> str:
        node = self.nodes[name]
        return self.ns.run(node.ns, "birdc", "-s", node.bird_socket, *cmd, check=False).stdout

    def established(self, name: str) -> list[str]:
        return sorted(line.split()[0] for line in self.birdc(name, "show", "protocols").splitlines()
                      if " BGP " in line and "Established" in line)

    def health(self, name: str, what: str) -> int:
        return self.felix_health(self.nodes[name].ns, what)

    def metrics(self, name: str) -> str:
        code, text = self.http(self.nodes[name].ns, "http://127.0.0.1:9091/metrics", timeout=30)
        if code != 200:
            raise AssertionError(f"Felix on {name} served no metrics (status {code})")
        return text

    # --- pods -------------------------------------------------------------------------------

    def cni_run(self, node: str, command: str, pod: str, netns: str = "", *, timeout: float = 120,
                namespace: str = "default", **conf: Any) -> subprocess.CompletedProcess[str]:
        """Run the calico CNI plugin inside ``node``, as a runtime would, and return what it did."""
        return self.run_cni(self.nodes[node].ns, command, netconf=self.cni_netconf(node, **conf),
                            container_id=f"c-{pod}", netns_name=netns, pod=pod, namespace=namespace,
                            timeout=timeout)

    def cni(self, node: str, command: str, pod: str, netns: str = "", *, namespace: str = "default",
            **conf: Any) -> dict[str, Any] | None:
        r = self.cni_run(node, command, pod, netns, namespace=namespace, **conf)
        if r.returncode != 0:
            raise AssertionError(f"CNI {command} of {pod} on {node} failed: {r.stdout} {r.stderr}")
        return json.loads(r.stdout) if r.stdout.strip() else None

    def add_pod(self, node: str, pod: str, *, namespace: str = "default", **conf: Any) -> tuple[str, str]:
        """Make a pod on ``node`` (``conf``: network config to override); return (its network namespace, its
        address). ``namespace`` is the pod's Kubernetes namespace."""
        netns = self.ns.add(pod)
        result = self.cni(node, "ADD", pod, netns, namespace=namespace, **conf)
        assert result is not None
        return netns, result["ips"][0]["address"].split("/")[0]

    def routes(self, node: str) -> str:
        return self.ns.run(self.nodes[node].ns, "ip", "route").stdout

    def stop(self) -> None:
        for n, node in list(self.nodes.items()):
            try:
                self.stop_felix(n, kill=True)
            except Exception:
                pass
            for proc in (node.confd, node.bird):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        if self.etcd is not None:
            self.etcd.cleanup()


SEED_NODES = (("node1", "192.168.3.111"), ("node2", "192.168.3.112"), ("node3", "192.168.3.113"))


@contextlib.contextmanager
def running(prefix: str, tmp_path: Path, *resources: dict[str, Any],
            nodes: Sequence[tuple[str, str]] = SEED_NODES, bgp: bool = False) -> Iterator[Cluster]:
    """A cluster with ``resources`` applied, ``nodes`` (name, address) on the underlay, Felix on each
    and, with ``bgp``, confd and BIRD too; all of it stopped and removed afterwards, also on failure."""
    with Namespaces(prefix) as ns:
        c = Cluster(ns, tmp_path)
        try:
            c.start()
            for resource in resources:
                c.calicoctl("apply", "-f", "-", stdin=json.dumps(resource))
            for name, ip in nodes:
                c.add_node(name, ip)
            for name in c.nodes:
                c.start_felix(name)
                if bgp:
                    c.start_bgp(name)
            yield c
        finally:
            c.stop()


def capture(ns: Namespaces, netns: str, iface: str, bpf: str, count: int = 1) -> subprocess.Popen[str]:
    """Start tcpdump in a namespace; read its stdout after ``wait``."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, "tcpdump", "-l", "-n", "-e", "-i", iface, "-c", str(count),
                             bpf], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    # tcpdump says "listening on ..." once the capture is open.
    seen = ""
    for _ in range(5):
        line = proc.stderr.readline()
        seen += line
        if "listening" in line:
            return proc
        if not line:
            break
    proc.kill()
    raise AssertionError(f"tcpdump did not start: {seen}")
