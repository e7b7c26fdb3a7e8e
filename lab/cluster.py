"""A Calico cluster made of network namespaces on this host, that outlives the command that made it.

Topology (the seed's): an ``underlay`` namespace holds the bridge ``br0``
(192.168.3.0/24; 192.168.3.1 is the gateway and etcd's address) and, for
CrossSubnet, ``br1`` (192.168.4.0/24) with routing between them. Each node is a
namespace with ``ens192`` on a bridge, running ``calico-felix`` and, where BGP
carries routes, ``calico-confd`` + BIRD. Pods are namespaces wired by the real
``calico`` CNI plugin, run inside their node. Nothing is connected to the
host's interfaces.

With ``--typha``, ``calico-typha`` runs in the underlay beside the datastore
(192.168.3.1:5473, as the ``calico-typha`` Service would be reached) and every
Felix and confd follows it (``FELIX_TYPHAADDR``, as calico-node's environment
sets it) instead of watching the datastore itself. As its Deployment would,
the lab restarts Typha when it exits (:mod:`lab.supervise`).

With ``--kube-controllers`` (Kubernetes datastore only: it needs the API),
``calico-kube-controllers`` runs in the underlay too, against the lab's API
server, supervised the same way, with ``ENABLED_CONTROLLERS=node,installation``:
the lab serves the operator's ``Installation`` CRD (as tigera-operator installs
it), so pools can be managed from an Installation (docs/kube-controllers.md).

Everything made is recorded in ``<run dir>/state.json`` as it is made, so
``down`` removes it all, also after a crash half-way through ``up``.

The steps themselves (a node's wiring, the environment of Calico's processes,
Felix, confd + BIRD, the CNI plugin's config and run, the health probe) are
:class:`Builder`'s, written once: the tests' cluster (tests/cluster.py) builds
with them too, and keeps its namespaces, files and processes its own way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import data, netns, supervise
from lab.etcd import EtcdServer
from libcalico import api
from libcalico.backend.kubernetes import conversion

GATEWAY = "192.168.3.1"
GATEWAY2 = "192.168.4.1"
DEFAULT_RUN_DIR = Path(os.environ.get("CALICO_LAB_DIR", "/var/run/calico-lab"))
ENCAPS = ("vxlan", "vxlan-crosssubnet", "ipip", "ipip-crosssubnet", "none")
# The Kubernetes datastore's CRD groups, the default first (crds/v3, crds/v1).
API_GROUPS = ("projectcalico.org/v3", "crd.projectcalico.org/v1")
SEED_NODES = ["master1", "worker1", "worker2", "worker3"]
TYPHA_PORT, TYPHA_HEALTH_PORT, TYPHA_METRICS_PORT = 5473, 9098, 9093  # Calico's
KCC_HEALTH_PORT, KCC_METRICS_PORT = 9440, 9094  # deploy/'s probe port; Calico's metrics port
KCC_CONTROLLERS = "node,installation"
# tigera-operator's Installation CRD, as far as the lab needs it: the controller reads spec.calicoNetwork
# and writes status through the subresource (the operator's own schema is not reproduced).
INSTALLATION_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "installations.operator.tigera.io"},
    "spec": {"group": "operator.tigera.io", "scope": "Cluster",
             "names": {"kind": "Installation", "listKind": "InstallationList", "plural": "installations",
                       "singular": "installation"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]}}


class LabError(RuntimeError):
    """A step of the lab failed; the message names the step and the reason."""


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    timeout *= netns.TIMEOUT_SCALE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


def _bin(name: str) -> str:
    return shutil.which(name) or name

# What a health endpoint's status code means, as ``status`` reports it.
_READINESS = {204: "ready", 503: "not ready"}
# The caller's variables that would steer Calico's processes elsewhere: none of them is passed on.
_OWN_VARIABLES = ("ETCD_", "DATASTORE_", "CNI_", "FELIX_", "KUBE")


class Builder(ABC):
    """The steps that make a cluster of namespaces, written once.

    :class:`Lab` builds with them, and so does the tests' cluster (tests/cluster.py): plugging a
    namespace into the underlay, a node's wiring and its Calico resource, the environment Calico's
    processes get, Felix, confd + BIRD, the CNI plugin's network config and run, and the health probe.
    A subclass says only where its things are kept: how a command runs in a namespace (:meth:`run`),
    which datastore the cluster has (:meth:`datastore`), its files (:attr:`workdir`), its underlay,
    the names of its veths (:meth:`_new_port`) and what it records of a process it started
    (:meth:`_started`). The lab records everything in its state file, to outlive the command that made
    it; the tests keep the processes' handles and remove everything when the test ends.
    """

    # --- what a subclass provides ----------------------------------------------------------------

    @property
    @abstractmethod
    def underlay(self) -> str:
        """The namespace that holds the bridges (and the datastore)."""

    @property
    @abstractmethod
    def workdir(self) -> Path:
        """Where logs, confd's directories and BIRD's sockets go."""

    @abstractmethod
    def run(self, ns: str, *cmd: str, env: dict[str, str] | None = None, stdin: str | None = None,
            check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside ``ns`` and wait for it."""

    @abstractmethod
    def datastore(self) -> tuple[str, str]:
        """``("etcdv3", its endpoint)`` or ``("kubernetes", the kubeconfig's path)``."""

    @abstractmethod
    def _new_port(self) -> str:
        """A name for the underlay's end of one more veth, unique in this cluster."""

    def _started(self, key: str, proc: subprocess.Popen[bytes]) -> None:
        """:meth:`spawn` started ``proc`` under ``key``; a subclass may record it."""

    # --- environment -----------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """The environment Calico's processes get: the caller's, less its own Calico and Kubernetes settings,
        with this cluster's datastore and CNI_PATH (where the plugins are); ``extra`` on top."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_VARIABLES)}
        kind, where = self.datastore()
        if kind == "kubernetes":
            env.update({"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": where})
        else:
            env.update({"ETCD_ENDPOINTS": where, "DATASTORE_TYPE": "etcdv3"})
        env["CNI_PATH"] = os.path.dirname(_bin("calico"))
        env.update(extra)
        return env

    def client_env(self, **extra: str) -> dict[str, str]:
        """A Felix's or confd's environment (the lab adds Typha's address when it runs one)."""
        return self.env(**extra)

    def calicoctl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.run(self.underlay, _bin("calicoctl"), *args, env=self.env(), stdin=stdin, check=check).stdout

    def apply(self, doc: dict[str, Any]) -> None:
        self.calicoctl("apply", "-f", "-", stdin=json.dumps(doc))

    def spawn(self, key: str, ns: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside ``ns`` in a session of its own, logging to ``<workdir>/<key>.log``."""
        with open(self.workdir / f"{key}.log", "ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._started(key, proc)
        return proc

    # --- the underlay and the nodes --------------------------------------------------------------

    def add_bridge(self, bridge: str, gateway_cidr: str) -> None:
        """A bridge in the underlay, with the gateway's address on it (one underlay subnet)."""
        self.run(self.underlay, "ip", "link", "add", bridge, "type", "bridge")
        self.run(self.underlay, "ip", "addr", "add", gateway_cidr, "dev", bridge)
        self.run(self.underlay, "ip", "link", "set", bridge, "up")

    def attach(self, ns: str, ip: str, *, bridge: str = "br0", ifname: str = "ens192") -> None:
        """Plug namespace ``ns`` into an underlay bridge, as ``ifname`` with ``ip``/24."""
        port = self._new_port()
        subprocess.run(["ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port, "netns",
                        self.underlay], check=True, capture_output=True)
        self.run(self.underlay, "ip", "link", "set", port, "master", bridge, "up")
        self.run(ns, "ip", "addr", "add", f"{ip}/24", "dev", ifname)
        self.run(ns, "ip", "link", "set", ifname, "up")

    def wire_node(self, ns: str, ip: str, *, bridge: str, gateway: str) -> None:
        """Make namespace ``ns`` a node's host: on the bridge, routing through ``gateway``, forwarding."""
        self.attach(ns, ip, bridge=bridge)
        self.run(ns, "ip", "route", "add", "default", "via", gateway)
        self.run(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    @staticmethod
    def node_resource(name: str, ip: str, *, labels: dict[str, str] | None = None,
                      rr_cluster_id: str = "") -> dict[str, Any]:
        """The Calico Node for a node at ``ip``/24 (a route reflector when ``rr_cluster_id`` is given)."""
        bgp: dict[str, Any] = {"ipv4Address": f"{ip}/24"}
        if rr_cluster_id:
            bgp["routeReflectorClusterID"] = rr_cluster_id
        metadata: dict[str, Any] = {"name": name, **({"labels": labels} if labels is not None else {})}
        return {"apiVersion": "projectcalico.org/v3", "kind": api.Node.KIND, "metadata": metadata, "spec": {"bgp": bgp}}

    def spawn_felix(self, name: str, ns: str, **extra: str) -> subprocess.Popen[bytes]:
        """``calico-felix`` for node ``name`` in its namespace (``extra``: more FELIX_* settings)."""
        return self.spawn(f"felix-{name}", ns, [_bin("calico-felix")],
                          env=self.client_env(FELIX_FELIXHOSTNAME=name, **extra))

    def felix_health(self, ns: str, what: str = "readiness") -> int:
        """The status of Felix's ``/readiness`` (or ``/liveness``) in node namespace ``ns``; 0: no answer."""
        return self.http(ns, f"http://127.0.0.1:9099/{what}")[0]

    def http(self, ns: str, url: str, *, timeout: float = 2) -> tuple[int, str]:
        """GET ``url`` from inside ``ns``: (status, body); (0, "") when nothing answers."""
        code = ("import sys, urllib.request, urllib.error\n"
                "try:\n r = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))\n"
                " print(r.status); print(r.read().decode())\n"
                "except urllib.error.HTTPError as e: print(e.code)\nexcept Exception: print(0)")
        r = self.run(ns, "python3", "-c", code, url, str(timeout * netns.TIMEOUT_SCALE), check=False)
        status, _, body = r.stdout.partition("\n")
        return int(status.strip() or 0), body

    # --- confd and BIRD --------------------------------------------------------------------------

    def confd_dir(self, name: str) -> Path:
        return self.workdir / name / "confd"

    def bird_socket(self, name: str) -> str:
        return str(self.workdir / name / "bird.ctl")

    def confd_onetime(self, name: str, ns: str) -> subprocess.Popen[str]:
        """Start ``calico-confd -onetime`` for node ``name`` (BIRD's first config); :meth:`confd_onetime_done`
        waits for it, so that several nodes' can run at once."""
        confdir = self.confd_dir(name)
        confdir.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(["ip", "netns", "exec", ns, _bin("calico-confd"), "-onetime", "-confdir",
                                 str(confdir), "--bird-socket", self.bird_socket(name)],
                                env=self.client_env(NODENAME=name),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def confd_onetime_done(name: str, proc: subprocess.Popen[str]) -> None:
        _, err = proc.communicate(timeout=120 * netns.TIMEOUT_SCALE)
        if proc.returncode != 0:
            raise LabError(f"calico-confd -onetime on {name} failed: {err.strip()}")

    def spawn_bgp(self, name: str, ns: str) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
        """BIRD on confd's first config, and ``calico-confd`` following the datastore, in node ``name``;
        (BIRD, confd) once BIRD's control socket is there."""
        confdir, sock = self.confd_dir(name), self.bird_socket(name)
        bird = self.spawn(f"bird-{name}", ns, ["bird", "-f", "-c", str(confdir / "config" / "bird.cfg"), "-s", sock])
        confd = self.spawn(f"confd-{name}", ns, [_bin("calico-confd"), "-confdir", str(confdir), "--bird-socket",
                                                 sock], env=self.client_env(NODENAME=name))
        wait_until(lambda: os.path.exists(sock), f"BIRD on {name}", 30)
        return bird, confd

    # --- the CNI plugin --------------------------------------------------------------------------

    def cni_netconf(self, node: str, **conf: Any) -> dict[str, Any]:
        """The network config a runtime hands the calico plugin on ``node``, on this cluster's datastore;
        ``conf`` overrides any of it."""
        kind, where = self.datastore()
        store: dict[str, Any] = ({"datastore_type": "kubernetes", "kubernetes": {"kubeconfig": where}}
                                 if kind == "kubernetes" else {"datastore_type": "etcdv3", "etcd_endpoints": where})
        return {"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "calico", "nodename": node, "mtu": 1400,
                "ipam": {"type": "calico-ipam"}, **store, **conf}

    def run_cni(self, ns: str, command: str, *, netconf: dict[str, Any], container_id: str, netns_name: str,
                pod: str, namespace: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the calico CNI plugin inside node namespace ``ns``, as the kubelet's runtime would, for pod
        ``namespace``/``pod`` in network namespace ``netns_name`` ("" for none)."""
        env = self.env(CNI_COMMAND=command, CNI_CONTAINERID=container_id, CNI_IFNAME="eth0",
                       CNI_NETNS=f"/var/run/netns/{netns_name}" if netns_name else "",
                       CNI_ARGS=f"K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}")
        return self.run(ns, _bin("calico"), env=env, stdin=json.dumps(netconf), check=False, timeout=timeout)


@dataclass
class LabState:
    name: str = "lab"
    encap: str = "vxlan"
    bgp: str = "mesh"
    datastore: str = "etcd"
    api_group: str = "projectcalico.org/v3"
    observability: bool = False
    kubeconfig: str = ""
    namespaces: list[str] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    etcd: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    pods: dict[str, dict[str, str]] = field(default_factory=dict)
    ports: int = 2
    typha: dict[str, str] = field(default_factory=dict)  # addr, state (the supervisor's file); empty: no Typha
    kube_controllers: dict[str, str] = field(default_factory=dict)  # controllers, state; empty: not run


class Lab(Builder):
    def __init__(self, run_dir: Path = DEFAULT_RUN_DIR, name: str = "lab",
                 say: Callable[[str], None] = print) -> None:
        self.dir = run_dir / name
        self.say = say
        self.state = self._load() or LabState(name=name)
        self._lock = threading.RLock()  # pods may be made from several threads at once

    # --- state ------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def _load(self) -> LabState | None:
        if not self.state_file.exists():
            return None
        return LabState(**json.loads(self.state_file.read_text()))

    def _save(self) -> None:
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self.state), indent=2))
            os.replace(tmp, self.state_file)

    @property
    def exists(self) -> bool:
        return self.state_file.exists()

    # --- primitives -------------------------------------------------------------------------

    def ns_name(self, suffix: str) -> str:
        return f"{self.state.name}-{suffix}"

    def add_ns(self, suffix: str) -> str:
        name = self.ns_name(suffix)
        with self._lock:
            self.state.namespaces.append(name)
            self._save()
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.run(name, "ip", "link", "set", "lo", "up")
        return name

    def run(self, ns: str, *cmd: str, env: dict[str, str] | None = None, stdin: str | None = None,
            check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["ip", "netns", "exec", ns, *cmd], env=env, input=stdin, capture_output=True, text=True,
                           timeout=timeout * netns.TIMEOUT_SCALE)
        if check and r.returncode != 0:
            raise LabError(f"`{' '.join(cmd)}` in {ns} failed: {(r.stderr or r.stdout).strip()}")
        return r

    def _started(self, key: str, proc: subprocess.Popen[bytes]) -> None:
        self.state.pids[key] = proc.pid
        self._save()

    @property
    def workdir(self) -> Path:
        return self.dir

    def datastore(self) -> tuple[str, str]:
        if self.state.datastore == "kubernetes":
            return "kubernetes", self.state.kubeconfig
        return "etcdv3", self.state.etcd.get("endpoint", "")

    def _new_port(self) -> str:
        with self._lock:
            self.state.ports += 1
            self._save()
            return f"p{self.state.ports}"

    def alive(self, key: str) -> bool:
        pid = self.state.pids.get(key)
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                return f.read().split()[2] != "Z"
        except OSError:
            return False

    @property
    def underlay(self) -> str:
        return self.ns_name("underlay")

    def client_env(self, **extra: str) -> dict[str, str]:
        """A Felix's or confd's environment: through Typha when the lab has one (calico-node's variables)."""
        typha = {"FELIX_TYPHAADDR": self.state.typha["addr"]} if self.state.typha else {}
        return self.env(**typha, **extra)

    # --- up -----------------------------------------------------------------------------------

    def up(self, nodes: int = 4, encap: str = "vxlan", bgp: str = "mesh", datastore: str = "etcd",
           stays_up: bool = True, api_group: str = "projectcalico.org/v3", observability: bool = False,
           typha: bool = False, kube_controllers: bool = False) -> None:
        """Make the lab. ``stays_up=False`` (a one-shot demo) leaves out the hint on using it afterwards."""
        if encap not in ENCAPS:
            raise LabError(f"--encap must be one of {', '.join(ENCAPS)}, not {encap!r}")
        if bgp not in ("mesh", "rr"):
            raise LabError(f"--bgp must be mesh or rr, not {bgp!r}")
        if not 1 <= nodes <= 8:
            raise LabError("--nodes must be between 1 and 8")
        if self.exists:
            raise LabError(f"a lab already runs from {self.dir}; `calico-lab down` first")
        if datastore not in ("etcd", "kubernetes"):
            raise LabError(f"--datastore must be etcd or kubernetes, not {datastore!r}")
        if api_group not in API_GROUPS:
            raise LabError(f"--api-group must be {' or '.join(API_GROUPS)}, not {api_group!r}")
        if kube_controllers and datastore != "kubernetes":
            raise LabError("--kube-controllers needs --datastore kubernetes (calico-kube-controllers watches the "
                           "Kubernetes API, which an etcd lab does not run)")
        if encap.startswith("ipip") and not netns.kernel_supports("ipip"):
            raise LabError(f"--encap {encap} needs the kernel's ipip module, which this kernel lacks, so such a lab "
                           f"cannot stay up here; `calico-lab demo --encap {encap}` runs the whole demo in a VM "
                           "on Debian's kernel instead and writes its report here")
        self.state.encap, self.state.bgp, self.state.datastore = encap, bgp, datastore
        self.state.api_group, self.state.observability = api_group, observability
        self.dir.mkdir(parents=True, exist_ok=True)
        self._save()
        step = "start"
        try:
            step = "underlay network"
            self.say(f"[1/6] underlay: bridge br0 192.168.3.0/24 in namespace {self.underlay}")
            self.add_ns("underlay")
            for bridge, cidr in (("br0", f"{GATEWAY}/24"), ("br1", f"{GATEWAY2}/24")):
                self.add_bridge(bridge, cidr)
            self.run(self.underlay, "sysctl", "-qw", "net.ipv4.ip_forward=1")

            if datastore == "kubernetes":
                step = "Kubernetes API"
                self._start_kube_api()
            else:
                step = "etcd"
                etcd = EtcdServer(netns=self.underlay, host=GATEWAY)
                shutil.rmtree(etcd.dir, ignore_errors=True)
                etcd.dir = str(self.dir / "etcd")
                os.makedirs(etcd.dir, exist_ok=True)
                self.state.etcd = {"endpoint": etcd.endpoint, "dir": etcd.dir}
                self._save()
                etcd.start()
                assert etcd.proc is not None
                self.state.pids["etcd"] = etcd.proc.pid
                self._save()
                self.say(f"[2/6] etcd: {etcd.endpoint} (in {self.underlay})")

            step = "Calico resources"
            vxlan = {"vxlan": "Always", "vxlan-crosssubnet": "CrossSubnet"}.get(encap, "Never")
            ipip = {"ipip": "Always", "ipip-crosssubnet": "CrossSubnet"}.get(encap, "Never")
            docs: list[dict[str, Any]] = [
                {"apiVersion": "projectcalico.org/v3", "kind": api.IPPool.KIND, "metadata": {"name": "default-ipv4-ippool"},
                 "spec": {"cidr": "10.244.0.0/16", "blockSize": 26, "ipipMode": ipip, "vxlanMode": vxlan,
                          "natOutgoing": True, "nodeSelector": "all()"}},
                {"apiVersion": "projectcalico.org/v3", "kind": api.BGPConfiguration.KIND, "metadata": {"name": "default"},
                 "spec": {"asNumber": 64512, "nodeToNodeMeshEnabled": bgp == "mesh"}}]
            self.say(f"[3/6] pool 10.244.0.0/16 /26, ipipMode {ipip}, vxlanMode {vxlan}, natOutgoing; "
                     f"BGP {bgp}")

            step = "nodes"
            cross = encap.endswith("crosssubnet")
            for i in range(nodes):
                name = SEED_NODES[i] if i < len(SEED_NODES) else f"worker{i}"
                second = cross and i >= (nodes + 1) // 2
                ip = f"192.168.4.{110 + i}" if second else f"192.168.3.{110 + i}"
                docs.append(self._add_node(name, ip, "br1" if second else "br0", GATEWAY2 if second else GATEWAY,
                                           rr=(bgp == "rr" and i == 0)))
            if bgp == "rr":
                for doc in ({"metadata": {"name": "peer-with-rr"},
                             "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}},
                            {"metadata": {"name": "rr-to-all"},
                             "spec": {"nodeSelector": "route-reflector == 'true'", "peerSelector": "all()"}}):
                    docs.append({"apiVersion": "projectcalico.org/v3", "kind": api.BGPPeer.KIND, **doc})
            if datastore == "kubernetes":
                nodes_k8s = [self._k8s_node(d) for d in docs if d["kind"] == api.Node.KIND]
                docs = [d for d in docs if d["kind"] != api.Node.KIND]
                self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(nodes_k8s))
            self.calicoctl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))
            self.say(f"[4/6] {nodes} nodes: " + ", ".join(f"{n} {v['ip']}" for n, v in self.state.nodes.items()))

            if typha:
                step = "Typha"
                self._start_typha()

            step = "Felix"
            for name in self.state.nodes:
                self._start_node_felix(name)
            for name in self.state.nodes:
                self._wait_felix(name)
            self.say("[5/6] calico-felix running on every node")

            step = "confd and BIRD"
            for name, node in self.state.nodes.items():
                node["bird_socket"] = self.bird_socket(name)
            self._save()
            onetime = [self.confd_onetime(name, node["ns"]) for name, node in self.state.nodes.items()]
            for name, proc in zip(self.state.nodes, onetime, strict=True):
                self.confd_onetime_done(name, proc)
            for name, node in self.state.nodes.items():
                self.spawn_bgp(name, node["ns"])
            self.say("[6/6] calico-confd and BIRD running on every node")
            if kube_controllers:
                step = "calico-kube-controllers"
                self._start_kube_controllers()
            if observability:
                step = "Prometheus"
                self._start_prometheus()
        except Exception as exc:
            self.say(f"calico-lab up failed at step '{step}': {exc}")
            self.say("cleaning up what was made...")
            self.down(quiet=True)
            raise LabError(f"step '{step}' failed: {exc}") from None
        if datastore == "kubernetes":
            envtext = f"export DATASTORE_TYPE=kubernetes\nexport KUBECONFIG={self.state.kubeconfig}\n"
        else:
            envtext = f"export DATASTORE_TYPE=etcdv3\nexport ETCD_ENDPOINTS={self.state.etcd['endpoint']}\n"
        (self.dir / "calicoctl.env").write_text(envtext)
        oneline = "export " + " ".join(line.removeprefix("export ") for line in envtext.splitlines())
        if not stays_up:
            self.say("\nThe lab is up; it goes down again after the demo.")
            return
        self.say(f"\nThe lab is up. Use calicoctl against it with:\n  {oneline}\n"
                 f"  ip netns exec {self.underlay} calicoctl get nodes -o wide\n"
                 f"(environment also in {self.dir / 'calicoctl.env'})")

    def _start_kube_api(self) -> None:
        # The mock API server is test infrastructure, a distribution of its own (kubemock/), outside
        # the pycalico wheel: run as a process, never imported here.
        if importlib.util.find_spec("kubemock") is None:
            raise LabError("--datastore kubernetes needs the mock Kubernetes API server kubemock, which is not "
                           "installed: pip install ./kubemock (from pycalico's source tree; "
                           "scripts/install-deps.sh does it)")
        # The group the README's examples use (projectcalico.org/v3) unless asked for the other; serving
        # one group only, Calico's discovery (libcalico.backend.kubernetes) picks it.
        crds = data.crds("v3" if self.state.api_group == API_GROUPS[0] else "v1")
        self.state.kubeconfig = str(self.dir / "kubeconfig")
        self._save()
        self.spawn("kube-api", self.underlay, [sys.executable, "-m", "kubemock", "--host", GATEWAY, "--port",
                                               "6443", "--crds", str(crds), "--kubeconfig", self.state.kubeconfig],
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        wait_until(lambda: os.path.exists(self.state.kubeconfig), "the Kubernetes API server", 30)
        self.say(f"[2/6] Kubernetes API: http://{GATEWAY}:6443 is NOT a kube-apiserver (none can run here): it is "
                 f"the tests' stateful mock API (kubemock) with Calico's CRDs "
                 f"({self.state.api_group}); "
                 f"deploy/ is the path for a real cluster")

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self.run(self.underlay, "kubectl", *args, env=self.env(), stdin=stdin).stdout

    @staticmethod
    def _k8s_node(doc: dict[str, Any]) -> dict[str, Any]:
        """The Kubernetes Node a Calico Node doc stands for (Calico's annotations carry its BGP spec)."""
        bgp = doc["spec"]["bgp"]
        ann = {"projectcalico.org/IPv4Address": bgp["ipv4Address"]}
        if bgp.get("routeReflectorClusterID"):
            ann["projectcalico.org/RouteReflectorClusterID"] = bgp["routeReflectorClusterID"]
        ip = bgp["ipv4Address"].split("/")[0]
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": doc["metadata"]["name"], "labels": doc["metadata"]["labels"],
                             "annotations": ann},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}

    def _add_node(self, name: str, ip: str, bridge: str, gateway: str, rr: bool) -> dict[str, Any]:
        ns = self.add_ns(name)
        self.wire_node(ns, ip, bridge=bridge, gateway=gateway)
        labels = {"kubernetes.io/hostname": name, **({"route-reflector": "true"} if rr else {})}
        self.state.nodes[name] = {"ns": ns, "ip": ip}
        self._save()
        return self.node_resource(name, ip, labels=labels, rr_cluster_id="224.0.0.1" if rr else "")

    def _start_node_felix(self, name: str) -> None:
        node = self.state.nodes[name]
        metrics = {"FELIX_PROMETHEUSMETRICSHOST": node["ip"]} if self.state.observability else {}
        self.spawn_felix(name, node["ns"], FELIX_ROUTEREFRESHINTERVAL="10", **metrics)

    def _start_prometheus(self) -> None:
        """A real Prometheus in the underlay with deploy/observability's config, scraping every Felix."""
        if shutil.which("prometheus") is None:
            raise LabError("--observability needs Prometheus (Debian's prometheus package)")
        obs = data.observability()
        home = self.dir / "prometheus"
        (home / "targets").mkdir(parents=True, exist_ok=True)
        shutil.copy(obs / "prometheus.yml", home / "prometheus.yml")
        felix = [f"{n['ip']}:9091" for n in self.state.nodes.values()]
        typha = [f"{GATEWAY}:{TYPHA_METRICS_PORT}"] if self.state.typha else []
        kcc = [f"{GATEWAY}:{KCC_METRICS_PORT}"] if self.state.kube_controllers else []
        for job, targets in (("felix", felix), ("typha", typha), ("kube-controllers", kcc)):
            (home / "targets" / f"{job}.json").write_text(json.dumps([{"targets": targets}] if targets else []))
        url = f"http://{GATEWAY}:9090"
        self.spawn("prometheus", self.underlay, ["prometheus", f"--config.file={home / 'prometheus.yml'}",
                                                 f"--storage.tsdb.path={home / 'data'}",
                                                 f"--web.listen-address={GATEWAY}:9090"])
        probe = f"import urllib.request; urllib.request.urlopen('{url}/-/ready', timeout=2)"
        wait_until(lambda: self.run(self.underlay, sys.executable, "-c", probe, check=False).returncode == 0,
                   "Prometheus", 60)
        self.say(f"[obs] Prometheus: {url} in namespace {self.underlay}, scraping Felix on "
                 f"{', '.join(felix)}" + (f" and Typha on {typha[0]}" if typha else "") +
                 f"; e.g. ip netns exec {self.underlay} curl '{url}/api/v1/query?query=up'. "
                 f"Dashboards: deploy/observability/dashboards/ (import into Grafana with this Prometheus, "
                 f"or draw them as PNGs: calico-lab dashboards --png DIR)")

    def _wait_felix(self, name: str) -> None:
        def answers() -> bool:
            return self.felix_ready(name) in (204, 503)
        wait_until(answers, f"Felix on {name} to answer health")

    # --- Typha and calico-kube-controllers, kept running -----------------------------------------

    @property
    def typha_process(self) -> _Supervised:
        return _Supervised(self, key="typha", record=self.state.typha, health_port=TYPHA_HEALTH_PORT)

    @property
    def kube_controllers_process(self) -> _Supervised:
        return _Supervised(self, key="kube-controllers", record=self.state.kube_controllers,
                           health_port=KCC_HEALTH_PORT)

    def _start_typha(self) -> None:
        """``calico-typha`` in the underlay on the datastore's address, kept running by :mod:`lab.supervise`."""
        addr = f"{GATEWAY}:{TYPHA_PORT}"
        self.state.typha = {"addr": addr, "state": str(self.dir / "typha.json")}
        self._save()
        env = self.env(TYPHA_SERVERHOST=GATEWAY, TYPHA_SERVERPORT=str(TYPHA_PORT), TYPHA_HEALTHENABLED="true",
                       TYPHA_HEALTHHOST="0.0.0.0", TYPHA_HEALTHPORT=str(TYPHA_HEALTH_PORT),
                       TYPHA_PROMETHEUSMETRICSENABLED="true", TYPHA_PROMETHEUSMETRICSPORT=str(TYPHA_METRICS_PORT),
                       TYPHA_LOGSEVERITYSCREEN="info")
        self.typha_process.start([_bin("calico-typha")], env=env, what="Typha to be ready (every cache in sync)")
        self.say(f"[4/6] calico-typha: {addr} (in {self.underlay}); every Felix and confd follows it "
                 f"(FELIX_TYPHAADDR); the lab restarts it when it exits, as its Deployment would")

    def typha_status(self) -> str:
        """One line: address, process, readiness and connections (Typha's own metrics)."""
        def connections() -> str:
            code, text = self.http(self.underlay, f"http://127.0.0.1:{TYPHA_METRICS_PORT}/metrics")
            active = re.search(r"^typha_connections_active (\S+)$", text, re.M) if code == 200 else None
            streaming = re.findall(r'^typha_connections_streaming\{syncer="([^"]+)"\} (\S+)$', text, re.M)
            by_syncer = ", ".join(f"{t} {float(n):g}" for t, n in streaming if float(n))
            return (f"{float(active.group(1)):g} connections" + (f" ({by_syncer})" if by_syncer else "")
                    if active else "connections unknown")
        return self.typha_process.status(f"Typha {self.state.typha['addr']}", connections)

    def _start_kube_controllers(self) -> None:
        """``calico-kube-controllers`` in the underlay against the lab's API, kept running by :mod:`lab.supervise`.

        Configured as deploy/'s Deployment is (DATASTORE_TYPE=kubernetes, the Lease in kube-system, health
        on 127.0.0.1:9440), with the installation controller enabled; the operator's Installation CRD is
        served first, so its informer has something to watch."""
        self.kubectl("apply", "-f", "-", stdin=json.dumps(INSTALLATION_CRD))
        self.state.kube_controllers = {"controllers": KCC_CONTROLLERS, "state": str(self.dir / "kube-controllers.json")}
        self._save()
        env = self.env(ENABLED_CONTROLLERS=KCC_CONTROLLERS, POD_NAMESPACE="kube-system", LOG_LEVEL="info")
        self.kube_controllers_process.start(
            [_bin("calico-kube-controllers"), "--health-port", str(KCC_HEALTH_PORT)], env=env,
            what="calico-kube-controllers to be ready (leading, its informers up)")
        self.say(f"[kcc] calico-kube-controllers (in {self.underlay}): ENABLED_CONTROLLERS={KCC_CONTROLLERS}, "
                 f"metrics {GATEWAY}:{KCC_METRICS_PORT}; pools follow an operator.tigera.io/v1 Installation "
                 f"(`kubectl apply` one); the lab restarts it when it exits")

    def kube_controllers_status(self) -> str:
        """One line: process, restarts, readiness and the controllers it runs."""
        controllers = self.state.kube_controllers["controllers"]
        return self.kube_controllers_process.status("calico-kube-controllers", lambda: f"controllers {controllers}")

    # --- pods -----------------------------------------------------------------------------------

    def pod_create(self, name: str, node: str, labels: dict[str, str] | None = None, *,
                   namespace: str = "default") -> str:
        if node not in self.state.nodes:
            raise LabError(f"no node {node!r}; nodes: {', '.join(self.state.nodes)}")
        if name in self.state.pods:
            raise LabError(f"pod {name!r} already exists")
        labels = labels or {}
        netns = self.add_ns(f"pod-{name}")
        if self.state.datastore == "kubernetes":
            # What the kubelet does first: the Pod exists, scheduled to the node (and its namespace).
            self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                               "metadata": {"name": namespace}}))
            self.kubectl("apply", "-f", "-", stdin=json.dumps({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                               "labels": {"app": name, **labels}},
                "spec": {"nodeName": node, "serviceAccountName": "default",
                         "containers": [{"name": name, "image": "lab"}]}}))
        else:
            # The namespace's profile, as kube-controllers make it in etcd mode.
            self.apply(conversion.namespace_profile(namespace))
        r = self.run_cni(self.state.nodes[node]["ns"], "ADD", netconf=self.cni_netconf(node),
                         container_id=f"lab-{name}", netns_name=netns, pod=name, namespace=namespace)
        if r.returncode != 0:
            raise LabError(f"CNI ADD of pod {name} on {node} failed: {r.stdout.strip()} {r.stderr.strip()}")
        ip: str = str(json.loads(r.stdout)["ips"][0]["address"]).split("/")[0]
        with self._lock:
            self.state.pods[name] = {"node": node, "ns": netns, "ip": ip, "namespace": namespace}
            self._save()
        if labels and self.state.datastore != "kubernetes":
            self.pod_label(name, dict(labels))
        return ip

    def pod_label(self, name: str, labels: dict[str, str | None]) -> dict[str, str]:
        """Relabel a pod (``k=v`` sets, ``k-`` removes), as ``kubectl label pod`` would; return its labels.

        On the Kubernetes datastore the Pod is relabelled; on etcd its WorkloadEndpoint (Calico's copy of
        the pod's labels). Felix re-evaluates policy for it without a restart."""
        pod = self.state.pods.get(name)
        if pod is None:
            raise LabError(f"no pod {name!r}; pods: {', '.join(self.state.pods) or 'none'}")
        namespace = pod.get("namespace", "default")
        if self.state.datastore == "kubernetes":
            args = [f"{k}-" if v is None else f"{k}={v}" for k, v in labels.items()]
            self.kubectl("label", "pod", name, "-n", namespace, "--overwrite", *args)
            return {k: v for k, v in labels.items() if v is not None}
        weps = json.loads(self.calicoctl("get", "workloadendpoints", "-n", namespace, "-o", "json"))
        items = weps.get("items", [weps]) if isinstance(weps, dict) else weps
        wep = next((w for w in items if w["spec"].get("pod") == name), None)
        if wep is None:
            raise LabError(f"pod {name!r} has no WorkloadEndpoint in namespace {namespace!r}")
        current: dict[str, str] = wep["metadata"].get("labels", {})
        patch = {"metadata": {"labels": dict(labels)}}
        self.calicoctl("patch", "workloadendpoint", wep["metadata"]["name"], "-n", namespace, "-p",
                       json.dumps(patch), "--type", "merge")
        out: dict[str, str | None] = {**current, **labels}
        return {k: v for k, v in out.items() if v is not None}

    # --- status and down ----------------------------------------------------------------------

    def felix_ready(self, name: str) -> int:
        return self.felix_health(self.state.nodes[name]["ns"])

    def bgp_sessions(self, name: str) -> list[str]:
        sock = self.state.nodes[name].get("bird_socket")
        if not sock:
            return []
        r = self.run(self.state.nodes[name]["ns"], "birdc", "-s", sock, "show", "protocols", check=False)
        return [" ".join(line.split()[:1] + line.split()[5:6]) for line in r.stdout.splitlines() if " BGP " in line]

    def status(self) -> str:
        s = self.state
        store = (f"Kubernetes API (mock) {'running' if self.alive('kube-api') else 'NOT running'}"
                 if s.datastore == "kubernetes" else
                 f"etcd {s.etcd.get('endpoint', '?')} ({'running' if self.alive('etcd') else 'NOT running'})")
        lines = [f"lab {s.name}: encap {s.encap}, BGP {s.bgp}, {store}"]
        if s.typha:
            lines.append(f"  {self.typha_status()}")
        if s.kube_controllers:
            lines.append(f"  {self.kube_controllers_status()}")
        for name, node in s.nodes.items():
            procs = " ".join(f"{p}:{'up' if self.alive(f'{p}-{name}') else 'down'}"
                             for p in ("felix", "confd", "bird") if f"{p}-{name}" in s.pids)
            ready = _READINESS.get(self.felix_ready(name), "no answer")
            lines.append(f"  node {name} {node['ip']}: {procs}; Felix {ready}; BGP: "
                         f"{', '.join(self.bgp_sessions(name)) or '-'}")
        for pod, p in s.pods.items():
            lines.append(f"  pod {pod} on {p['node']}: {p['ip']}")
        return "\n".join(lines)

    def down(self, quiet: bool = False) -> None:
        for key, pid in list(self.state.pids.items()):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
        deadline = time.monotonic() + 10
        for key in list(self.state.pids):
            while self.alive(key) and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.alive(key):
                try:
                    os.killpg(self.state.pids[key], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self.state.namespaces):
            netns.remove(ns)
        if not quiet:
            self.say(f"removed {len(self.state.namespaces)} namespaces and {len(self.state.pids)} processes")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.state = LabState(name=self.state.name)


