"""``calico-lab demo``: the seed's experiments on the running lab, with per-hop packet evidence.

For the lab's encapsulation, four experiments, as the seed's DEMO section runs them:

1. pod -> pod on different nodes (client on worker1, nginx on worker2);
2. pod -> service: a ClusterIP done as the lab can, an nftables DNAT in the
   client's node (kube-proxy would program the same translation on every node,
   with iptables or IPVS, from Services and EndpointSlices);
3. pod -> pod on the same node;
4. pod -> an external server (a namespace outside every pool) with natOutgoing.

Each runs with tcpdump listening on every interface of the path (the source
pod's cali*, the node's ens192 and tunnel device, the destination node's, the
destination's cali*). The report says, hop by hop, which interface saw the
packet, its outer and inner addresses, the encapsulation (VXLAN UDP 4789,
IPIP protocol 4, or none) and the routing-table line that sent it there, and
ends with calicoctl's views. Where the kernel cannot do IPIP, it says so and
shows nothing invented.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.cluster import Lab, LabError, wait_until
from libcalico import api, names

SERVICE_IP = "10.96.0.10"
EXTERNAL_IP = "192.168.3.200"


@dataclass
class Hop:
    where: str        # "node worker1"
    iface: str
    seen: bool = False
    outer: str = ""
    inner: str = ""
    encap: str = ""
    route: str = ""


@dataclass
class Experiment:
    title: str
    src: str
    dst: str
    hops: list[Hop] = field(default_factory=list)
    ok: bool = False
    note: str = ""


def _capture(lab: Lab, ns: str, iface: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-l", "-n", "-v", "-i", iface, "-c", "6",
                             "icmp or udp port 4789 or ip proto 4 or tcp port 80"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for _ in range(5):
        line = proc.stderr.readline()
        if "listening" in line or not line:
            break
    return proc


def _parse(text: str) -> tuple[str, str, str]:
    """(outer, inner, encapsulation) of the first packet in tcpdump -v output."""
    flat = " ".join(text.split())
    addrs = re.findall(r"(\d+\.\d+\.\d+\.\d+)(?:\.\d+)? > (\d+\.\d+\.\d+\.\d+)", flat)
    if "VXLAN" in flat or ".4789" in flat:
        enc = "VXLAN (UDP 4789)"
    elif "proto IPIP (4)" in flat or "IP-in-IP" in flat or "ipip" in flat.lower():
        enc = "IPIP (IP protocol 4)"
    else:
        enc = "none"
    if not addrs:
        return "", "", enc
    outer = f"{addrs[0][0]} > {addrs[0][1]}"
    inner = f"{addrs[1][0]} > {addrs[1][1]}" if enc != "none" and len(addrs) > 1 else ""
    return outer, inner, enc


def _route(lab: Lab, ns: str, dst: str) -> str:
    r = lab.run(ns, "ip", "route", "get", dst, check=False)
    line = r.stdout.strip().splitlines()[0] if r.stdout.strip() else r.stderr.strip()
    return line.replace(" uid 0", "").strip()


def run_experiment(lab: Lab, title: str, src_pod: str, dst_ip: str, dst_node: str | None, dst_pod: str | None,
                   traffic: list[str], routed_to: str = "", note: str = "") -> Experiment:
    src = lab.state.pods[src_pod]
    exp = Experiment(title, f"{src_pod} ({src['ip']}, {src['node']})",
                     f"{dst_pod or dst_ip} ({dst_ip}{', ' + dst_node if dst_node else ''})")
    tunnel = {"vxlan": "vxlan.calico", "vxlan-crosssubnet": "vxlan.calico", "ipip": "tunl0",
              "ipip-crosssubnet": "tunl0"}.get(lab.state.encap, "")
    points: list[tuple[str, str, str]] = []
    src_ns = lab.state.nodes[src["node"]]["ns"]
    src_if = _host_iface(src_pod)
    # In the order the packet meets them: out of the pod, into the tunnel, onto the wire, and back.
    points.append((src_ns, src_if, f"node {src['node']} (pod side)"))
    if tunnel and _link_exists(lab, src_ns, tunnel):
        points.append((src_ns, tunnel, f"node {src['node']}"))
    points.append((src_ns, "ens192", f"node {src['node']}"))
    if dst_node and dst_node != src["node"]:
        dns = lab.state.nodes[dst_node]["ns"]
        points.append((dns, "ens192", f"node {dst_node}"))
        if tunnel and _link_exists(lab, dns, tunnel):
            points.append((dns, tunnel, f"node {dst_node}"))
    if dst_pod:
        d = lab.state.pods[dst_pod]
        points.append((lab.state.nodes[d["node"]]["ns"], _host_iface(dst_pod), f"node {d['node']} (pod side)"))
    if dst_node is None:
        points.append((lab.ns_name("ext"), "ens192", "external server"))
    caps = [(p, _capture(lab, p[0], p[1])) for p in points]
    r = lab.run(src["ns"], *traffic, check=False, timeout=60)
    exp.ok = r.returncode == 0
    for (ns, iface, where), proc in caps:
        try:
            out, _ = proc.communicate(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        hop = Hop(where, iface)
        hop.seen = bool(out.strip())
        if hop.seen:
            hop.outer, hop.inner, hop.encap = _parse(out)
        hop.route = _route(lab, ns, routed_to or dst_ip)
        exp.hops.append(hop)
    exp.note = note
    if lab.state.encap.startswith("ipip") and not _link_exists(lab, src_ns, "tunl0"):
        exp.note = ("This kernel has no ipip module: tunl0 does not exist, so IPIP cannot carry this traffic "
                    "here. Nothing is shown as if it had (`calico-lab demo --encap ipip` runs IPIP in a VM).")
    return exp


def _host_iface(pod: str) -> str:
    from libcalico.names import veth_name_for_workload

    return veth_name_for_workload("default", pod)


def _link_exists(lab: Lab, ns: str, iface: str) -> bool:
    return lab.run(ns, "ip", "link", "show", iface, check=False).returncode == 0


def ensure_pods(lab: Lab) -> None:
    nodes = list(lab.state.nodes)
    if len(nodes) < 2:
        raise LabError("the demo needs at least 2 nodes")
    wanted = {"client": nodes[1 % len(nodes)], "client-2": nodes[1 % len(nodes)],
              "nginx": nodes[2 % len(nodes)] if len(nodes) > 2 else nodes[0]}
    for pod, node in wanted.items():
        if pod not in lab.state.pods:
            lab.pod_create(pod, node)
    ext = lab.ns_name("ext")
    if ext not in lab.state.namespaces:
        lab.add_ns("ext")
        lab.attach(ext, EXTERNAL_IP)
    # The nginx pod serves HTTP; the client's node translates the service address to it.
    nginx = lab.state.pods["nginx"]
    if "web-nginx" not in lab.state.pids:
        lab.spawn("web-nginx", nginx["ns"], ["python3", "-m", "http.server", "80", "--bind", nginx["ip"]])
    client_node = lab.state.nodes[lab.state.pods["client"]["node"]]["ns"]
    batch = {"nftables": [
        {"add": {"table": {"family": "ip", "name": "lab-service"}}},
        {"delete": {"table": {"family": "ip", "name": "lab-service"}}},
        {"add": {"table": {"family": "ip", "name": "lab-service"}}},
        {"add": {"chain": {"family": "ip", "table": "lab-service", "name": "prerouting", "type": "nat",
                           "hook": "prerouting", "prio": -100, "policy": "accept"}}},
        {"add": {"rule": {"family": "ip", "table": "lab-service", "chain": "prerouting", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": SERVICE_IP}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
            {"dnat": {"addr": nginx["ip"], "port": 80}}]}}}]}
    lab.run(client_node, "nft", "-j", "-f", "-", stdin=json.dumps(batch))
    fetch = f"import urllib.request;urllib.request.urlopen('http://{nginx['ip']}/',timeout=2).read()"

    def serving() -> bool:
        return lab.run(lab.state.pods["client"]["ns"], "python3", "-c", fetch, check=False).returncode == 0
    try:
        wait_until(serving, "the nginx pod's web server", 30)
    except LabError:
        pass  # the service experiment reports it
    peers = [p for p in lab.state.pods if p in wanted]
    for pod in peers:
        for other in peers:
            if pod != other:
                target = lab.state.pods[other]["ip"]

                def reachable(p: str = pod, t: str = target) -> bool:
                    return lab.run(lab.state.pods[p]["ns"], "ping", "-c", "1", "-W", "1", t,
                                   check=False).returncode == 0
                try:
                    wait_until(reachable, f"{pod} to reach {other}", 30)
                except LabError:
                    pass  # reported by the experiment itself


def views(lab: Lab) -> str:
    out = []
    for title, args in (("calicoctl get ippool -o wide", ["get", "ippool", "-o", "wide"]),
                        ("calicoctl ipam show --show-blocks", ["ipam", "show", "--show-blocks"]),
                        ("calicoctl get wep", ["get", "wep"])):
        out.append(f"### {title}\n\n```\n{lab.calicoctl(*args, check=False).rstrip()}\n```\n")
    node = lab.state.pods["client"]["node"]
    ns = lab.state.nodes[node]["ns"]
    env = lab.env(CALICO_BIRD_SOCKET=lab.state.nodes[node].get("bird_socket", ""))
    status = lab.run(ns, "calicoctl", "node", "status", env=env, check=False)
    out.append(f"### calicoctl node status (on {node})\n\n```\n{(status.stdout + status.stderr).rstrip()}\n```\n")
    return "\n".join(out)


def path_picture(e: Experiment) -> str:
    """The packet's way as a one-line picture: each interface that saw it, and how it was carried."""
    seen = [h for h in e.hops if h.seen]
    if not seen:
        return "(no interface saw the packet)"
    parts = [e.src.split(" ")[0]]
    for h in seen:
        carried = "" if h.encap in ("", "none") else f" [{h.encap}]"
        parts.append(f"{h.where.replace(' (pod side)', '')}:{h.iface}{carried}")
    parts.append(e.dst.split(" ")[0])
    return "\n  -> ".join(parts)


