"""The syncer definitions are Calico's, defined once, and every component builds its syncer from them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from libcalico import api, syncers
from libcalico.api.ipam import BlockAffinity, BlockAffinitySpec, affinity_name
from libcalico.backend.memory import MemoryBackend
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from libcalico.watching import Update, UpdateType

ROOT = Path(__file__).resolve().parents[2]


class TestDefinitions:
    def test_every_kind_a_definition_follows_is_a_known_kind(self) -> None:
        for definition in (*(syncers.for_typha(t) for t in syncers.ALL_TYPES), syncers.ipam_inputs()):
            for opts in definition.types:
                assert api.by_kind(opts.kind) is not None, (definition.type, opts.kind)

    def test_felix_follows_calicos_felixsyncer_kinds_and_drops_blocks_with_pod_cidrs(self) -> None:
        assert syncers.felix().kinds == (
            "ClusterInformation", "FelixConfiguration", "Tier", "GlobalNetworkPolicy", "NetworkPolicy", "Profile",
            "IPPool", "Node", "WorkloadEndpoint", "HostEndpoint", "NetworkSet", "GlobalNetworkSet",
            "BGPConfiguration", "BGPPeer", "IPAMBlock")
        assert "IPAMBlock" not in syncers.felix(use_pod_cidr=True).kinds

    def test_bgp_narrows_block_affinities_to_its_node_and_typha_runs_it_for_every_node(self) -> None:
        mine = syncers.bgp("node1")
        assert mine.kinds == ("IPPool", "BGPConfiguration", "Node", "BGPPeer", "BGPFilter", "BlockAffinity")
        assert mine.types[-1] == ResourceListOptions("BlockAffinity", node="node1")
        assert syncers.for_typha("bgp").types[-1] == ResourceListOptions("BlockAffinity")

    def test_tunnel_ip_allocation_follows_pools_and_one_node(self) -> None:
        assert syncers.tunnel_ip_allocation("n1").types == (ResourceListOptions("IPPool"),
                                                            ResourceListOptions("Node", name="n1"))
        assert syncers.for_typha("tunnel-ip-allocation").types[1] == ResourceListOptions("Node")

    def test_node_status_follows_calico_node_status(self) -> None:
        assert syncers.node_status().kinds == ("CalicoNodeStatus",)

    def test_an_unknown_syncer_type_is_refused_by_name(self) -> None:
        with pytest.raises(ValueError, match="unknown syncer type 'felx' \\(one of felix, bgp, "
                                             "tunnel-ip-allocation, node-status\\)"):
            syncers.for_typha("felx")


def _hand_made_syncers(path: Path) -> list[str]:
    """Where ``path`` calls ``Syncer(...)`` itself instead of a definition's ``.syncer()``."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Syncer":
            found.append(f"{path.name}:{node.lineno} builds a Syncer by hand")
    return found


def test_no_component_builds_a_syncer_from_its_own_kind_list() -> None:
    hand_made = [f for p in ("felix/daemon.py", "confd/daemon.py", "libcalico/ipam.py")
                 for f in _hand_made_syncers(ROOT / p)]
    assert hand_made == []


async def test_the_bgp_syncer_of_a_node_sees_only_that_nodes_affinities() -> None:
    be = MemoryBackend()
    for node, cidr in (("node1", "10.0.0.0/26"), ("node2", "10.0.0.64/26")):
        name = affinity_name(node, cidr)
        await be.create(KVPair(ResourceKey("BlockAffinity", name), BlockAffinity(
            metadata=api.ObjectMeta(name=name), spec=BlockAffinitySpec(node=node, cidr=cidr, state="confirmed"))))
    opts = syncers.bgp("node1").types[-1]
    assert [kv.value.spec.node for kv in (await be.list(opts)).items] == ["node1"]
    everyone = syncers.for_typha("bgp").types[-1]
    assert sorted(kv.value.spec.node for kv in (await be.list(everyone)).items) == ["node1", "node2"]


async def test_confd_renders_only_its_nodes_confirmed_affinities(tmp_path: Path) -> None:
    """Through Typha confd gets every node's affinities; like Calico's, it keeps its own confirmed ones."""
    from confd import daemon, writer

    confd = daemon.Confd("node1", tmp_path / "config", writer.Commands(check=("true",), socket="/nonexistent"))
    updates = []
    for node, cidr, state in (("node1", "10.0.0.0/26", "confirmed"), ("node1", "10.0.1.0/26", "pending"),
                              ("node2", "10.0.0.64/26", "confirmed")):
        name = affinity_name(node, cidr)
        aff = BlockAffinity(metadata=api.ObjectMeta(name=name), spec=BlockAffinitySpec(node=node, cidr=cidr,
                                                                                       state=state))
        updates.append(Update(UpdateType.NEW, KVPair(ResourceKey("BlockAffinity", name), aff, "1")))
    confd.on_updates(updates)
    assert confd.snapshot().blocks == ["10.0.0.0/26"]
    confd.render_and_write()
