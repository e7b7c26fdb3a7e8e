"""Kubernetes objects <-> Calico v3 resources, as libcalico-go's k8s backend converts them.

Pure functions over JSON dicts, so every rule here is unit-tested without a
server:

* **Custom resources, crd.projectcalico.org/v1.** The v3 metadata that the CRD
  does not carry itself (labels, annotations, creationTimestamp; the name too
  for policies) is kept as JSON in the ``projectcalico.org/metadata``
  annotation. Labels and annotations in ``projectcalico.org/`` stay on the
  object. On read, labels and annotations set directly on the custom resource
  (``kubectl apply`` of a crd.projectcalico.org/v1 manifest) are merged in.
* **Custom resources, projectcalico.org/v3** (Calico's CRD mode without an API
  server): the object is the v3 resource itself.
* **Nodes** from Kubernetes Nodes: labels, the BGP and tunnel addresses from
  Calico's ``projectcalico.org/*`` annotations, an orchRef back to the node and
  the node's InternalIP/ExternalIP addresses. Writing a Node writes those
  annotations and labels back onto the Kubernetes Node.
* **WorkloadEndpoints** from Pods: one per scheduled, non-host-networked pod,
  named ``<node>-k8s-<pod>-eth0``, with the pod's IPs (status, then Calico's
  ``cni.projectcalico.org/podIP(s)`` annotations), the ``cali…`` interface name,
  the pod's labels plus the namespace, orchestrator and service-account labels,
  and the ``kns.``/``ksa.`` profiles.
* **Kubernetes NetworkPolicies** appear as Calico NetworkPolicies named
  ``knp.default.<name>`` in tier default with order 1000.
"""

from __future__ import annotations

import json
from typing import Any

from libcalico.api.endpoints import Node, WorkloadEndpoint
from libcalico.api.meta import Resource
from libcalico.api.policy import GlobalNetworkPolicy, NetworkPolicy, Profile
from libcalico.names import WorkloadEndpointIdentifiers, veth_name_for_workload

JSON = dict[str, Any]

V1_API_VERSION = "crd.projectcalico.org/v1"
V3_API_VERSION = "projectcalico.org/v3"
METADATA_ANNOTATION = "projectcalico.org/metadata"
POLICY_KINDS = frozenset({NetworkPolicy.KIND, GlobalNetworkPolicy.KIND})  # names: compared with wire kinds

# Node annotations (libcalico-go resources/node.go).
NODE_IPV4_ADDRESS = "projectcalico.org/IPv4Address"
NODE_IPV6_ADDRESS = "projectcalico.org/IPv6Address"
NODE_ASN = "projectcalico.org/ASNumber"
NODE_RR_CLUSTER_ID = "projectcalico.org/RouteReflectorClusterID"
NODE_IPIP_TUNNEL = "projectcalico.org/IPv4IPIPTunnelAddr"
NODE_VXLAN_TUNNEL = "projectcalico.org/IPv4VXLANTunnelAddr"
NODE_VXLAN_MAC = "projectcalico.org/VXLANTunnelMACAddr"
NODE_VXLAN_TUNNEL_V6 = "projectcalico.org/IPv6VXLANTunnelAddr"
NODE_VXLAN_MAC_V6 = "projectcalico.org/VXLANTunnelMACAddrV6"
NODE_WG_IPV4 = "projectcalico.org/IPv4WireguardInterfaceAddr"
NODE_WG_IPV6 = "projectcalico.org/IPv6WireguardInterfaceAddr"

# Pod annotations written by Calico's CNI plugin (libcalico-go conversion/constants.go).
POD_IP = "cni.projectcalico.org/podIP"
POD_IPS = "cni.projectcalico.org/podIPs"
POD_CONTAINER_ID = "cni.projectcalico.org/containerID"

LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
NAMESPACE_PROFILE_PREFIX = "kns."
SERVICE_ACCOUNT_PROFILE_PREFIX = "ksa."
KNP_PREFIX = "knp.default."


def _ours(key: str) -> bool:
    return "projectcalico.org/" in key or "operator.tigera.io/" in key


# --- custom resources ------------------------------------------------------------------------

