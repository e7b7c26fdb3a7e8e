"""etcd mode: Kubernetes state copied into Calico's datastore (policy, workloadendpoint, node labels).

On the Kubernetes datastore the backend derives these from the Kubernetes objects
themselves; on etcd, Calico's kube-controllers write them, and so does this:

* **policy** (Calico's ``policy`` controller): each Kubernetes NetworkPolicy becomes
  the Calico NetworkPolicy ``knp.default.<name>`` in its namespace. The conversion is
  the Kubernetes backend's own (:func:`libcalico.backend.kubernetes.conversion.knp_to_wire`),
  so a policy reads the same on both datastores. A full sync deletes the
  ``knp.default.`` policies whose Kubernetes policy is gone.
* **workloadendpoint** (Calico's ``pod`` controller): the CNI plugin creates the
  WorkloadEndpoint; afterwards a change to the pod's labels or service account reaches
  it. The labels are the backend's (:func:`~libcalico.backend.kubernetes.conversion.pod_to_wire`):
  the pod's own plus ``projectcalico.org/namespace``, ``/orchestrator`` and
  ``/serviceaccount``. A pod without an endpoint yet is left alone ("Pod hasn't been
  created by the CNI plugin yet").
* **node labels** (Calico's node controller, ``labels.go``, ``SYNC_NODE_LABELS``): a
  Kubernetes Node's labels are set on the Calico Node that refers to it (``orchRefs``),
  and the ones it set before are kept in the annotation ``projectcalico.org/kube-labels``,
  so a label removed in Kubernetes is removed from the Calico Node while labels set in
  Calico alone stay.

Each reconcile reads the current objects and writes only when they differ.
"""

from __future__ import annotations

import json
import logging

from libcalico import api
from libcalico import client as calico_client
from libcalico.backend.kubernetes import conversion
from libcalico.errors import AlreadyExists, Conflict, NotFound

from controller.kube import JSON, KubeClient

log = logging.getLogger(__name__)

KNP = conversion.KNP_PREFIX
NODE_LABEL_ANNOTATION = "projectcalico.org/kube-labels"


# --- policy ------------------------------------------------------------------------------------

class PolicySync:
    def __init__(self, *, calico: calico_client.Client, kube: KubeClient) -> None:
        self.calico = calico
        self.kube = kube

    async def _write(self, knp: JSON) -> None:
        desired = api.NetworkPolicy.model_validate(conversion.knp_to_wire(knp))
        desired = desired.model_copy(update={"metadata": api.ObjectMeta(name=desired.name,
                                                                        namespace=desired.namespace)})
        try:
            current = await self.calico.get(api.NetworkPolicy, desired.name, desired.namespace)
        except NotFound:
            log.info("Creating policy %s/%s", desired.namespace, desired.name)
            try:
                await self.calico.create(desired)
            except AlreadyExists as exc:
                raise Conflict(f"NetworkPolicy({desired.namespace}/{desired.name}) appeared meanwhile") from exc
            return
        assert isinstance(current, api.NetworkPolicy)
        if current.spec == desired.spec:
            return
        log.info("Updating policy %s/%s", desired.namespace, desired.name)
        await self.calico.update(current.model_copy(update={"spec": desired.spec}))

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            await self.calico.delete(api.NetworkPolicy, name, namespace)
            log.info("Deleted policy %s/%s", namespace, name)
        except NotFound:
            pass

    async def policy(self, namespace: str, name: str) -> None:
        knp = await self.kube.get_networkpolicy(namespace, name)
        if knp is None:
            await self._delete(namespace, KNP + name)
            return
        await self._write(knp)

    async def full_sync(self) -> None:
        """Every Kubernetes policy written; ``knp.default.`` policies whose source is gone deleted."""
        wanted: set[tuple[str, str]] = set()
        for knp in await self.kube.list_networkpolicies():
            meta = knp["metadata"]
            wanted.add((meta.get("namespace", "default"), KNP + meta["name"]))
            await self._write(knp)
        for p in (await self.calico.list(api.NetworkPolicy)).items:
            if p.name.startswith(KNP) and (p.namespace, p.name) not in wanted:
                await self._delete(p.namespace, p.name)


# --- workload endpoints ------------------------------------------------------------------------

