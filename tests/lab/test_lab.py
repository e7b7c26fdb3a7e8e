"""calico-lab end to end: up, pods through the CNI plugin, traffic, status, down; and down after a crash."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lab.netns import TIMEOUT_SCALE

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def lab(tmp: Path, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CALICO_LAB_DIR": str(tmp)}
    r = subprocess.run(["calico-lab", "--lab-name", name, *args], env=env, capture_output=True, text=True,
                       timeout=300 * TIMEOUT_SCALE)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{prefix}-")]


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_up_pods_traffic_status_demo_down(tmp_path: Path) -> None:
    name = f"lt{os.getpid() % 10000}"
    links_before = root_links()
    try:
        up = lab(tmp_path, name, "up", "--nodes", "3", "--encap", "vxlan")  # master1 .110, worker1 .111, worker2
        assert "[6/6]" in up.stdout and "ETCD_ENDPOINTS=http://192.168.3.1:" in up.stdout
        a = lab(tmp_path, name, "pod", "create", "a", "--node", "master1").stdout.split()[-1]
        b = lab(tmp_path, name, "pod", "create", "b", "--node", "worker1").stdout.split()[-1]
        ping = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until Felix has programmed the other node's block
            ping = lab(tmp_path, name, "exec", "a", "--", "ping", "-c", "1", "-W", "2", b, check=False)
            if ping.returncode == 0:
                break
        assert ping is not None and ping.returncode == 0, ping.stdout if ping else ""
        deadline = time.monotonic() + 60
        while "Mesh_192_168_3_111 Established" not in (status := lab(tmp_path, name, "status").stdout):
            assert time.monotonic() < deadline, status
        assert f"pod a on master1: {a}" in status and "Felix ready" in status
        bad = lab(tmp_path, name, "pod", "create", "x", "--node", "nope", check=False)
        assert bad.returncode == 1 and "no node 'nope'" in bad.stderr

        report = lab(tmp_path, name, "demo").stdout
        assert report.split("## 5.")[0].count("**reached**") == 4, report  # experiments 1-4
        fifth = report.split("## 5.")[1].split("## calicoctl")[0]  # policy: deny by default, allow by label
        assert "shop-client → shop-web:80: **reached**" in fifth, fifth
        assert "shop-other → shop-web:80: **dropped**" in fifth, fifth
        assert "then shop-other → shop-web:80: **reached**" in fifth, fifth  # the relabel let it in
        first = report.split("## 2.")[0]
        assert re.search(r"\| node worker1 \| `ens192` \| yes \| 192\.168\.3\.111 > 192\.168\.3\.112 \| "
                         r"10\.244\.\S+ > 10\.244\.\S+ \| VXLAN \(UDP 4789\)", first), first
        fourth = report.split("## 4.")[1].split("## calicoctl")[0]
        assert "| external server | `ens192` | yes | 192.168.3.111 > 192.168.3.200 |" in fourth  # natOutgoing
        assert "### calicoctl ipam show --show-blocks" in report and "Calico process is running." in report
    finally:
        lab(tmp_path, name, "down", check=False)
    assert namespaces(name) == []
    assert not (tmp_path / name).exists()
    assert root_links() == links_before


@pytest.mark.kernel_vm("ipip")
def test_the_seeds_ipip_demo_hop_by_hop(tmp_path: Path) -> None:
    """The seed's main demo, IPIP Always, as a run of its own (up, experiments, down): between nodes
    the wire carries IP protocol 4 with the node addresses outside and the pods' inside; tunl0 and
    the cali* interfaces see the plain pod packet."""
    name = f"li{os.getpid() % 10000}"
    out = tmp_path / "report"
    # The IPIP story only: policy is the same on every encapsulation and runs on the host (the
    # VXLAN demo test and test_felix_policy_netns); under emulation it would double this test.
    r = lab(tmp_path, name, "demo", "--encap", "ipip", "--nodes", "3", "--no-policy", "--out", str(out),
            check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    report = (out / "demo-ipip-mesh.md").read_text()
    assert report.count("**reached**") == 4, report
    first = report.split("## 2.")[0]
    pods = r"10\.244\.\S+ > 10\.244\.\S+"
    assert re.search(rf"\| node worker1 \| `tunl0` \| yes \| {pods} \|  \| none \|", first), first
    assert re.search(rf"\| node worker1 \| `ens192` \| yes \| 192\.168\.3\.111 > 192\.168\.3\.112 \| {pods} \| "
                     r"IPIP \(IP protocol 4\) \| `10\.244\.\S+ via 192\.168\.3\.112 dev tunl0", first), first
    assert re.search(rf"\| node worker2 \| `tunl0` \| yes \| {pods} \|", first), first
    assert re.search(rf"\| node worker2 \(pod side\) \| `cali\w+` \| yes \| {pods} \|  \| none \|", first), first
    third = report.split("## 3.")[1].split("## 4.")[0]  # same node: never onto the wire
    assert re.search(r"\| node worker1 \| `ens192` \| no \|", third), third
    assert "IPIP" in report.split("### calicoctl get ippool -o wide")[1].split("###")[0]
    assert namespaces(name) == [] and not (tmp_path / name).exists()


def test_down_cleans_up_after_up_was_killed_half_way(tmp_path: Path) -> None:
    name = f"lk{os.getpid() % 10000}"
    env = {**os.environ, "CALICO_LAB_DIR": str(tmp_path)}
    proc = subprocess.Popen(["calico-lab", "--lab-name", name, "up", "--nodes", "3"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / name / "state.json"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if state.exists() and len(json.loads(state.read_text()).get("namespaces", [])) >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert namespaces(name)
    finally:
        r = lab(tmp_path, name, "down", check=False)
    assert r.returncode == 0, r.stderr
    assert namespaces(name) == []
    assert subprocess.run(["pgrep", "-f", f"{tmp_path}/{name}"], capture_output=True).returncode == 1


def prometheus_has_every_felix_panels_metric(name: str, up: str) -> None:
    """The lab's real Prometheus (--observability) scrapes every Felix, and each metric the Felix dashboard's
    panels query has data from every node; each panel's query answers (rates once two scrapes are in)."""
    from tests.deploy.test_deploy_observability import exprs, load, metric_names

    assert "[obs] Prometheus: http://192.168.3.1:9090" in up, up

    def query(q: str) -> list[dict[str, object]]:
        script = ("import json, sys, urllib.parse, urllib.request; print(urllib.request.urlopen("
                  "'http://192.168.3.1:9090/api/v1/query?query=' + urllib.parse.quote(sys.argv[1]), timeout=10)"
                  ".read().decode())")
        r = subprocess.run(["ip", "netns", "exec", f"{name}-underlay", "python3", "-c", script, q],
                           capture_output=True, text=True, timeout=30, check=True)
        doc = json.loads(r.stdout)
        assert doc["status"] == "success", doc
        return doc["data"]["result"]  # type: ignore[no-any-return]

    panels = exprs(load(ROOT / "deploy/observability/dashboards/felix.json"))
    names = sorted({n for _, e in panels for n in metric_names(e)})
    missing: list[str] = names
    deadline = time.monotonic() + 120 * TIMEOUT_SCALE
    while True:  # two scrapes (15 s apart) of both Felixes, so that rate() has two points too
        up_count = query('count(count_over_time(up{job="felix"}[5m]) >= 2 and up{job="felix"} == 1)')
        missing = [n for n in names if len(query(f'{n}{{job="felix"}}')) < 2]
        if up_count and float(up_count[0]["value"][1]) == 2 and not missing:  # type: ignore[index]
            break
        assert time.monotonic() < deadline, f"Prometheus has no data for {missing} (up: {up_count})"
        time.sleep(1)
    for title, expr in panels:
        assert query(expr.replace("$instance", ".*")), f"panel {title!r}: {expr} has no data"