POLICY_NS = "shop"


def _np(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": api.NetworkPolicy.KIND,
            "metadata": {"name": name, "namespace": POLICY_NS}, "spec": spec}


def _chain(lab: Lab, node: str, chain: str) -> str:
    return lab.run(lab.state.nodes[node]["ns"], "nft", "list", "chain", "ip", "calico", chain, check=False).stdout


def policy_experiment(lab: Lab) -> list[str]:
    """5. Policy: deny by default in a namespace, allow one client by label, show the drop and the rule's
    counters, then relabel the other client and watch it get in (no restart anywhere)."""
    nodes = list(lab.state.nodes)
    pods = {"shop-web": (nodes[0], {"app": "web"}), "shop-client": (nodes[-1], {"role": "client"}),
            "shop-other": (nodes[-1], {"role": "other"})}
    for pod, (node, labels) in pods.items():
        if pod not in lab.state.pods:
            lab.pod_create(pod, node, dict(labels), namespace=POLICY_NS)
    web = lab.state.pods["shop-web"]
    if "shop-web-http" not in lab.state.pids:
        lab.spawn("shop-web-http", web["ns"], ["python3", "-m", "http.server", "80", "--bind", web["ip"]])
    fetch = f"import urllib.request;urllib.request.urlopen('http://{web['ip']}/',timeout=2).read()"

    def reaches(pod: str) -> bool:
        return lab.run(lab.state.pods[pod]["ns"], "python3", "-c", fetch, check=False).returncode == 0

    try:
        wait_until(lambda: reaches("shop-client"), "the shop's web server", 30)
    except LabError:
        pass
    docs = [_np("default-deny", selector="all()", types=["Ingress"]),
            _np("allow-client", selector="app == 'web'", types=["Ingress"], ingress=[
                {"action": "Allow", "protocol": "TCP", "source": {"selector": "role == 'client'"},
                 "destination": {"ports": [80]}}])]
    lab.calicoctl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    lines = ["## 5. policy: deny by default in a namespace, allow one client by label", "",
             f"Pods in namespace `{POLICY_NS}`: `shop-web` (app=web, {web['ip']}), `shop-client` (role=client), "
             "`shop-other` (role=other). Applied:", "", "```yaml", yaml.safe_dump_all(docs).strip(), "```", ""]
    try:
        wait_until(lambda: not reaches("shop-other"), "the policy to take effect", 30)
    except LabError:
        pass
    got = {pod: reaches(pod) for pod in ("shop-client", "shop-other")}
    lines += [f"- shop-client → shop-web:80: **{'reached' if got['shop-client'] else 'NOT reached'}**",
              f"- shop-other → shop-web:80: **{'dropped' if not got['shop-other'] else 'reached (unexpected)'}**", ""]
    iface = _host_iface_in(lab, "shop-web")
    rule_chain = _chain(lab, web["node"], f"filter-cali-pi-default/{POLICY_NS}/allow-client")
    ep_chain = _chain(lab, web["node"], f"filter-cali-tw-{iface}")
    lines += [f"On {web['node']}, the policy's chain (the allow rule's counter counts shop-client's connection):", "",
              "```", rule_chain.strip(), "```", "",
              "and shop-web's ingress chain (the `End of tier default` drop counts shop-other's packets):", "",
              "```", "\n".join(line for line in ep_chain.splitlines() if "End of tier" in line or "jump" in line),
              "```", ""]
    lab.pod_label("shop-other", {"role": "client"})
    try:
        wait_until(lambda: reaches("shop-other"), "the relabelled pod to get in", 30)
        relabelled = True
    except LabError:
        relabelled = False
    lines += ["`calico-lab pod label shop-other role=client`, then shop-other → shop-web:80: "
              f"**{'reached' if relabelled else 'NOT reached'}** (Felix re-evaluated the selector; no restart).", ""]
    lab.pod_label("shop-other", {"role": "other"})
    lab.calicoctl("delete", "-f", "-", stdin=yaml.safe_dump_all(list(reversed(docs))))
    return lines