def resource_to_crd(res: Resource, api_version: str) -> JSON:
    """The custom resource that stores ``res`` (without status for v1, as Calico writes it)."""
    wire = res.to_wire()
    meta: JSON = wire.pop("metadata", {})
    wire.pop("apiVersion", None)
    wire.pop("kind", None)
    if api_version == V3_API_VERSION:
        out_meta = {k: v for k, v in meta.items() if k not in ("uid",)}
        return {"apiVersion": api_version, "kind": res.KIND, "metadata": out_meta, **wire}
    stored = {k: v for k, v in meta.items() if k not in ("namespace", "resourceVersion", "uid")}
    if res.KIND not in POLICY_KINDS:
        stored.pop("name", None)
    k8s_meta: JSON = {"name": meta["name"]}
    if res.NAMESPACED:
        k8s_meta["namespace"] = meta.get("namespace", "")
    if meta.get("resourceVersion"):
        k8s_meta["resourceVersion"] = meta["resourceVersion"]
    if meta.get("uid"):
        k8s_meta["uid"] = meta["uid"]
    labels = {k: v for k, v in meta.get("labels", {}).items() if _ours(k)}
    if labels:
        k8s_meta["labels"] = labels
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if _ours(k)}
    annotations[METADATA_ANNOTATION] = json.dumps(stored, separators=(",", ":"), sort_keys=True)
    k8s_meta["annotations"] = annotations
    return {"apiVersion": api_version, "kind": res.KIND, "metadata": k8s_meta, **wire}


_META_FIELDS = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
                "finalizers")


def crd_to_wire(obj: JSON) -> JSON:
    """The v3 wire form of a stored custom resource (either group)."""
    meta = obj.get("metadata", {})
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    out_meta: JSON = {k: meta[k] for k in _META_FIELDS if k in meta and k != "generation"}
    if obj.get("apiVersion") == V1_API_VERSION:
        annotations = dict(meta.get("annotations") or {})
        stored_text = annotations.pop(METADATA_ANNOTATION, None)
        if stored_text is not None:
            stored: JSON = json.loads(stored_text)
            labels = {**(meta.get("labels") or {}), **(stored.get("labels") or {})}
            annotations.update(stored.get("annotations") or {})
            out_meta.update({k: v for k, v in stored.items()
                             if k in _META_FIELDS and k not in ("namespace", "resourceVersion", "uid",
                                                                "labels", "annotations") and v})
            if not stored.get("name") and obj.get("kind") in POLICY_KINDS:
                out_meta["name"] = meta.get("name", "")
            if labels:
                out_meta["labels"] = labels
        out_meta["annotations"] = annotations
        if not annotations:
            out_meta.pop("annotations")
        out_meta["name"] = out_meta.get("name") or meta.get("name", "")
    return {"apiVersion": V3_API_VERSION, "kind": obj.get("kind", ""), "metadata": out_meta, **body}


# --- Nodes -------------------------------------------------------------------------------------

def k8s_node_to_wire(node: JSON) -> JSON:
    meta = node.get("metadata", {})
    ann: dict[str, str] = meta.get("annotations") or {}
    bgp: JSON = {}
    for field, key in (("ipv4Address", NODE_IPV4_ADDRESS), ("ipv6Address", NODE_IPV6_ADDRESS),
                       ("routeReflectorClusterID", NODE_RR_CLUSTER_ID), ("ipv4IPIPTunnelAddr", NODE_IPIP_TUNNEL)):
        if ann.get(key):
            bgp[field] = ann[key]
    if ann.get(NODE_ASN):
        bgp["asNumber"] = ann[NODE_ASN]
    spec: JSON = {}
    if bgp:
        spec["bgp"] = bgp
    for field, key in (("ipv4VXLANTunnelAddr", NODE_VXLAN_TUNNEL), ("vxlanTunnelMACAddr", NODE_VXLAN_MAC),
                       ("ipv6VXLANTunnelAddr", NODE_VXLAN_TUNNEL_V6), ("vxlanTunnelMACAddrV6", NODE_VXLAN_MAC_V6)):
        if ann.get(key):
            spec[field] = ann[key]
    wg = {f: ann[k] for f, k in (("interfaceIPv4Address", NODE_WG_IPV4), ("interfaceIPv6Address", NODE_WG_IPV6))
          if ann.get(k)}
    if wg:
        spec["wireguard"] = wg
    spec["orchRefs"] = [{"nodeName": meta.get("name", ""), "orchestrator": "k8s"}]
    addresses = [{"address": bgp[f], "type": "CalicoNodeIP"} for f in ("ipv4Address", "ipv6Address") if f in bgp]
    for addr in (node.get("status") or {}).get("addresses") or []:
        if addr.get("type") in ("InternalIP", "ExternalIP"):
            addresses.append({"address": addr["address"], "type": addr["type"]})
    if addresses:
        spec["addresses"] = addresses
    out_meta = {k: meta[k] for k in ("name", "uid", "resourceVersion", "creationTimestamp", "labels") if k in meta}
    calico_ann = {k: v for k, v in ann.items() if not k.startswith("projectcalico.org/")}
    if calico_ann:
        out_meta["annotations"] = calico_ann
    return {"apiVersion": V3_API_VERSION, "kind": Node.KIND, "metadata": out_meta, "spec": spec}


