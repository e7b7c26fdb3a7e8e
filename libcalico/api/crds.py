"""CustomResourceDefinitions generated from the pydantic models, so a schema is written once.

Calico stores its v3 resources in Kubernetes as custom resources. Two groups
exist, both Calico's own:

* ``crd.projectcalico.org/v1`` — the classic storage group, read and written
  by the Kubernetes backend (and served to ``kubectl`` as projectcalico.org/v3
  by Calico's API server, where one is installed);
* ``projectcalico.org/v3`` — Calico's "no API server" mode, where the v3 kinds
  are CRDs themselves and ``kubectl apply`` of a projectcalico.org/v3 manifest
  works directly. The backend picks the group by discovery, as Calico does.

The schemas come from :meth:`pydantic.BaseModel.model_json_schema` and are
rewritten into Kubernetes' *structural* form: every ``$ref`` inlined, optional
fields as plain types (absent means unset), integer-or-string unions as
``x-kubernetes-int-or-string``, and no JSON-Schema keywords the API server
rejects (``title``, ``default``, ``const``, ``$defs``). Python regex patterns
are dropped: the models validate them (the API server's RE2 might differ).

Node, WorkloadEndpoint and Profile have no CRD: the Kubernetes backend derives them from
Kubernetes Nodes, Pods, Namespaces and ServiceAccounts, as Calico does. ``python -m libcalico.api.crds
crds/`` rewrites the checked-in files; ``--check`` fails when they are stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from libcalico.api import registry
from libcalico.api.bgp import BGPConfiguration, BGPPeer
from libcalico.api.endpoints import ClusterInformation, HostEndpoint, Node, WorkloadEndpoint
from libcalico.api.ippool import IPPool
from libcalico.api.meta import Resource
from libcalico.api.policy import GlobalNetworkPolicy, NetworkPolicy, Profile

V1_GROUP = "crd.projectcalico.org"
V3_GROUP = "projectcalico.org"

# Kinds the Kubernetes datastore derives from Kubernetes' own objects instead of CRDs.
DERIVED_KINDS = frozenset(cls.KIND for cls in (Node, Profile, WorkloadEndpoint))

# Calico's short names and printer columns; they exist on its projectcalico.org/v3 CRDs only.
SHORT_NAMES: dict[type[Resource], list[str]] = {
    BGPConfiguration: ["bgpconfig", "bgpconfigs"],
    ClusterInformation: ["clusterinfo", "clusterinfos"],
    GlobalNetworkPolicy: ["gnp", "cgnp"],
    HostEndpoint: ["hep", "heps"],
    NetworkPolicy: ["cnp", "caliconetworkpolicy"],
}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
PRINTER_COLUMNS: dict[type[Resource], list[dict[str, str]]] = {
    IPPool: [{"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"},
             {"name": "VXLAN", "type": "string", "jsonPath": ".spec.vxlanMode"},
             {"name": "IPIP", "type": "string", "jsonPath": ".spec.ipipMode"},
             {"name": "NAT", "type": "boolean", "jsonPath": ".spec.natOutgoing"}, _AGE],
    BGPPeer: [{"name": "Node Selector", "type": "string", "jsonPath": ".spec.nodeSelector"},
              {"name": "Node", "type": "string", "jsonPath": ".spec.node"},
              {"name": "Peer Selector", "type": "string", "jsonPath": ".spec.peerSelector"},
              {"name": "Peer IP", "type": "string", "jsonPath": ".spec.peerIP"},
              {"name": "Peer ASN", "type": "string", "jsonPath": ".spec.asNumber"}],
    GlobalNetworkPolicy: [{"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
                          {"name": "Order", "type": "number", "jsonPath": ".spec.order"}, _AGE],
    NetworkPolicy: [{"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
                    {"name": "Order", "type": "number", "jsonPath": ".spec.order"}],
    HostEndpoint: [{"name": "Node", "type": "string", "jsonPath": ".spec.node"},
                   {"name": "Interface", "type": "string", "jsonPath": ".spec.interfaceName"}],
    ClusterInformation: [{"name": "Version", "type": "string", "jsonPath": ".spec.calicoVersion"},
                         {"name": "Ready", "type": "boolean", "jsonPath": ".spec.datastoreReady"},
                         {"name": "Types", "type": "string", "jsonPath": ".spec.clusterType"}],
}

_API_VERSION_DOC = ("APIVersion defines the versioned schema of this representation of an object. "
                    "Servers should convert recognized schemas to the latest internal value, and may "
                    "reject unrecognized values.")
_KIND_DOC = ("Kind is a string value representing the REST resource this object represents. "
             "In CamelCase.")
_KEEP = ("type", "nullable", "description", "enum", "format", "minimum", "maximum", "minLength", "maxLength",
         "minItems", "maxItems")
_K8S_FORMATS = frozenset({"int32", "int64", "float", "double", "byte", "date", "date-time", "int-or-string"})


def crd_kinds() -> list[type[Resource]]:
    """The kinds stored as custom resources, in a stable order."""
    return [cls for kind, cls in sorted(registry.KINDS.items()) if kind not in DERIVED_KINDS]


def structural(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    """Rewrite one pydantic JSON schema node into a Kubernetes structural schema node."""
    if depth > 40:
        raise ValueError("schema nests too deep (a recursive model?)")
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return structural(merged, defs, depth + 1)
    for union in ("anyOf", "oneOf"):
        if union in schema:
            options = [o for o in schema[union] if o.get("type") != "null"]
            resolved = [structural(o, defs, depth + 1) for o in options]
            types = {o.get("type") for o in resolved}
            if len(resolved) == 1:
                one = dict(resolved[0])
                if "description" in schema:
                    one["description"] = schema["description"]
                if len(options) < len(schema[union]) and "default" not in schema:
                    one["nullable"] = True  # null is a value here (a free ordinal), not "unset"
                return one
            if types <= {"integer", "string"}:
                out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
                if "description" in schema:
                    out["description"] = schema["description"]
                return out
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    out = {k: v for k, v in schema.items() if k in _KEEP}
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if out.get("format") not in _K8S_FORMATS:
        out.pop("format", None)
    typ = schema.get("type")
    if typ == "object" or "properties" in schema:
        out["type"] = "object"
        if "properties" in schema:
            out["properties"] = {k: structural(v, defs, depth + 1) for k, v in schema["properties"].items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = structural(extra, defs, depth + 1)
        elif "properties" not in schema and extra is not False:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif typ == "array":
        out["items"] = structural(schema.get("items", {}), defs, depth + 1) if schema.get("items") else {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    elif typ is None and "enum" not in out:
        return {"x-kubernetes-preserve-unknown-fields": True}
    elif typ is None:
        out["type"] = "string"
    return out


def resource_schema(cls: type[Resource]) -> dict[str, Any]:
    raw = cls.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    props: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": _API_VERSION_DOC},
        "kind": {"type": "string", "description": _KIND_DOC},
        "metadata": {"type": "object"},
    }
    for name in ("spec", "status"):
        if name in raw.get("properties", {}):
            props[name] = structural(raw["properties"][name], defs)
    if "spec" in props and not props["spec"].get("description"):
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        if doc:
            props["spec"]["description"] = " ".join(doc.split())
    return {"type": "object", "properties": props}


def crd(cls: type[Resource], group: str = V1_GROUP) -> dict[str, Any]:
    """The CustomResourceDefinition for one kind in ``group`` (v1 storage or v3 CRD mode)."""
    version = "v1" if group == V1_GROUP else "v3"
    names: dict[str, Any] = {"kind": cls.KIND, "listKind": f"{cls.KIND}List", "plural": cls.PLURAL,
                             "singular": cls.KIND.lower()}
    served: dict[str, Any] = {"name": version, "served": True, "storage": True,
                              "schema": {"openAPIV3Schema": resource_schema(cls)}}
    if group == V3_GROUP:
        if cls in SHORT_NAMES:
            names["shortNames"] = SHORT_NAMES[cls]
        if cls in PRINTER_COLUMNS:
            served["additionalPrinterColumns"] = PRINTER_COLUMNS[cls]
    if "status" in served["schema"]["openAPIV3Schema"]["properties"]:
        served["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{cls.PLURAL}.{group}"},
        "spec": {"group": group, "names": names, "scope": "Namespaced" if cls.NAMESPACED else "Cluster",
                 "versions": [served]},
    }


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors and aliases for repeated enums."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated by `python -m libcalico.api.crds crds/` from the pydantic models. Do not edit.\n"


def rendered() -> dict[str, str]:
    """Relative path -> file content for every CRD of both groups."""
    files: dict[str, str] = {}
    for subdir, group in (("v1", V1_GROUP), ("v3", V3_GROUP)):
        for cls in crd_kinds():
            body = yaml.dump(crd(cls, group), Dumper=_Dumper, sort_keys=False, width=100)
            files[f"{subdir}/{group}_{cls.PLURAL}.yaml"] = HEADER + body
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libcalico.api.crds", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="directory to write (e.g. crds/)")
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    files = rendered()
    stale = [rel for rel, text in files.items()
             if not (args.out / rel).exists() or (args.out / rel).read_text() != text]
    extra = sorted(str(p.relative_to(args.out)) for p in args.out.glob("*/*.yaml")
                   if str(p.relative_to(args.out)) not in files) if args.out.exists() else []
    if args.check:
        for rel in stale:
            print(f"stale: {args.out / rel}", file=sys.stderr)
        for rel in extra:
            print(f"not generated (remove it): {args.out / rel}", file=sys.stderr)
        if stale or extra:
            print(f"run: python -m libcalico.api.crds {args.out}", file=sys.stderr)
            return 1
        return 0
    for rel in extra:
        (args.out / rel).unlink()
    for rel in stale:
        (args.out / rel).parent.mkdir(parents=True, exist_ok=True)
        (args.out / rel).write_text(files[rel])
    print(f"{len(files)} CRDs in {args.out} ({len(stale)} written, {len(extra)} removed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