def _host_iface_in(lab: Lab, pod: str) -> str:
    return names.veth_name_for_workload(lab.state.pods[pod].get("namespace", "default"), pod)


def report(lab: Lab, exps: list[Experiment], extra: list[str] | None = None) -> str:
    lines = [f"# calico-lab demo — encapsulation `{lab.state.encap}`, BGP `{lab.state.bgp}`", "",
             f"Made {time.strftime('%Y-%m-%d %H:%M:%S')} from the running lab ({len(lab.state.nodes)} nodes).", ""]
    if lab.state.typha:
        lines += [f"Every Felix and confd followed calico-typha: {lab.typha_status()}.", ""]
    for e in exps:
        lines += [f"## {e.title}", "", f"{e.src} → {e.dst}: **{'reached' if e.ok else 'NOT reached'}**", ""]
        if e.note:
            lines += [f"> {e.note}", ""]
        lines += ["```", path_picture(e), "```", "",
                  "| hop | where | interface | saw it | outer | inner | encapsulation | route used there |",
                  "|---|---|---|---|---|---|---|---|"]
        for i, h in enumerate(e.hops, 1):
            lines.append(f"| {i} | {h.where} | `{h.iface}` | {'yes' if h.seen else 'no'} | {h.outer} | {h.inner} | "
                         f"{h.encap if h.seen else ''} | `{h.route}` |")
        lines.append("")
    lines += extra or []
    lines += ["## calicoctl views", "", views(lab)]
    return "\n".join(lines)