def node_patch(wire: JSON) -> JSON:
    """A merge patch that writes a Calico Node's labels and BGP/tunnel fields onto its Kubernetes Node."""
    spec = wire.get("spec") or {}
    bgp = spec.get("bgp") or {}
    wg = spec.get("wireguard") or {}
    ann: dict[str, str | None] = {}
    pairs = ((NODE_IPV4_ADDRESS, bgp.get("ipv4Address")), (NODE_IPV6_ADDRESS, bgp.get("ipv6Address")),
             (NODE_RR_CLUSTER_ID, bgp.get("routeReflectorClusterID")),
             (NODE_IPIP_TUNNEL, bgp.get("ipv4IPIPTunnelAddr")),
             (NODE_ASN, str(bgp["asNumber"]) if bgp.get("asNumber") is not None else None),
             (NODE_VXLAN_TUNNEL, spec.get("ipv4VXLANTunnelAddr")), (NODE_VXLAN_MAC, spec.get("vxlanTunnelMACAddr")),
             (NODE_VXLAN_TUNNEL_V6, spec.get("ipv6VXLANTunnelAddr")),
             (NODE_VXLAN_MAC_V6, spec.get("vxlanTunnelMACAddrV6")),
             (NODE_WG_IPV4, wg.get("interfaceIPv4Address")), (NODE_WG_IPV6, wg.get("interfaceIPv6Address")))
    for key, value in pairs:
        ann[key] = value or None  # None removes the annotation in a merge patch
    meta = wire.get("metadata") or {}
    patch_meta: JSON = {"annotations": ann}
    if "labels" in meta:
        patch_meta["labels"] = meta["labels"]
    if meta.get("resourceVersion"):
        patch_meta["resourceVersion"] = meta["resourceVersion"]
    return {"metadata": patch_meta}


# --- Pods -> WorkloadEndpoints ---------------------------------------------------------------

def pod_is_workload(pod: JSON) -> bool:
    """Calico's IsValidCalicoWorkloadEndpoint: scheduled and not host-networked."""
    spec = pod.get("spec") or {}
    return bool(spec.get("nodeName")) and not spec.get("hostNetwork", False)


def pod_finished(pod: JSON) -> bool:
    meta = pod.get("metadata") or {}
    ann = meta.get("annotations") or {}
    if meta.get("deletionTimestamp") and ann.get(POD_IP, None) == "":
        return True
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded", "Completed")


def pod_ips(pod: JSON) -> list[str]:
    """The pod's addresses as CIDRs: status first, then Calico's annotations (as Calico reads them)."""
    status = pod.get("status") or {}
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    if status.get("podIPs"):
        ips = [p["ip"] for p in status["podIPs"]]
    elif status.get("podIP"):
        ips = [status["podIP"]]
    elif ann.get(POD_IPS):
        ips = [p.strip() for p in ann[POD_IPS].split(",") if p.strip()]
    elif ann.get(POD_IP):
        ips = [ann[POD_IP]]
    else:
        return []
    return [ip if "/" in ip else (f"{ip}/128" if ":" in ip else f"{ip}/32") for ip in ips]


def workload_endpoint_name(pod: JSON) -> str:
    spec = pod.get("spec") or {}
    return WorkloadEndpointIdentifiers(spec.get("nodeName", ""), "k8s", pod["metadata"]["name"], "eth0").name()


