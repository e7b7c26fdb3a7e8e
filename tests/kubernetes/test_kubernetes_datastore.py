"""The Kubernetes datastore end to end: kubectl, calicoctl and the backend against a real HTTP API.

The API server is kubemock (tests/kube_api.py) with the generated
CRDs installed; the kubectl binary and the calicoctl console script run as
subprocesses pointed at it with a kubeconfig. What is Kubernetes-specific in
the backend is tested here: WorkloadEndpoints from Pods, Nodes from Kubernetes
Nodes, Kubernetes NetworkPolicies as ``knp.default.*``, both CRD groups, and
the syncer's re-list after 410 Gone. The generic contract is in
test_backend_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from libcalico import api
from libcalico.backend.api import EventType
from libcalico.backend.kubernetes import KubeConfig, KubernetesBackend, conversion
from libcalico.errors import Conflict, NotFound, OperationNotSupported
from libcalico.model import KVPair, ResourceKey, ResourceListOptions
from libcalico.names import veth_name_for_workload
from libcalico.watching import Syncer, SyncStatus
from tests.kube_api import RunningAPI
from tests.libcalico.test_watching import Recorder, running, wait_for

ROOT = Path(__file__).resolve().parents[2]


async def run(env: dict[str, str], *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run a command without blocking the loop that serves the API."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def k8s_env(k: RunningAPI) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "DATASTORE_", "CALICO_", "KUBE"))}
    env.update({"DATASTORE_TYPE": "kubernetes", "KUBECONFIG": str(k.kubeconfig)})
    return env


def backend_for(k: RunningAPI, group: str = "") -> KubernetesBackend:
    return KubernetesBackend(KubeConfig(kubeconfig=str(k.kubeconfig), api_group=group))


async def kubectl_apply(k: RunningAPI, doc: dict[str, Any] | Path) -> str:
    env = k8s_env(k)
    if isinstance(doc, Path):
        rc, out, err = await run(env, "kubectl", "apply", "-f", str(doc))
    else:
        rc, out, err = await run(env, "kubectl", "apply", "-f", "-", stdin=yaml.safe_dump(doc))
    assert rc == 0, err
    return out


SEED_POOL_WIDE = (
    "NAME                  CIDR            NAT    IPIPMODE   VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   \n"
    "default-ipv4-ippool   10.244.0.0/16   true   Always     Never       false      false              all()      \n"
    "\n")


def pod(name: str, ns: str = "default", node: str = "worker1", ip: str = "10.244.1.5",
        labels: dict[str, str] | None = None, sa: str = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels or {"app": name}}
    if ip:
        meta["annotations"] = {conversion.POD_IP: f"{ip}/32", conversion.POD_IPS: f"{ip}/32",
                               conversion.POD_CONTAINER_ID: "abc123"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "serviceAccountName": sa,
                     "containers": [{"name": "c", "image": "nginx",
                                     "ports": [{"name": "http", "containerPort": 80}]}]}}


# The machine image ships kubectl (1.32 here); a machine without it skips, saying why.
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


@needs_kubectl
class TestKubectlPath:
    async def test_kubectl_apply_of_the_example_then_calicoctl_get_ippool_wide(self, kube_api_v3: RunningAPI) -> None:
        """Calico's no-API-server mode: projectcalico.org/v3 CRDs, so the v3 example applies as is."""
        out = await kubectl_apply(kube_api_v3, ROOT / "examples/ippool.yaml")
        assert out == "ippool.projectcalico.org/default-ipv4-ippool created\n"
        rc, out, err = await run(k8s_env(kube_api_v3), "calicoctl", "get", "ippool", "-o", "wide")
        assert rc == 0, err
        assert out == SEED_POOL_WIDE

    async def test_kubectl_apply_of_a_crd_v1_pool_then_calicoctl_sees_it(self, kube_api: RunningAPI) -> None:
        """The classic group: a crd.projectcalico.org/v1 manifest, labels directly on the object."""
        out = await kubectl_apply(kube_api, ROOT / "examples/kubernetes/ippool-crd-v1.yaml")
        assert out == "ippool.crd.projectcalico.org/default-ipv4-ippool created\n"
        rc, out, err = await run(k8s_env(kube_api), "calicoctl", "get", "ippool", "-o", "wide")
        assert rc == 0, err
        assert out == SEED_POOL_WIDE
        rc, out, err = await run(k8s_env(kube_api), "calicoctl", "get", "ippool", "default-ipv4-ippool", "-o",
                                 "yaml")
        assert yaml.safe_load(out)["metadata"]["labels"] == {"pool": "seed"}

    async def test_calicoctl_writes_are_what_kubectl_reads(self, kube_api: RunningAPI) -> None:
        rc, out, err = await run(k8s_env(kube_api), "calicoctl", "apply", "-f", str(ROOT / "examples/ippool.yaml"))
        assert rc == 0, err
        rc, out, err = await run(k8s_env(kube_api), "kubectl", "get", "ippools.crd.projectcalico.org", "-o", "json")
        assert rc == 0, err
        [item] = json.loads(out)["items"]
        assert item["spec"] == {"cidr": "10.244.0.0/16", "blockSize": 26, "ipipMode": "Always",
                                "vxlanMode": "Never", "natOutgoing": True, "nodeSelector": "all()",
                                "allowedUses": ["Workload", "Tunnel"], "assignmentMode": "Automatic"}
        assert "creationTimestamp" in json.loads(item["metadata"]["annotations"][conversion.METADATA_ANNOTATION])

    async def test_kubectl_rejects_a_pool_with_an_unknown_field_by_the_generated_schema(
            self, kube_api_v3: RunningAPI, tmp_path: Path) -> None:
        doc = yaml.safe_load((ROOT / "examples/ippool.yaml").read_text())
        doc["spec"]["ipipMod"] = "Always"
        rc, out, err = await run(k8s_env(kube_api_v3), "kubectl", "apply", "-f", "-", stdin=yaml.safe_dump(doc))
        assert rc == 1 and 'unknown field "spec.ipipMod"' in err
        doc["spec"].pop("ipipMod")
        doc["spec"]["ipipMode"] = "Sometimes"
        rc, out, err = await run(k8s_env(kube_api_v3), "kubectl", "apply", "-f", "-", stdin=yaml.safe_dump(doc))
        assert rc == 1 and 'spec.ipipMode: Unsupported value: "Sometimes"' in err
        assert kube_api_v3.api.get_object("projectcalico.org/v3", "ippools", "default-ipv4-ippool") is None

    async def test_a_pod_with_calico_annotations_is_a_workload_endpoint_in_calicoctl_get_wep(
            self, kube_api: RunningAPI) -> None:
        await kubectl_apply(kube_api, pod("nginx-1"))
        await kubectl_apply(kube_api, pod("pending", node="", ip=""))  # not scheduled: no endpoint
        await kubectl_apply(kube_api, {**pod("hostnet", ip=""), "spec": {"nodeName": "worker1", "hostNetwork": True,
                                                                          "containers": [{"name": "c"}]}})
        rc, out, err = await run(k8s_env(kube_api), "calicoctl", "get", "wep", "-o", "wide")
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"]
        assert lines[1].split() == ["worker1-k8s-nginx--1-eth0", "nginx-1", "worker1", "10.244.1.5/32",
                                    veth_name_for_workload("default", "nginx-1"), "kns.default,ksa.default.default"]
        assert len([line for line in lines if line.strip()]) == 2