def run(lab: Lab, out_dir: Path, *, policy: bool = True) -> Path:
    ensure_pods(lab)
    p = lab.state.pods
    exps = [
        run_experiment(lab, "1. pod → pod on different nodes", "client", p["nginx"]["ip"], p["nginx"]["node"],
                       "nginx", ["ping", "-c", "3", "-W", "2", p["nginx"]["ip"]]),
        run_experiment(lab, "2. pod → service (ClusterIP by nftables DNAT in the client's node)", "client",
                       SERVICE_IP, p["nginx"]["node"], "nginx",
                       ["python3", "-c", f"import urllib.request;urllib.request.urlopen('http://{SERVICE_IP}/',"
                                         "timeout=5).read()"], routed_to=p["nginx"]["ip"],
                       note=f"The client's node rewrote {SERVICE_IP}:80 to nginx {p['nginx']['ip']}:80 in nftables "
                            "prerouting (DNAT) before routing, so past the first hop the packet carries the pod "
                            "address; routes are shown for that address. kube-proxy programs the same translation "
                            "on every node from Services and EndpointSlices."),
        run_experiment(lab, "3. pod → pod on the same node", "client", p["client-2"]["ip"], p["client-2"]["node"],
                       "client-2", ["ping", "-c", "3", "-W", "2", p["client-2"]["ip"]]),
        run_experiment(lab, "4. pod → external server with natOutgoing", "client", EXTERNAL_IP, None, None,
                       ["ping", "-c", "3", "-W", "2", EXTERNAL_IP]),
    ]
    extra = policy_experiment(lab) if policy else []
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"demo-{lab.state.encap}-{lab.state.bgp}.md"
    path.write_text(report(lab, exps, extra))
    return path