def pod_to_wire(pod: JSON) -> JSON:
    """The WorkloadEndpoint of a pod (call only when :func:`pod_is_workload`)."""
    meta = pod["metadata"]
    spec = pod.get("spec") or {}
    ns = meta.get("namespace", "default")
    sa = spec.get("serviceAccountName", "")
    labels = dict(meta.get("labels") or {})
    labels[LABEL_NAMESPACE] = ns
    labels[LABEL_ORCHESTRATOR] = "k8s"
    if sa and len(sa) < 63:
        labels[LABEL_SERVICE_ACCOUNT] = sa
    profiles = [f"{NAMESPACE_PROFILE_PREFIX}{ns}"]
    if sa:
        profiles.append(f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{ns}.{sa}")
    ports = []
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in container.get("ports") or []:
            if p.get("containerPort") and (p.get("hostPort") or p.get("name")):
                proto = (p.get("protocol") or "TCP").upper()
                if proto not in ("TCP", "UDP", "SCTP"):
                    continue
                port: JSON = {"name": p.get("name", ""), "protocol": proto, "port": p["containerPort"]}
                if p.get("hostPort"):
                    port["hostPort"] = p["hostPort"]
                if p.get("hostIP"):
                    port["hostIP"] = p["hostIP"]
                ports.append(port)
    wep_spec: JSON = {
        "orchestrator": "k8s", "node": spec.get("nodeName", ""), "pod": meta["name"], "endpoint": "eth0",
        "interfaceName": veth_name_for_workload(ns, meta["name"]), "profiles": profiles,
        "ipNetworks": [] if pod_finished(pod) else pod_ips(pod),
    }
    ann = meta.get("annotations") or {}
    if ann.get(POD_CONTAINER_ID):
        wep_spec["containerID"] = ann[POD_CONTAINER_ID]
    if sa:
        wep_spec["serviceAccountName"] = sa
    if ports:
        wep_spec["ports"] = ports
    out_meta: JSON = {"name": workload_endpoint_name(pod), "namespace": ns, "labels": labels}
    for k in ("uid", "resourceVersion", "creationTimestamp", "generateName"):
        if meta.get(k):
            out_meta[k] = meta[k]
    return {"apiVersion": V3_API_VERSION, "kind": WorkloadEndpoint.KIND, "metadata": out_meta, "spec": wep_spec}


def wep_pod_patch(wire: JSON, revision: str) -> JSON:
    """The pod status patch by which Calico's CNI plugin records a workload's addresses."""
    spec = wire.get("spec") or {}
    nets = list(spec.get("ipNetworks") or [])
    ips = [n.split("/")[0] for n in nets]
    ann: dict[str, str | None] = {POD_IP: ips[0] if ips else "", POD_IPS: ",".join(ips)}
    if spec.get("containerID"):
        ann[POD_CONTAINER_ID] = spec["containerID"]
    meta: JSON = {"annotations": ann}
    if revision:
        meta["resourceVersion"] = revision
    return {"metadata": meta}


# --- Kubernetes NetworkPolicy -> Calico NetworkPolicy ------------------------------------------

def _quote(v: str) -> str:
    return f"'{v}'"


def label_selector(sel: JSON | None) -> str:
    """A Kubernetes LabelSelector as a Calico selector expression ("" = everything)."""
    if not sel:
        return ""
    parts = [f"{k} == {_quote(v)}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in {{ {', '.join(_quote(v) for v in values)} }}")
        elif op == "NotIn":
            parts.append(f"{key} not in {{ {', '.join(_quote(v) for v in values)} }}")
        elif op == "Exists":
            parts.append(f"has({key})")
        elif op == "DoesNotExist":
            parts.append(f"! has({key})")
    return " && ".join(parts)


def _k8s_peer(peer: JSON, namespace: str) -> list[JSON]:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        entity: JSON = {"nets": [block["cidr"]]}
        if block.get("except"):
            entity["notNets"] = list(block["except"])
        return [entity]
    pod_sel = label_selector(peer.get("podSelector"))
    sel = "projectcalico.org/orchestrator == 'k8s'" + (f" && {pod_sel}" if pod_sel else "")
    entity = {"selector": sel}
    if "namespaceSelector" in peer:
        ns_sel = label_selector(peer["namespaceSelector"])
        entity["namespaceSelector"] = ns_sel or "all()"
    return [entity]


def _k8s_ports(ports: list[JSON]) -> list[tuple[str, JSON]]:
    out: list[tuple[str, JSON]] = []
    for p in ports or [{}]:
        proto = (p.get("protocol") or "TCP").upper()
        port = p.get("port")
        dst: JSON = {}
        if port is not None:
            dst["ports"] = [f"{port}:{p['endPort']}" if p.get("endPort") else port]
        out.append((proto, dst))
    return out


def _knp_rules(rules: list[JSON], direction: str, namespace: str) -> list[JSON]:
    out: list[JSON] = []
    peer_key = "from" if direction == "ingress" else "to"
    for rule in rules:
        peers = rule.get(peer_key) or [None]
        for proto, ports in _k8s_ports(rule.get("ports") or []):
            for peer in peers:
                entities = _k8s_peer(peer, namespace) if peer is not None else [{}]
                for entity in entities:
                    calico_rule: JSON = {"action": "Allow", "protocol": proto}
                    if direction == "ingress":
                        if entity:
                            calico_rule["source"] = entity
                        if ports:
                            calico_rule["destination"] = ports
                    else:
                        dest = {**entity, **ports}
                        if dest:
                            calico_rule["destination"] = dest
                    out.append(calico_rule)
    return out


def knp_to_wire(knp: JSON) -> JSON:
    """A Kubernetes NetworkPolicy as the Calico NetworkPolicy ``knp.default.<name>``."""
    meta = knp["metadata"]
    spec = knp.get("spec") or {}
    ns = meta.get("namespace", "default")
    pod_sel = label_selector(spec.get("podSelector"))
    types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
    calico_spec: JSON = {
        "tier": "default", "order": 1000.0,
        "selector": "projectcalico.org/orchestrator == 'k8s'" + (f" && {pod_sel}" if pod_sel else ""),
        "types": types,
    }
    ingress = _knp_rules(spec.get("ingress") or [], "ingress", ns)
    egress = _knp_rules(spec.get("egress") or [], "egress", ns)
    if ingress:
        calico_spec["ingress"] = ingress
    if egress:
        calico_spec["egress"] = egress
    out_meta: JSON = {"name": f"{KNP_PREFIX}{meta['name']}", "namespace": ns}
    for k in ("uid", "resourceVersion", "creationTimestamp"):
        if meta.get(k):
            out_meta[k] = meta[k]
    return {"apiVersion": V3_API_VERSION, "kind": NetworkPolicy.KIND, "metadata": out_meta, "spec": calico_spec}


# --- Namespaces and ServiceAccounts as profiles -----------------------------------------------------

NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
NAME_LABEL = "projectcalico.org/name"


def namespace_profile(name: str, labels: dict[str, str] | None = None, *, revision: str = "") -> JSON:
    """``NamespaceToProfile``: ``kns.<ns>`` allows everything (policy does the denying) and gives its
    endpoints the namespace's labels as ``pcns.<label>`` (plus ``pcns.projectcalico.org/name``)."""
    apply = {NAMESPACE_LABEL_PREFIX + NAME_LABEL: name}
    apply.update({NAMESPACE_LABEL_PREFIX + k: v for k, v in (labels or {}).items()})
    meta: JSON = {"name": NAMESPACE_PROFILE_PREFIX + name}
    if revision:
        meta["resourceVersion"] = revision
    return {"apiVersion": V3_API_VERSION, "kind": Profile.KIND, "metadata": meta,
            "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}], "labelsToApply": apply}}


def serviceaccount_profile(namespace: str, name: str, labels: dict[str, str] | None = None, *,
                           revision: str = "") -> JSON:
    """``ServiceAccountToProfile``: ``ksa.<ns>.<sa>``, no rules, the account's labels as ``pcsa.<label>``."""
    apply = {SERVICE_ACCOUNT_LABEL_PREFIX + NAME_LABEL: name}
    apply.update({SERVICE_ACCOUNT_LABEL_PREFIX + k: v for k, v in (labels or {}).items()})
    meta: JSON = {"name": f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{name}"}
    if revision:
        meta["resourceVersion"] = revision
    return {"apiVersion": V3_API_VERSION, "kind": Profile.KIND, "metadata": meta, "spec": {"labelsToApply": apply}}


def k8s_namespace_to_wire(ns: JSON) -> JSON:
    meta = ns.get("metadata", {})
    return namespace_profile(meta["name"], meta.get("labels") or {}, revision=meta.get("resourceVersion", ""))


def k8s_serviceaccount_to_wire(sa: JSON) -> JSON:
    meta = sa.get("metadata", {})
    return serviceaccount_profile(meta.get("namespace", ""), meta["name"], meta.get("labels") or {},
                                  revision=meta.get("resourceVersion", ""))