@needs_kubectl
class TestWorkloadEndpointsFromPods:
    async def test_conversion_follows_calico(self, kube_api: RunningAPI) -> None:
        await kubectl_apply(kube_api, pod("web-0", ns="shop", labels={"app": "web"}, sa="web-sa"))
        be = backend_for(kube_api)
        try:
            [kv] = (await be.list(ResourceListOptions("WorkloadEndpoint", namespace="shop"))).items
        finally:
            await be.close()
        w = kv.value
        assert kv.key == ResourceKey("WorkloadEndpoint", "worker1-k8s-web--0-eth0", "shop")
        assert w.metadata.labels == {"app": "web", "projectcalico.org/namespace": "shop",
                                     "projectcalico.org/orchestrator": "k8s",
                                     "projectcalico.org/serviceaccount": "web-sa"}
        assert (w.spec.orchestrator, w.spec.node, w.spec.pod, w.spec.endpoint) == ("k8s", "worker1", "web-0", "eth0")
        assert w.spec.ip_networks == ["10.244.1.5/32"] and w.spec.container_id == "abc123"
        assert w.spec.profiles == ["kns.shop", "ksa.shop.web-sa"]
        assert w.spec.interface_name == veth_name_for_workload("shop", "web-0")
        assert [(p.name, p.protocol, p.port) for p in w.spec.ports] == [("http", "TCP", 80)]
        assert kv.revision == kube_api.api.get_object("v1", "pods", "web-0", "shop")["metadata"]["resourceVersion"]

    async def test_writing_an_endpoint_patches_the_pods_annotations_and_delete_clears_them(
            self, kube_api: RunningAPI) -> None:
        await kubectl_apply(kube_api, pod("db", ip=""))
        be = backend_for(kube_api)
        try:
            key = ResourceKey("WorkloadEndpoint", "worker1-k8s-db-eth0", "default")
            wep = api.WorkloadEndpoint.model_validate({
                "metadata": {"name": key.name, "namespace": "default"},
                "spec": {"node": "worker1", "pod": "db", "endpoint": "eth0", "orchestrator": "k8s",
                         "containerID": "c0ffee", "ipNetworks": ["10.244.1.9/32", "fd00::9/128"]}})
            stored = await be.create(KVPair(key, wep))
            assert stored.value.spec.ip_networks == ["10.244.1.9/32", "fd00::9/128"]
            ann = kube_api.api.get_object("v1", "pods", "db", "default")["metadata"]["annotations"]
            assert ann[conversion.POD_IPS] == "10.244.1.9,fd00::9" and ann[conversion.POD_IP] == "10.244.1.9"
            with pytest.raises(Conflict):
                await be.update(KVPair(key, wep, "1"))
            await be.delete(key)
            ann = kube_api.api.get_object("v1", "pods", "db", "default")["metadata"]["annotations"]
            assert ann[conversion.POD_IP] == "" and ann[conversion.POD_IPS] == ""
            with pytest.raises(NotFound):
                await be.create(KVPair(ResourceKey("WorkloadEndpoint", "worker1-k8s-nopod-eth0", "default"), wep))
        finally:
            await be.close()

    async def test_watching_endpoints_follows_pods(self, kube_api: RunningAPI) -> None:
        be = backend_for(kube_api)
        opts = ResourceListOptions("WorkloadEndpoint")
        try:
            start = (await be.list(opts)).revision
            stream = be.watch(opts, start)
            try:
                await kubectl_apply(kube_api, pod("pending", node="", ip=""))
                await kubectl_apply(kube_api, pod("a"))
                added = await asyncio.wait_for(anext(stream), 10)
                rc, _, err = await run(k8s_env(kube_api), "kubectl", "delete", "pod", "a")
                assert rc == 0, err
                deleted = await asyncio.wait_for(anext(stream), 10)
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        finally:
            await be.close()
        assert (added.type, added.key.name) == (EventType.ADDED, "worker1-k8s-a-eth0")
        assert deleted.type is EventType.DELETED and deleted.old is not None


