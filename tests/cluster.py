"""A small Calico cluster of network namespaces for tests: underlay, etcd, nodes, Felix, pods.

The underlay is a bridge in its own namespace (``under``), like the seed's
192.168.3.0/24 network; etcd listens there on 192.168.3.1, which is also the
nodes' default gateway (a dead end: nothing routes further). Each node is a
namespace with ``ens192`` on the bridge. Pods are made through the real CNI
plugin running inside their node; Felix runs inside its node. An "external
server" is one more namespace on the bridge. Everything is removed on exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.cluster import GATEWAY
from lab.cluster import wait_until as _lab_wait
from libcalico.backend.kubernetes import conversion
from tests.etcd_server import EtcdServer
from tests.netns import Namespaces

BIN = os.path.dirname(shutil.which("calico") or "/usr/local/bin/calico")


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
class Cluster:
    ns: Namespaces
    tmp: Path
    under: str = ""
    etcd: EtcdServer | None = None
    nodes: dict[str, ClusterNode] = field(default_factory=dict)
    _port: int = 2

    # --- setup ------------------------------------------------------------------------------

    def start(self) -> None:
        self.under = self.ns.add("under")
        self.ns.run(self.under, "ip", "link", "add", "br0", "type", "bridge")
        self.ns.run(self.under, "ip", "addr", "add", f"{GATEWAY}/24", "dev", "br0")
        self.ns.run(self.under, "ip", "link", "set", "br0", "up")
        self.etcd = EtcdServer(netns=self.under, host=GATEWAY)
        self.etcd.start()
        # The namespace's profile, as Calico's kube-controllers make it in etcd mode: pods without
        # policy stay open, and carry the namespace's labels.
        self.calicoctl("apply", "-f", "-", stdin=json.dumps(conversion.namespace_profile("default")))

    def env(self, **extra: str) -> dict[str, str]:
        assert self.etcd is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "DATASTORE_", "CNI_", "FELIX_",
                                                                         "KUBE"))}
        env.update({"ETCD_ENDPOINTS": self.etcd.endpoint, "DATASTORE_TYPE": "etcdv3", "CNI_PATH": BIN})
        env.update(extra)
        return env

    def calicoctl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.ns.run(self.under, "calicoctl", *args, env=self.env(), stdin=stdin, check=check).stdout

    def add_subnet(self, bridge: str, gateway_cidr: str) -> None:
        """A second underlay subnet on its own bridge; ``under`` routes between them (the router)."""
        self.ns.run(self.under, "ip", "link", "add", bridge, "type", "bridge")
        self.ns.run(self.under, "ip", "addr", "add", gateway_cidr, "dev", bridge)
        self.ns.run(self.under, "ip", "link", "set", bridge, "up")
        self.ns.run(self.under, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def attach(self, ns: str, ip: str, ifname: str = "ens192", bridge: str = "br0") -> None:
        """Plug a namespace into an underlay bridge with ``ip``/24."""
        self._port += 1
        port = f"p{self._port}"
        subprocess.run(["ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port, "netns",
                        self.under], check=True)
        self.ns.run(self.under, "ip", "link", "set", port, "master", bridge, "up")
        self.ns.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", ifname)
        self.ns.run(ns, "ip", "link", "set", ifname, "up")

    def add_node(self, name: str, ip: str, bridge: str = "br0", gateway: str = GATEWAY) -> ClusterNode:
        ns = self.ns.add(name)
        self.attach(ns, ip, bridge=bridge)
        self.ns.run(ns, "ip", "route", "add", "default", "via", gateway)
        self.ns.run(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        node = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
                "spec": {"bgp": {"ipv4Address": f"{ip}/24"}}}
        self.calicoctl("apply", "-f", "-", stdin=json.dumps(node))
        self.nodes[name] = ClusterNode(name, ns, ip)
        return self.nodes[name]

    def start_felix(self, name: str, *, ready: bool = True) -> None:
        """Start Felix in its node; wait until it is ready unless ``ready`` is False."""
        node = self.nodes[name]
        node.log = self.tmp / f"felix-{name}.log"
        env = self.env(FELIX_FELIXHOSTNAME=name, FELIX_ROUTEREFRESHINTERVAL="5", FELIX_LOGSEVERITYSCREEN="INFO")
        with open(node.log, "ab") as log:
            node.felix = subprocess.Popen(["ip", "netns", "exec", node.ns, "calico-felix"], env=env, stdout=log,
                                          stderr=subprocess.STDOUT)
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
        confdir = self.tmp / name / "confd"
        confdir.mkdir(parents=True, exist_ok=True)
        node.bird_socket = str(self.tmp / name / "bird.ctl")
        env = self.env(NODENAME=name)
        self.ns.run(node.ns, "calico-confd", "-onetime", "-confdir", str(confdir), "--bird-socket",
                    node.bird_socket, env=env)
        with open(self.tmp / f"bird-{name}.log", "ab") as log:
            node.bird = subprocess.Popen(["ip", "netns", "exec", node.ns, "bird", "-f", "-c",
                                          str(confdir / "config" / "bird.cfg"), "-s", node.bird_socket],
                                         stdout=log, stderr=subprocess.STDOUT)
        with open(self.tmp / f"confd-{name}.log", "ab") as log:
            node.confd = subprocess.Popen(["ip", "netns", "exec", node.ns, "calico-confd", "-confdir", str(confdir),
                                           "--bird-socket", node.bird_socket], env=env, stdout=log,
                                          stderr=subprocess.STDOUT)
        wait_until(lambda: os.path.exists(node.bird_socket), f"BIRD on {name}")

    def birdc(self, name: str, *cmd: str) -> str:
        node = self.nodes[name]
        return self.ns.run(node.ns, "birdc", "-s", node.bird_socket, *cmd, check=False).stdout

    def established(self, name: str) -> list[str]:
        return sorted(line.split()[0] for line in self.birdc(name, "show", "protocols").splitlines()
                      if " BGP " in line and "Established" in line)

    def health(self, name: str, what: str) -> int:
        code = ("import urllib.request,sys\n"
                "try:\n  r=urllib.request.urlopen('http://127.0.0.1:9099/%s',timeout=2); print(r.status)\n"
                "except urllib.error.HTTPError as e: print(e.code)\n"
                "except Exception: print(0)\n" % what)
        out = self.ns.run(self.nodes[name].ns, "python3", "-c", code, check=False).stdout.strip()
        return int(out or 0)

    def metrics(self, name: str) -> str:
        code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9091/metrics').read().decode())"
        return self.ns.run(self.nodes[name].ns, "python3", "-c", code).stdout

    # --- pods -------------------------------------------------------------------------------

    def cni_run(self, node: str, command: str, pod: str, netns: str = "", *, timeout: float = 120,
                namespace: str = "default", **conf: Any) -> subprocess.CompletedProcess[str]:
        """Run the calico CNI plugin inside ``node``, as a runtime would, and return what it did."""
        assert self.etcd is not None
        netconf = {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": node,
                   "mtu": 1400, "etcd_endpoints": self.etcd.endpoint, "datastore_type": "etcdv3",
                   "ipam": {"type": "calico-ipam"}, **conf}
        env = self.env(CNI_COMMAND=command, CNI_CONTAINERID=f"c-{pod}", CNI_IFNAME="eth0",
                       CNI_NETNS=f"/var/run/netns/{netns}" if netns else "",
                       CNI_ARGS=f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}")
        return self.ns.run(self.nodes[node].ns, "calico", env=env, stdin=json.dumps(netconf), check=False,
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
