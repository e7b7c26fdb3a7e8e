"""confd's BIRD config: golden files per scenario, every one accepted by real BIRD (``bird -p -c``).

Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 pytest tests/confd/test_confd.py`` and review the diff.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from confd import render, writer
from libcalico import api

GOLDEN = Path(__file__).parent / "golden" / "confd"


def node(name: str, ip: str, asn: str = "", rr: str = "", **labels: str) -> api.Node:
    bgp: dict[str, Any] = {"ipv4Address": ip}
    if asn:
        bgp["asNumber"] = asn
    if rr:
        bgp["routeReflectorClusterID"] = rr
    return api.Node.model_validate({"metadata": {"name": name, "labels": labels}, "spec": {"bgp": bgp}})


def pool(name: str, cidr: str, **spec: Any) -> api.IPPool:
    return api.IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})


def bgpconfig(**spec: Any) -> api.BGPConfiguration:
    return api.BGPConfiguration.model_validate({"metadata": {"name": "default"}, "spec": spec})


def peer(name: str, **spec: Any) -> api.BGPPeer:
    return api.BGPPeer.model_validate({"metadata": {"name": name}, "spec": spec})


NODES = [node("node1", "192.168.3.111/24"), node("node2", "192.168.3.112/24"), node("node3", "192.168.3.113/24")]


def inputs(me: str = "node1", nodes: list[api.Node] = NODES, pools: list[api.IPPool] | None = None,
           cfg: api.BGPConfiguration | None = None, peers: list[api.BGPPeer] = (),  # type: ignore[assignment]
           blocks: list[str] = ("10.244.56.64/26",)) -> render.Inputs:  # type: ignore[assignment]
    return render.Inputs(me, nodes={n.metadata.name: n for n in nodes},
                         bgp_configs={"default": cfg} if cfg else {},
                         peers={p.metadata.name: p for p in peers},
                         pools={p.metadata.name: p for p in (pools or [pool("default-ipv4-ippool",
                                                                               "10.244.0.0/16",
                                                                               ipipMode="Always")])},
                         blocks=list(blocks))


RR_NODES = [node("node1", "192.168.3.111/24", rr="224.0.0.1", **{"route-reflector": "true"}),
            node("node2", "192.168.3.112/24"), node("node3", "192.168.3.113/24")]
RR_PEERS = [peer("peer-with-rr", nodeSelector="all()", peerSelector="route-reflector == 'true'"),
            peer("rr-to-all", nodeSelector="route-reflector == 'true'", peerSelector="all()")]

SCENARIOS: dict[str, render.Inputs] = {
    "mesh-ipip-always": inputs(),
    "mesh-no-encap": inputs(pools=[pool("p", "10.244.0.0/16")]),
    "mesh-vxlan": inputs(pools=[pool("p", "10.244.0.0/16", vxlanMode="Always")]),
    "cluster-routes-enabled": inputs(pools=[pool("p", "10.244.0.0/16"), pool("q", "10.245.0.0/16",
                                                                             ipipMode="Always")],
                                     cfg=bgpconfig(programClusterRoutes="Enabled")),
    "cluster-routes-disabled": inputs(pools=[pool("p", "10.244.0.0/16"), pool("q", "10.245.0.0/16",
                                                                              ipipMode="Always")],
                                      cfg=bgpconfig(programClusterRoutes="Disabled")),
    "mesh-custom-as-disabled-pool": inputs(cfg=bgpconfig(asNumber="65001"), pools=[
        pool("p", "10.244.0.0/16"), pool("off", "10.9.0.0/16", disabled=True),
        pool("hidden", "10.8.0.0/16", disableBGPExport=True)]),
    "route-reflector-on-rr": inputs("node1", nodes=RR_NODES, cfg=bgpconfig(nodeToNodeMeshEnabled=False),
                                    peers=RR_PEERS),
    "route-reflector-on-client": inputs("node2", nodes=RR_NODES, cfg=bgpconfig(nodeToNodeMeshEnabled=False),
                                        peers=RR_PEERS, blocks=["10.244.218.64/26"]),
    "global-and-node-peers": inputs(peers=[
        peer("tor", peerIP="192.168.3.1", asNumber="65000", keepOriginalNextHop=True),
        peer("node1-only", node="node1", peerIP="192.168.3.2", asNumber="65002", localASNumber="64999"),
        peer("other-node", node="node2", peerIP="192.168.3.3", asNumber="65003")]),
    "services": inputs(cfg=bgpconfig(serviceClusterIPs=[{"cidr": "10.96.0.0/12"}],
                                     serviceExternalIPs=[{"cidr": "172.16.5.0/24"}])),
    "listen-port-ttl-security": inputs(cfg=bgpconfig(listenPort=1790), peers=[
        peer("tor", peerIP="192.168.3.1:1791", asNumber="65000", ttlSecurity=2)]),
    "communities": inputs(pools=[pool("p", "192.168.0.0/16")], cfg=bgpconfig(
        communities=[{"name": "bgp-comm-standard", "value": "100:6532"},
                     {"name": "bgp-comm-large", "value": "100:555:107"}],
        prefixAdvertisements=[{"cidr": "192.168.0.0/16",
                               "communities": ["bgp-comm-standard", "5663:12", "bgp-comm-large"]},
                              {"cidr": "fd00:96::/112", "communities": ["bgp-comm-large", "bgp-comm-large"]}])),
    "ipv6-mesh": inputs(
        nodes=[api.Node.model_validate({"metadata": {"name": n}, "spec": {"bgp": {
            "ipv4Address": f"192.168.3.11{i}/24", "ipv6Address": f"fd00:3::11{i}/64"}}})
            for i, n in ((1, "node1"), (2, "node2"))],
        pools=[pool("v4", "10.244.0.0/16"), pool("v6", "fd00:244::/48", blockSize=122)],
        blocks=["10.244.56.64/26", "fd00:244:0:1::/122"]),
    "no-ip-yet": inputs(nodes=[api.Node.model_validate({"metadata": {"name": "node1"}})]),
}


@pytest.mark.parametrize("case", sorted(SCENARIOS))
def test_rendered_config_matches_golden_and_bird_accepts_it(case: str, tmp_path: Path) -> None:
    files = render.render(SCENARIOS[case])
    folder = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN"):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    for name, text in files.items():
        assert (folder / name).read_text() == text, f"{case}/{name} differs from its golden file"
    out = tmp_path / "config"
    assert writer.write(files, out) == sorted(files) or set(writer.write(files, out)) == set()
    r = subprocess.run(["bird", "-p", "-c", str(out / "bird.cfg")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if "bird6.cfg" in files:
        r = subprocess.run(["bird6", "-p", "-c", str(out / "bird6.cfg")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_communities_as_calicos_template_writes_them() -> None:
    text = render.bird_cfg(SCENARIOS["communities"])
    assert text.startswith("""function apply_communities ()
{
      if ( net ~ 192.168.0.0/16 ) then {
          bgp_large_community.add((100, 555, 107));
          bgp_community.add((100, 6532));
          bgp_community.add((5663, 12));
      }
}
""")  # exactly Calico's compiled_templates/mesh/communities/bird.cfg


def test_ipv6_pools_bring_bird6_files_with_v6_peers() -> None:
    files = render.render(SCENARIOS["ipv6-mesh"])
    assert set(files) == set(render.FILES)
    six = files["bird6.cfg"]
    assert "protocol bgp Mesh_fd00_3__112 from bgp_template {" in six and "neighbor fd00:3::112 as 64512;" in six
    assert "router id 192.168.3.111;" in six and 'include "bird6_aggr.cfg";' in six
    assert "route fd00:244:0:1::/122 blackhole;" in files["bird6_aggr.cfg"]
    assert "fd00" not in files["bird_aggr.cfg"] and "set(" not in six
    # Without IPv6 the bird6 files are written all the same, as Calico's confd writes them: no sessions.
    assert "# IPv6 disabled on this node." in render.render(SCENARIOS["mesh-ipip-always"])["bird6.cfg"]
    assert "bird6.cfg" not in render.render(SCENARIOS["no-ip-yet"])   # no router id: BIRD 6 would refuse it


def test_mesh_names_and_passive_side() -> None:
    text = render.bird_cfg(SCENARIOS["mesh-ipip-always"])
    assert "protocol bgp Mesh_192_168_3_112 from bgp_template {" in text
    assert "protocol bgp Mesh_192_168_3_113 from bgp_template {" in text
    assert "Mesh_192_168_3_111" not in text  # not to itself
    assert text.count("passive on;") == 2 and "router id 192.168.3.111;" in text and "local as 64512;" in text


def test_route_reflector_clients_and_cluster_id() -> None:
    on_rr = render.bird_cfg(SCENARIOS["route-reflector-on-rr"])
    assert "Mesh_" not in on_rr
    assert on_rr.count("rr client;") == 2 and "rr cluster id 224.0.0.1;" in on_rr
    assert "protocol bgp Node_192_168_3_112" in on_rr
    on_client = render.bird_cfg(SCENARIOS["route-reflector-on-client"])
    assert "protocol bgp Node_192_168_3_111" in on_client and "Node_192_168_3_113" not in on_client
    assert "rr client" not in on_client


def test_the_kernel_filter_leaves_to_bird_only_what_felix_does_not_program() -> None:
    felix = "then { reject; } # Cluster routes are handled by Felix."
    ipam = render.bird_ipam_cfg(SCENARIOS["mesh-no-encap"])  # default EnabledNoEncapOnly: BIRD's
    assert "if (net ~ 10.244.0.0/16) then { accept; }\n  accept;" in ipam
    ipam = render.bird_ipam_cfg(SCENARIOS["mesh-ipip-always"])
    assert f"if (net ~ 10.244.0.0/16) {felix}" in ipam
    ipam = render.bird_ipam_cfg(SCENARIOS["cluster-routes-disabled"])  # BIRD programs nothing
    assert f"if (net ~ 10.244.0.0/16) {felix}" in ipam and f"if (net ~ 10.245.0.0/16) {felix}" in ipam
    # Enabled: BIRD's for the unencapsulated pool; IPIP stays Felix's (no krt_tunnel), and confd says so.
    enabled = SCENARIOS["cluster-routes-enabled"]
    ipam = render.bird_ipam_cfg(enabled)
    assert "if (net ~ 10.244.0.0/16) then { accept; }" in ipam and f"if (net ~ 10.245.0.0/16) {felix}" in ipam
    assert "krt_tunnel" in render.warnings(enabled)[0] and render.warnings(SCENARIOS["mesh-ipip-always"]) == []
    # An unknown value (a newer API) falls back to the default, as Calico's confd does.
    assert render.cluster_route_policy(inputs(cfg=bgpconfig())) == render.CLUSTER_ROUTE_POLICIES["EnabledNoEncapOnly"]


def test_a_config_bird_rejects_leaves_the_old_one(tmp_path: Path) -> None:
    out = tmp_path / "config"
    good = render.render(SCENARIOS["mesh-ipip-always"])
    writer.write(good, out)
    bad = {**good, "bird.cfg": good["bird.cfg"] + "protocol bgp Broken {\n"}
    with pytest.raises(writer.CheckFailed, match="rejected the new config"):
        writer.write(bad, out)
    assert (out / "bird.cfg").read_text() == good["bird.cfg"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".stage")] == []
    assert writer.write(good, out) == []  # unchanged: nothing to write, nothing to reload


async def test_bgp_passwords_come_from_kubernetes_secrets(kube_api: Any, tmp_path: Path) -> None:
    """On the Kubernetes datastore a BGPPeer's password is read from the secret it names; BIRD accepts it."""
    import base64

    from confd import daemon
    from libcalico.backend.kubernetes import KubeConfig, KubernetesBackend
    from libcalico.model import KVPair, ResourceKey

    api_ = kube_api.api
    api_._create(next(s for s in api_.served.values() if s.plural == "secrets"), "kube-system", {
        "metadata": {"name": "bgp-secrets"}, "data": {"tor": base64.b64encode(b"s3cret!").decode()}})
    api_._create(next(s for s in api_.served.values() if s.plural == "nodes"), None, {
        "metadata": {"name": "node1", "annotations": {"projectcalico.org/IPv4Address": "192.168.3.111/24"}}})
    be = KubernetesBackend(KubeConfig(kubeconfig=str(kube_api.kubeconfig)))
    try:
        p = peer("tor", peerIP="192.168.3.1", asNumber="65000",
                 password={"secretKeyRef": {"name": "bgp-secrets", "key": "tor"}})
        await be.create(KVPair(ResourceKey.for_resource(p), p))
        confd = daemon.Confd("node1", tmp_path / "config", writer.Commands(socket=str(tmp_path / "none.ctl")))
        await daemon.onetime(be, confd)
    finally:
        await be.close()
    text = (tmp_path / "config" / "bird.cfg").read_text()
    assert 'password "s3cret!";' in text and "protocol bgp Global_192_168_3_1 from bgp_template {" in text


def test_a_peering_kept_between_renders_follows_a_change_of_what_it_depends_on() -> None:
    """The same BGPPeer object across renders (as the daemon holds it): a new listenPort still reaches it."""
    to_node2 = peer("to-node2", peerIP="192.168.3.112", asNumber="64512")
    before = render.bird_cfg(inputs(cfg=bgpconfig(nodeToNodeMeshEnabled=False), peers=[to_node2]))
    after = render.bird_cfg(inputs(cfg=bgpconfig(nodeToNodeMeshEnabled=False, listenPort=1790), peers=[to_node2]))
    assert "neighbor 192.168.3.112 as 64512;" in before and " port " not in before
    # A Calico node's address: peered on its listen port, as Calico's confd peers it.
    assert "protocol bgp Global_192_168_3_112_port_1790" in after and "neighbor 192.168.3.112 port 1790 as 64512;" in after
    assert render.bird_cfg(inputs(cfg=bgpconfig(nodeToNodeMeshEnabled=False), peers=[to_node2])) == before