@needs_kubectl
class TestNodesFromKubernetesNodes:
    async def test_node_annotations_become_the_calico_node_and_updates_write_them_back(
            self, kube_api: RunningAPI) -> None:
        await kubectl_apply(kube_api, {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "worker1", "labels": {"kubernetes.io/hostname": "worker1"},
                         "annotations": {conversion.NODE_IPV4_ADDRESS: "192.168.3.111/24",
                                         conversion.NODE_ASN: "64512",
                                         conversion.NODE_IPIP_TUNNEL: "10.244.1.0"}}})
        be = backend_for(kube_api)
        try:
            kv = await be.get(ResourceKey("Node", "worker1"))
            n = kv.value
            assert n.spec.bgp is not None and n.spec.bgp.ipv4_address == "192.168.3.111/24"
            assert str(n.spec.bgp.as_number) == "64512" and n.spec.bgp.ipv4_ipip_tunnel_addr == "10.244.1.0"
            assert [(r.orchestrator, r.node_name) for r in n.spec.orch_refs] == [("k8s", "worker1")]
            assert n.metadata.labels == {"kubernetes.io/hostname": "worker1"}
            spec = n.spec.model_copy(update={"ipv4_vxlan_tunnel_addr": "10.244.1.1",
                                             "bgp": n.spec.bgp.model_copy(update={"ipv4_ipip_tunnel_addr": ""})})
            updated = await be.update(KVPair(kv.key, n.model_copy(update={"spec": spec}), kv.revision))
            assert updated.value.spec.ipv4_vxlan_tunnel_addr == "10.244.1.1"
            ann = kube_api.api.get_object("v1", "nodes", "worker1")["metadata"]["annotations"]
            assert ann[conversion.NODE_VXLAN_TUNNEL] == "10.244.1.1" and conversion.NODE_IPIP_TUNNEL not in ann
            with pytest.raises(Conflict):
                await be.update(KVPair(kv.key, n, kv.revision))
            with pytest.raises(OperationNotSupported):
                await be.create(KVPair(ResourceKey("Node", "new"), api.Node.model_validate({"metadata": {
                    "name": "new"}})))
        finally:
            await be.close()