def test_the_lab_on_the_kubernetes_datastore_through_typha(tmp_path: Path) -> None:
    """The same cluster with DATASTORE_TYPE=kubernetes against the lab's mock API server: Kubernetes Nodes,
    Pods made as the kubelet would, WorkloadEndpoints derived from them, IPAM blocks as CRDs; and, as Calico
    runs it with that datastore, every Felix and confd through Typha, which the lab restarts when it dies; and
    calico-kube-controllers, whose installation controller adopts the lab's pool from an operator Installation
    and follows an edit of its encapsulation, VXLAN -> None (this kernel has no ipip module, so not the issue's
    IPIP -> VXLAN): every Felix removes its VXLAN routes and the pods are reached over BIRD's full mesh."""
    name = f"lk8{os.getpid() % 1000}"

    def typha_line(want: str, what: str) -> re.Match[str]:
        deadline = time.monotonic() + 60 * TIMEOUT_SCALE
        while not (m := re.search(want, status := lab(tmp_path, name, "status").stdout)):
            assert time.monotonic() < deadline, f"{what}:\n{status}"
            time.sleep(0.5)
        return m

    def reaches(src: str, ip: str) -> None:
        deadline = time.monotonic() + 60 * TIMEOUT_SCALE
        while lab(tmp_path, name, "exec", src, "--", "ping", "-c", "1", "-W", "2", ip, check=False).returncode:
            assert time.monotonic() < deadline, f"pod {src} never reached {ip}"

    try:
        up = lab(tmp_path, name, "up", "--nodes", "2", "--datastore", "kubernetes", "--typha", "--observability",
                 "--kube-controllers")
        assert "NOT a kube-apiserver" in up.stdout and "DATASTORE_TYPE=kubernetes" in up.stdout
        assert "calico-typha: 192.168.3.1:5473" in up.stdout
        a_ip = lab(tmp_path, name, "pod", "create", "a", "--node", "master1", "--namespace", "shop", "--label",
                   "tier=web").stdout.split()[-1]
        b = lab(tmp_path, name, "pod", "create", "b", "--node", "worker1").stdout.split()[-1]
        reaches("a", b)
        env = {**os.environ, "DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(tmp_path / name / "kubeconfig")}
        weps = subprocess.run(["ip", "netns", "exec", f"{name}-underlay", "calicoctl", "get", "wep"], env=env,
                              capture_output=True, text=True, timeout=60).stdout
        assert "worker1" in weps and f"{b}/32" in weps
        # The README's example is projectcalico.org/v3, the group the lab serves by default: kubectl applies it
        # with its own validation (the CRD's schema, from the server's OpenAPI) and Calico reads it back.
        assert "(projectcalico.org/v3)" in up.stdout
        pool = (ROOT / "examples/ippool.yaml").read_text().replace("default-ipv4-ippool", "readme-pool") \
            .replace("10.244.0.0/16", "10.248.0.0/16")
        applied = subprocess.run(["ip", "netns", "exec", f"{name}-underlay", "kubectl", "apply", "--validate=strict",
                                  "-f", "-"], env=env, input=pool, capture_output=True, text=True, timeout=60)
        assert applied.returncode == 0 and "ippool.projectcalico.org/readme-pool created" in applied.stdout, \
            applied.stdout + applied.stderr
        typo = pool.replace("natOutgoing", "natOutgoin")
        refused = subprocess.run(["ip", "netns", "exec", f"{name}-underlay", "kubectl", "apply", "--validate=strict",
                                  "-f", "-"], env=env, input=typo, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "natOutgoin" in refused.stderr, refused.stdout + refused.stderr
        pools = subprocess.run(["ip", "netns", "exec", f"{name}-underlay", "calicoctl", "get", "ippools"], env=env,
                               capture_output=True, text=True, timeout=60).stdout
        assert "readme-pool" in pools and "10.248.0.0/16" in pools, pools
        prometheus_has_every_felix_panels_metric(name, up.stdout)
        # The dashboards drawn from the lab's Prometheus: one PNG per dashboard, fetched in the underlay.
        drawn = lab(tmp_path, name, "dashboards", "--png", str(tmp_path / "png")).stdout
        for board in ("felix", "typha", "ipam"):
            png = tmp_path / "png" / f"{board}-dashboard.png"
            assert f"dashboard written to {png}" in drawn and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", drawn

        # Both nodes' Felix (felix syncer) and confd (bgp syncer) follow Typha.
        connected = r"; ready; 4 connections \(felix 2, bgp 2\)"
        first = typha_line(r"Typha 192\.168\.3\.1:5473: running \(pid (\d+)\)" + connected, "Typha serving both nodes")
        # Typha dies; the lab restarts it (as its Deployment would) and the clients come back to it.
        os.kill(int(first.group(1)), signal.SIGKILL)
        again = typha_line(r"Typha 192\.168\.3\.1:5473: running \(pid (\d+)\), restarted 1 time \(last: killed by "
                           r"SIGKILL\)" + connected, "Typha restarted, both nodes back")
        assert again.group(1) != first.group(1)
        # A pod made afterwards is programmed from what the new Typha sends: it is reached.
        c = lab(tmp_path, name, "pod", "create", "c", "--node", "master1").stdout.split()[-1]
        reaches("b", c)
        reaches("a", b)

        # Pools from an operator.tigera.io/v1 Installation, through calico-kube-controllers.
        typha_line(r"calico-kube-controllers: running \(pid \d+\); ready; controllers node,installation",
                   "calico-kube-controllers leading with the installation controller")

        def eventually(cond: Callable[[], bool], what: Callable[[], str]) -> None:
            deadline = time.monotonic() + 60 * TIMEOUT_SCALE
            while not cond():
                assert time.monotonic() < deadline, what()
                time.sleep(0.5)

        def kubectl(*args: str, stdin: str | None = None) -> str:
            r = subprocess.run(["ip", "netns", "exec", f"{name}-underlay", "kubectl", *args], env=env, input=stdin,
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
            return r.stdout

        def ready() -> str:
            return kubectl("get", "installation", "default", "-o",
                           "jsonpath={.status.conditions[0].status} {.status.conditions[0].message}")

        def modes() -> tuple[str, str]:
            got = json.loads(subprocess.run(["ip", "netns", "exec", f"{name}-underlay", "calicoctl", "get", "ippool",
                                             "default-ipv4-ippool", "-o", "json"], env=env, capture_output=True,
                                            text=True, timeout=60, check=True).stdout)
            return got["spec"].get("vxlanMode", "Never"), got["spec"].get("ipipMode", "Never")

        def routes(node: str) -> list[str]:
            """The node's kernel routes into the lab's pool (10.244.0.0/16) that lead to other nodes."""
            out = subprocess.run(["ip", "netns", "exec", f"{name}-{node}", "ip", "route"], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
            return [line for line in out.splitlines() if line.startswith("10.244.") and " dev cali" not in line
                    and not line.startswith("blackhole")]

        nodes = ("master1", "worker1")
        for node in nodes:
            eventually(lambda: any("dev vxlan.calico" in r for r in routes(node)),
                       lambda: f"{node}'s VXLAN routes: {routes(node)}")
        # Same name and cidr as the lab's pool, VXLAN: the controller adopts it (Ready), the pool keeps its modes.
        pool_entry = {"name": "default-ipv4-ippool", "cidr": "10.244.0.0/16", "blockSize": 26,
                      "natOutgoing": "Enabled", "nodeSelector": "all()"}
        kubectl("apply", "-f", "-", stdin=json.dumps({
            "apiVersion": "operator.tigera.io/v1", "kind": "Installation", "metadata": {"name": "default"},
            "spec": {"calicoNetwork": {"ipPools": [{**pool_entry, "encapsulation": "VXLAN"}]}}}))
        eventually(lambda: ready() == "True 1 IP pool(s) as specified", lambda: f"the Installation Ready: {ready()}")
        assert modes() == ("Always", "Never")
        # The edit: encapsulation None.
        kubectl("patch", "installation", "default", "--type", "merge", "-p", json.dumps(
            {"spec": {"calicoNetwork": {"ipPools": [{**pool_entry, "encapsulation": "None"}]}}}))
        eventually(lambda: modes() == ("Never", "Never"), lambda: f"the pool's vxlanMode and ipipMode Never: {modes()}")
        for node in nodes:
            # Felix removes its VXLAN routes to the other node's blocks; BIRD (full mesh) programs them instead.
            eventually(lambda: (rs := routes(node)) != [] and all("dev vxlan.calico" not in r and "proto bird" in r
                                                                   for r in rs),
                       lambda: f"{node}'s routes to the other node's blocks from BGP, none through vxlan.calico: "
                               f"{routes(node)}")
        reaches("a", b)
        reaches("b", a_ip)
        reaches("b", c)
    finally:
        lab(tmp_path, name, "down", check=False)
    assert namespaces(name) == []
    assert subprocess.run(["pgrep", "-f", f"{tmp_path}/{name}"], capture_output=True).returncode == 1