@dataclass(frozen=True)
class _Supervised:
    """A process the lab keeps running in its underlay through :mod:`lab.supervise`, as a Deployment would
    (Typha, calico-kube-controllers): started, found, probed and reported the same way for each."""

    lab: Lab
    key: str  # its supervisor's key in the lab's pids, and its log's name
    record: dict[str, str]  # its part of the lab's state ("state": the supervisor's file); empty: not run
    health_port: int  # where it serves /readiness, inside the underlay

    def start(self, cmd: list[str], *, env: dict[str, str], what: str) -> None:
        """Start ``cmd`` under the supervisor; wait until it is ready (``what``: that, for the error)."""
        env = {**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        self.lab.spawn(self.key, self.lab.underlay,
                       [sys.executable, "-m", "lab.supervise", "--state", self.record["state"], "--", *cmd], env=env)
        wait_until(lambda: self.ready() == 204, what)

    def pid(self) -> int:
        """The running child's pid (the supervisor's child); 0 while it is down or being restarted."""
        if not self.record:
            return 0
        return int(supervise.read_state(Path(self.record["state"])).get("pid") or 0)

    def ready(self) -> int:
        return self.lab.http(self.lab.underlay, f"http://127.0.0.1:{self.health_port}/readiness")[0]

    def status(self, title: str, details: Callable[[], str]) -> str:
        """``title: process[; readiness; details()]``, the process part with its restarts and why the last
        one ended; readiness and details only while it runs."""
        sup = supervise.read_state(Path(self.record["state"]))
        pid = self.pid()
        running = pid > 0 and self.lab.alive(self.key) and os.path.exists(f"/proc/{pid}")
        restarts = int(sup.get("restarts") or 0)
        proc = (f"running (pid {pid})" if running else "NOT running") + (
            f", restarted {restarts} time{'s' * (restarts != 1)} (last: {sup.get('last_exit')})" if restarts else "")
        if not running:
            return f"{title}: {proc}"
        return f"{title}: {proc}; {_READINESS.get(self.ready(), 'no answer')}; {details()}"