@needs_kubectl
class TestKubernetesNetworkPolicy:
    async def test_a_kubernetes_policy_appears_as_knp_default_and_is_read_only(self, kube_api: RunningAPI) -> None:
        await kubectl_apply(kube_api, {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-web", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "fe"}}}],
                                  "ports": [{"protocol": "TCP", "port": 80}]}]}})
        be = backend_for(kube_api)
        try:
            calico_np = api.NetworkPolicy.model_validate({"metadata": {"name": "own", "namespace": "shop"},
                                                          "spec": {"selector": "all()"}})
            await be.create(KVPair(ResourceKey.for_resource(calico_np), calico_np))
            listing = await be.list(ResourceListOptions("NetworkPolicy", namespace="shop"))
            assert [kv.key.name for kv in listing.items] == ["knp.default.allow-web", "own"]
            assert listing.revision.count("/") == 1  # one resourceVersion per source, as Calico composes them
            knp = listing.items[0].value
            assert knp.spec.selector == "projectcalico.org/orchestrator == 'k8s' && app == 'web'"
            assert knp.spec.order == 1000 and knp.spec.types == ["Ingress"]
            rule = knp.spec.ingress[0]
            assert rule.action == "Allow" and rule.protocol == "TCP"
            assert rule.source.selector == "projectcalico.org/orchestrator == 'k8s' && role == 'fe'"
            assert rule.destination.ports == [80]
            with pytest.raises(OperationNotSupported):
                await be.delete(listing.items[0].key)
        finally:
            await be.close()


@needs_kubectl
class TestGroupsAndResync:
    async def test_the_v3_group_is_discovered_when_only_it_is_served(self, kube_api_v3: RunningAPI,
                                                                      kube_api: RunningAPI) -> None:
        for k, group in ((kube_api_v3, "projectcalico.org/v3"), (kube_api, "crd.projectcalico.org/v1")):
            be = backend_for(k)
            try:
                await be.list(ResourceListOptions("IPPool"))
                assert be.api_group == group
            finally:
                await be.close()

    async def test_a_410_gone_makes_the_syncer_relist_and_lose_nothing(self, kube_api: RunningAPI) -> None:
        be = backend_for(kube_api)
        rec = Recorder()
        syncer = Syncer(be, [ResourceListOptions("IPPool")], rec)
        try:
            async with running(syncer):
                await kubectl_apply(kube_api, ROOT / "examples/kubernetes/ippool-crd-v1.yaml")
                await wait_for(lambda: [k.name for k in rec.state] == ["default-ipv4-ippool"], what="pool seen")
                relists = syncer.relists
                # The API server ends the watch with 410 Expired (the watcher fell behind its
                # window), so the syncer must re-list to catch up; the pool created meanwhile
                # must still arrive.
                kube_api.api.drop_watches(expired=True)
                pool = api.IPPool.model_validate({"metadata": {"name": "late"}, "spec": {"cidr": "10.9.0.0/16"}})
                await be.create(KVPair(ResourceKey.for_resource(pool), pool))
                await wait_for(lambda: sorted(k.name for k in rec.state) == ["default-ipv4-ippool", "late"],
                               what="late pool seen after the re-list")
                assert syncer.relists > relists
                assert syncer.status is SyncStatus.IN_SYNC
        finally:
            await be.close()