class WorkloadEndpointSync:
    def __init__(self, *, calico: calico_client.Client, kube: KubeClient) -> None:
        self.calico = calico
        self.kube = kube

    async def _endpoints(self, namespace: str = "") -> list[api.WorkloadEndpoint]:
        out = []
        for wep in (await self.calico.list(api.WorkloadEndpoint, namespace)).items:
            assert isinstance(wep, api.WorkloadEndpoint)
            if wep.spec.orchestrator == "k8s":
                out.append(wep)
        return out

    async def _merge(self, pod: JSON, weps: list[api.WorkloadEndpoint]) -> None:
        """``MergeWorkloadEndpointData``: the pod's labels and service account onto its endpoints."""
        wire = conversion.pod_to_wire(pod)
        labels = dict(wire["metadata"]["labels"])
        sa = wire["spec"].get("serviceAccountName", "")
        for wep in weps:
            if dict(wep.metadata.labels) == labels and wep.spec.service_account_name == sa:
                continue
            log.info("Writing endpoint %s/%s with updated labels to the Calico datastore", wep.namespace, wep.name)
            meta = wep.metadata.model_copy(update={"labels": labels})
            spec = wep.spec.model_copy(update={"service_account_name": sa})
            await self.calico.update(wep.model_copy(update={"metadata": meta, "spec": spec}))

    async def pod(self, namespace: str, name: str) -> None:
        pod = await self.kube.get_pod(namespace, name)
        if pod is None:
            return   # the CNI plugin deletes the endpoint with the pod
        weps = [w for w in await self._endpoints(namespace) if w.spec.pod == name]
        if not weps:
            log.debug("Pod %s/%s hasn't been created by the CNI plugin yet", namespace, name)
            return
        await self._merge(pod, weps)

    async def full_sync(self) -> None:
        by_pod: dict[tuple[str, str], list[api.WorkloadEndpoint]] = {}
        for wep in await self._endpoints():
            by_pod.setdefault((wep.namespace, wep.spec.pod), []).append(wep)
        for pod in await self.kube.list_pods():
            meta = pod["metadata"]
            weps = by_pod.get((meta.get("namespace", "default"), meta["name"]))
            if weps:
                await self._merge(pod, weps)


# --- node labels ---------------------------------------------------------------------------------

def k8s_node_name(node: api.Node) -> str:
    """``getK8sNodeName``: the Kubernetes Node a Calico Node refers to ("" for none)."""
    for ref in node.spec.orch_refs:
        if ref.orchestrator.lower() == "k8s":
            return ref.node_name
    return ""


def synced_labels(calico_labels: dict[str, str], annotations: dict[str, str],
                  kube_labels: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``syncNodeLabels``: the Calico Node's labels and annotations after a sync.

    Kubernetes' labels win; a label set by an earlier sync (the annotation) and gone from
    Kubernetes is removed; labels set only in Calico stay."""
    try:
        old = json.loads(annotations.get(NODE_LABEL_ANNOTATION, "{}"))
    except ValueError as exc:
        raise ValueError(f"annotation {NODE_LABEL_ANNOTATION} is not a JSON object: {exc}") from exc
    if not isinstance(old, dict):
        raise ValueError(f"annotation {NODE_LABEL_ANNOTATION} is not a JSON object")
    labels = {**calico_labels, **kube_labels}
    for k in old:
        if k not in kube_labels:
            labels.pop(k, None)
    ann = {**annotations, NODE_LABEL_ANNOTATION: json.dumps(kube_labels, separators=(",", ":"), sort_keys=True)}
    return labels, ann


class NodeLabelSync:
    def __init__(self, *, calico: calico_client.Client, kube: KubeClient) -> None:
        self.calico = calico
        self.kube = kube

    async def _sync(self, knode: JSON, cnodes: list[api.Node]) -> None:
        name = knode["metadata"]["name"]
        kube_labels = dict(knode["metadata"].get("labels") or {})
        for cnode in cnodes:
            if k8s_node_name(cnode) != name:
                continue
            try:
                labels, ann = synced_labels(dict(cnode.metadata.labels), dict(cnode.metadata.annotations),
                                            kube_labels)
            except ValueError as exc:
                log.error("Failed to unmarshal node labels of Calico node %s: %s", cnode.name, exc)
                continue
            if labels == dict(cnode.metadata.labels):
                continue   # Calico writes only when a label changed (the annotation follows then)
            await self.calico.update(cnode.model_copy(update={"metadata": cnode.metadata.model_copy(
                update={"labels": labels, "annotations": ann})}))
            log.info("Successfully synced node labels (node %s)", name)

    async def _calico_nodes(self) -> list[api.Node]:
        out = []
        for n in (await self.calico.list(api.Node)).items:
            assert isinstance(n, api.Node)
            out.append(n)
        return out

    async def node(self, name: str) -> None:
        knode = await self.kube.get_node(name)
        if knode is not None:
            await self._sync(knode, await self._calico_nodes())

    async def full_sync(self) -> None:
        cnodes = await self._calico_nodes()
        for knode in await self.kube.list_nodes():
            await self._sync(knode, cnodes)


__all__ = ["NODE_LABEL_ANNOTATION", "NodeLabelSync", "PolicySync", "WorkloadEndpointSync", "k8s_node_name",
           "synced_labels"]
