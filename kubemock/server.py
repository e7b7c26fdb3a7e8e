"""The mock Kubernetes API server: what kubemock serves, and how.

An aiohttp application that speaks the API server's HTTP/JSON protocol over one
in-memory object store. Each behaviour listed here has a test in
``tests/kubernetes/test_kube_api.py``, most of them driven by the official ``kubernetes``
client.

Emulated:

* **Paths and discovery**: ``/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUBRESOURCE]]``
  and ``/apis/GROUP/VERSION/...``; ``/api/v1/namespaces[/NAME[/status]]`` is the
  Namespace resource. Legacy discovery (``/api``, ``/apis``, ``/apis/G``,
  ``/api/v1``, ``/apis/G/V``), ``/version``, and OpenAPI v3 (``/openapi/v3``:
  a path index and one document per group/version, the CRD's schema for
  custom resources) as kubectl reads it. Errors are ``Status`` objects with
  Kubernetes' codes, reasons and messages.
* **Served kinds**: :data:`CORE` (Namespace, Node, Pod, Service,
  ServiceAccount, Secret, Event in ``v1`` and ``events.k8s.io/v1``, Lease,
  NetworkPolicy, CustomResourceDefinition), and each served version of every
  CRD created (``apiextensions.k8s.io/v1``), which starts serving its resource
  (discovery included), as the API server does.
* **Server-assigned metadata**: resourceVersion, uid, creationTimestamp,
  generation (bumped when ``.spec`` changes), ``generateName``.
  resourceVersion is one counter across all resources, as etcd's revision is
  for a real API server; a write that changes nothing keeps it.
* **Create** answers 201 with the stored object; a duplicate name gets
  ``409 AlreadyExists``; a missing name gets ``422 Invalid``.
* **Optimistic concurrency**: a PUT, PATCH or DELETE that names a
  resourceVersion (in the body, the patch, or DeleteOptions.preconditions)
  that is not the current one gets ``409 Conflict``; preconditions.uid too.
* **PUT** replaces an object (``404`` if it does not exist); ``/status`` PUT
  and PATCH change only ``.status`` (for pods also labels and annotations, as
  podStatusStrategy allows); other writes leave ``.status`` alone where the
  resource has a status subresource.
* **Patches**: JSON merge patch, JSON patch (RFC 6902, the ``jsonpatch``
  library's) and strategic merge patch, applied as a merge patch (lists are
  replaced, not merged by key).
* **Schema validation and pruning of custom resources** (:func:`check_schema`):
  a custom resource is checked against its CRD's structural schema (type,
  enum, required, nullable, x-kubernetes-int-or-string); a violation is
  ``422 Invalid`` with the API server's field paths; unknown fields are pruned
  (kept under x-kubernetes-preserve-unknown-fields), and with
  ``fieldValidation=Strict`` (kubectl's default) they are a ``400`` instead.
* **Finalizers**: DELETE of an object with finalizers sets deletionTimestamp;
  the object goes when the last finalizer is removed.
* **List** answers carry ``kind: <Kind>List``, ``apiVersion`` and the current
  ``resourceVersion``.
* **Label and field selectors** (``=``, ``==``, ``!=``, ``in``, ``notin``,
  exists, ``!`` not exists; fields ``metadata.name``, ``metadata.namespace``,
  ``spec.nodeName``) filter lists and watches; a watched object that stops
  matching is reported as DELETED, one that starts matching as ADDED.
* **Watch** honours resourceVersion: events after that version are replayed
  from a history, then live events follow; a version older than the history
  (see :meth:`KubeAPI.compact`) gets the ``ERROR`` event with ``410 Expired``.
  Without a version (or "0") the watch starts with ADDED events for what
  exists. ``allowWatchBookmarks`` brings BOOKMARK events; ``timeoutSeconds``
  ends the stream; :meth:`KubeAPI.drop_watches` ends them all, as an API
  server restart does.

Not emulated: authentication and authorization (any token is accepted),
admission (webhooks, defaulting, quota), validation of built-in kinds (they
take any fields), CRD conversion between versions, CEL validation rules and
schema keywords beyond those listed above (pattern, format, minimum, maxLength
and so on are not checked), namespaces' existence (an object may name a
namespace that was never created) and namespace deletion's cascade,
garbage collection (ownerReferences), server-side apply, pagination
(``limit`` returns everything, no ``continue``), ``/scale`` and other
subresources than ``/status``, aggregated discovery, protobuf, and
persistence (everything is lost when the process ends). Calico's backend
never relies on their absence.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import jsonpointer
import yaml

JSON = dict[str, Any]


def status(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details or {}, "code": code}


class APIError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.status = status(code, reason, message, details)


@dataclass(frozen=True)
class Served:
    """One resource the server serves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


CORE: tuple[Served, ...] = (
    Served("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), True),
    Served("", "v1", "nodes", "Node", False, "node", ("no",), True),
    Served("", "v1", "pods", "Pod", True, "pod", ("po",), True),
    Served("", "v1", "services", "Service", True, "service", ("svc",), True),
    Served("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ("sa",)),
    Served("", "v1", "secrets", "Secret", True, "secret"),
    Served("", "v1", "events", "Event", True, "event", ("ev",)),
    Served("events.k8s.io", "v1", "events", "Event", True, "event", ("ev",)),
    Served("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
    Served("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, "networkpolicy", ("netpol",)),
    Served("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
           "customresourcedefinition", ("crd", "crds")),
)


# --- requests ----------------------------------------------------------------------------------

_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|finalize))?/?$")
_RESOURCE_PATH = re.compile(r"^/(?:api/(?P<core>[^/]+)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
                            r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)"
                            r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?/?$")


@dataclass(frozen=True)
class ResourcePath:
    """What a resource path names: ``/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUBRESOURCE]]``."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None


def parse_path(path: str) -> ResourcePath | None:
    """The resource a request path is about; None for other paths (discovery, /version, ...).

    ``/api/v1/namespaces[/NAME]`` is the Namespace resource, not a namespace prefix."""
    if m := _NAMESPACE_PATH.match(path):
        return ResourcePath("", "v1", "namespaces", None, m["name"], m["sub"])
    if m := _RESOURCE_PATH.match(path):
        group, version = ("", m["core"]) if m["core"] else (m["group"], m["version"])
        return ResourcePath(group, version, m["plural"], m["ns"], m["name"], m["sub"])
    return None


@dataclass(frozen=True)
class Request:
    """One request as the store reads it: the parsed path, the query, and the body (text and JSON)."""

    raw: aiohttp.web.Request
    method: str
    path: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    text: str
    data: Any  # the body as JSON; None when empty or not JSON
    resource: ResourcePath | None

    @property
    def namespace(self) -> str | None:
        return self.resource.namespace if self.resource else None

    @property
    def name(self) -> str | None:
        return self.resource.name if self.resource else None

    @property
    def subresource(self) -> str | None:
        return self.resource.subresource if self.resource else None

    @classmethod
    async def read(cls, raw: aiohttp.web.Request) -> Request:
        text = await raw.text() if raw.can_read_body else ""
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        return cls(raw, raw.method.upper(), raw.path, raw.query, raw.headers, text, data, parse_path(raw.path))


# --- selectors ---------------------------------------------------------------------------------

_SET = re.compile(r"^([\w./-]+)\s+(in|notin)\s*\((.*)\)$")
_EQ = re.compile(r"^([\w./-]+)\s*(==|!=|=)\s*([\w.-]*)$")
_KEY = re.compile(r"^[\w./-]+$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


@dataclass(frozen=True)
class _Requirement:
    """One requirement of a selector: key, operator (exists, !, =, !=, in, notin) and values."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def __call__(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return value in self.values
        return value not in self.values  # "!=" and "notin": absent keys match, as Kubernetes has it


@dataclass(frozen=True)
class _Selector:
    requirements: tuple[_Requirement, ...]

    def __call__(self, labels: dict[str, str]) -> bool:
        return all(r(labels) for r in self.requirements)


def parse_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """A label (or field) selector as the API server parses it; ValueError when malformed."""
    reqs: list[_Requirement] = []
    for part in _split_selector(text or ""):
        part = part.strip()
        if part.startswith("!") and _KEY.match(part[1:].strip()):
            reqs.append(_Requirement(part[1:].strip(), "!"))
        elif m := _SET.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(_Requirement(m.group(1), m.group(2), values))
        elif m := _EQ.match(part):
            reqs.append(_Requirement(m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset({m.group(3)})))
        elif _KEY.match(part):
            reqs.append(_Requirement(part, "exists"))
        else:
            raise ValueError(f"unable to parse requirement: {part!r}")
    return _Selector(tuple(reqs))


def _fields(obj: JSON) -> dict[str, str]:
    meta = obj.get("metadata", {})
    out = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
    if "nodeName" in obj.get("spec", {}):
        out["spec.nodeName"] = obj["spec"]["nodeName"]
    return out


# --- patches -----------------------------------------------------------------------------------

class PatchError(ValueError):
    """A JSON patch that does not apply."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(doc: Any, ops: list[Any]) -> Any:
    """RFC 6902, the ``jsonpatch`` library's; :class:`PatchError` names the operation that does not apply."""
    out = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {i}: each operation needs 'op' and 'path'")
        try:
            out = jsonpatch.JsonPatch([op]).apply(out)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchError(f"operation {i}: test failed at {op['path']}") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, KeyError, IndexError,
                TypeError, ValueError) as exc:
            raise PatchError(f"operation {i} ({op['op']} {op['path']}): {exc}") from None
    return out


# --- structural schema checks (custom resources) ------------------------------------------------

_TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,),
                                       "integer": (int,), "number": (int, float), "boolean": (bool,)}


def check_schema(value: Any, schema: JSON, path: str, unknown: list[str], invalid: list[str]) -> Any:
    """Check ``value`` against a CRD's structural schema; return it with unknown fields pruned.

    Unknown fields go to ``unknown``, type/enum/required errors to ``invalid``,
    with their paths, as the API server reports them."""
    if value is None:
        if not schema.get("nullable"):
            invalid.append(f"{path}: Invalid value: \"null\": {path} in body must be of type "
                           f"{schema.get('type', 'object')}")
        return value
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            invalid.append(f"{path}: Invalid value: must be an integer or a string")
        return value
    typ = schema.get("type")
    if typ and (not isinstance(value, _TYPES[typ]) or (typ in ("integer", "number") and isinstance(value, bool))):
        invalid.append(f"{path}: Invalid value: {json.dumps(value)}: {path} in body must be of type {typ}")
        return value
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(json.dumps(e) for e in schema["enum"])
        invalid.append(f"{path}: Unsupported value: {json.dumps(value)}: supported values: {allowed}")
    if isinstance(value, dict):
        for req in schema.get("required", ()):
            if req not in value:
                invalid.append(f"{path}.{req}: Required value")
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and extra is None:
            return value
        out = {}
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if props is not None and k in props:
                out[k] = check_schema(v, props[k], sub, unknown, invalid)
            elif isinstance(extra, dict):
                out[k] = check_schema(v, extra, sub, unknown, invalid)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                out[k] = v
            else:
                unknown.append(sub)
        return out
    if isinstance(value, list) and "items" in schema:
        return [check_schema(v, schema["items"], f"{path}[{i}]", unknown, invalid) for i, v in enumerate(value)]
    return value


# What ``GET /version`` answers: the Kubernetes release whose API this server follows.
VERSION: JSON = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kubemock", "gitCommit": "",
                 "gitTreeState": "clean", "buildDate": "2024-12-11T00:00:00Z", "goVersion": "go1.23",
                 "compiler": "gc", "platform": "linux/amd64"}

# --- the server --------------------------------------------------------------------------------

@dataclass
class Change:
    rv: int
    served: Served
    type: str
    new: JSON | None
    old: JSON | None


@dataclass
class _Watcher:
    served: Served
    namespace: str | None
    name: str | None
    labels: Callable[[dict[str, str]], bool]
    fields: Callable[[dict[str, str]], bool]
    # None: end the stream; "expired": send 410 Expired, then end it.
    queue: asyncio.Queue[Change | str | None] = field(default_factory=asyncio.Queue)

    def matches(self, obj: JSON | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        if self.name is not None and meta.get("name") != self.name:
            return False
        return self.labels(meta.get("labels") or {}) and self.fields(_fields(obj))


def _go_bool(text: str | None) -> bool:
    """Query flags parse as Go's strconv.ParseBool (the API server's parser) reads them."""
    return text in ("1", "t", "T", "TRUE", "true", "True")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeAPI:
    """The object store and request handler (:meth:`handle`) of one mock API server.

    Its state is open to the tests: :attr:`objects`, :attr:`revision`,
    :meth:`get_object`, :meth:`compact`, :meth:`drop_watches`."""

    def __init__(self, *, bookmark_interval: float = 1.0) -> None:
        self.bookmark_interval = bookmark_interval
        self.served: dict[tuple[str, str, str], Served] = {}
        self.objects: dict[tuple[str, str, str, str, str], JSON] = {}
        self.history: list[Change] = []
        self.revision = 1
        self.oldest = 1  # the oldest resourceVersion a watch may start from
        self.watchers: list[_Watcher] = []
        for s in CORE:
            self.serve(s)

    # --- setup ---------------------------------------------------------------------------------

    def serve(self, s: Served) -> None:
        self.served[(s.group, s.version, s.plural)] = s

    def serve_crd(self, crd: JSON) -> None:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if version.get("served", True):
                self.serve(Served(spec["group"], version["name"], names["plural"], names["kind"],
                                  spec["scope"] == "Namespaced", names.get("singular", ""),
                                  tuple(names.get("shortNames", ())),
                                  "status" in version.get("subresources", {})))

    def install_crds(self, paths: Iterable[Path]) -> None:
        """Store and serve CRDs from YAML files, as ``kubectl apply -f crds/`` would."""
        s = self.served[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
        for path in paths:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    self._create(s, None, doc)

    def compact(self, revision: int) -> None:
        """Forget history up to ``revision``: a watch from before it gets 410 Expired."""
        self.history = [c for c in self.history if c.rv > revision]
        self.oldest = max(self.oldest, revision)

    def drop_watches(self, expired: bool = False) -> None:
        """End every open watch stream, as an API server restart (or its watch timeout) does;
        with ``expired``, first send the in-stream ``410 Expired`` ERROR event that a watcher
        gets when it has fallen behind what the server still keeps."""
        for w in self.watchers:
            w.queue.put_nowait("expired" if expired else None)

    def get_object(self, api_version: str, plural: str, name: str, namespace: str = "") -> JSON | None:
        group, _, version = api_version.rpartition("/")
        return self.objects.get((group, version, plural, namespace, name))

    # --- request dispatch ----------------------------------------------------------------------

    async def handle(self, raw: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        """The aiohttp handler for every path."""
        request = await Request.read(raw)
        try:
            return await self._handle(request)
        except APIError as exc:
            return self._json(exc.status, exc.status["code"])

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        path = request.path
        if request.method == "GET":
            if path.startswith("/openapi/v3"):
                return self._openapi(path[len("/openapi/v3"):].strip("/"))
            if (found := self._discovery(path.rstrip("/"))) is not None:
                return self._json(found)
            if path.rstrip("/") == "/version":
                return self._json(VERSION)
            if path == "/":
                return self._json({"paths": sorted(self._paths())})
        res = request.resource
        s = self.served.get((res.group, res.version, res.plural)) if res is not None else None
        if s is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        if s.namespaced is False and request.namespace is not None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        method = request.method
        if method == "GET" and _go_bool(request.params.get("watch")):
            return await self._watch(s, request)
        if method == "GET":
            if request.name is None:
                return self._json(self._list(s, request))
            return self._json(self._get(s, request.namespace, request.name))
        if method == "POST" and request.name is None:
            return self._json(self._create(s, request.namespace, self._body(request), request), 201)
        if method == "PUT" and request.name is not None:
            return self._json(self._replace(s, request, self._body(request)))
        if method == "PATCH" and request.name is not None:
            return self._json(self._patch(s, request))
        if method == "DELETE" and request.name is not None:
            return self._json(self._delete(s, request))
        raise APIError(405, "MethodNotAllowed", f"the server does not allow this method on the requested "
                                                 f"resource ({method})")

    def _paths(self) -> set[str]:
        """What ``GET /`` lists, as the API server's root does."""
        paths = {"/api", "/api/v1", "/apis", "/openapi/v3", "/version"}
        for s in self.served.values():
            if s.group:
                paths |= {f"/apis/{s.group}", f"/apis/{s.group}/{s.version}"}
        return paths

    def _discovery(self, path: str) -> JSON | None:
        """Legacy (unaggregated) discovery of what is served, kept in step with ``served``."""
        groups: dict[str, list[str]] = {}
        for s in self.served.values():
            if s.group and s.version not in groups.setdefault(s.group, []):
                groups[s.group].append(s.version)

        def group_doc(g: str) -> JSON:
            vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in groups[g]]
            return {"name": g, "versions": vs, "preferredVersion": vs[0]}

        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in sorted(groups)]}
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return {"kind": "APIGroup", "apiVersion": "v1", **group_doc(parts[1])}
        if (len(parts) == 2 and parts[0] == "api") or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            listed = [s for s in self.served.values() if (s.group, s.version) == (group, version)]
            if not listed:
                return None
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources: list[JSON] = []
            for s in listed:
                resources.append({"name": s.plural, "singularName": s.singular or s.kind.lower(),
                                  "namespaced": s.namespaced, "kind": s.kind, "verbs": verbs,
                                  "shortNames": list(s.short_names)})
                if s.status_subresource:
                    resources.append({"name": f"{s.plural}/status", "singularName": "", "namespaced": s.namespaced,
                                      "kind": s.kind, "verbs": ["get", "patch", "update"]})
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version, "resources": resources}
        return None

    def _openapi(self, group_version: str) -> aiohttp.web.Response:
        """OpenAPI v3 as kubectl reads it for client-side validation: a path index, then one
        document per group/version whose schemas carry x-kubernetes-group-version-kind.
        Custom resources get their CRD's schema; built-in kinds accept any fields.
        Writes accept ``fieldValidation``, so kubectl leaves validation to the server
        (see :meth:`_admit`), as it does with a real API server."""
        gvs: dict[str, list[Served]] = {}
        for s in self.served.values():
            gvs.setdefault(f"apis/{s.group}/{s.version}" if s.group else f"api/{s.version}", []).append(s)
        if not group_version:
            return self._json({"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={len(ss)}"}
                                         for gv, ss in sorted(gvs.items())}})
        if group_version not in gvs:
            return self._json(status(404, "NotFound", "the server could not find the requested resource"), 404)
        schemas: JSON = {}
        for s in gvs[group_version]:
            schema: JSON = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            crd = self.objects.get(("apiextensions.k8s.io", "v1", "customresourcedefinitions", "",
                                    f"{s.group_resource}"))
            if crd is not None:
                for v in crd["spec"]["versions"]:
                    if v["name"] == s.version:
                        schema = copy.deepcopy(v.get("schema", {}).get("openAPIV3Schema", schema))
            props = schema.setdefault("properties", {})
            if "metadata" in props or schema.get("x-kubernetes-preserve-unknown-fields"):
                props.pop("metadata", None)
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            schema["x-kubernetes-group-version-kind"] = [{"group": s.group, "version": s.version, "kind": s.kind}]
            schemas[f"{s.group or 'core'}.{s.version}.{s.kind}"] = schema
        param = {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        paths = {}
        for s in gvs[group_version]:
            ns = "namespaces/{namespace}/" if s.namespaced else ""
            gvk = {"group": s.group, "version": s.version, "kind": s.kind}
            op = {"x-kubernetes-group-version-kind": gvk, "parameters": [param], "responses": {}}
            paths[f"/{group_version}/{ns}{s.plural}/{{name}}"] = {"patch": op, "put": op}
            paths[f"/{group_version}/{ns}{s.plural}"] = {"post": op}
        return self._json({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
                           "paths": paths, "components": {"schemas": schemas}})

    @staticmethod
    def _json(body: JSON, code: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(body, status=code)

    @staticmethod
    def _body(request: Request) -> JSON:
        if not isinstance(request.data, dict):
            try:
                data = json.loads(request.text) if request.text else None
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise APIError(400, "BadRequest", "the request body is not a JSON object")
            return data
        return request.data

    # --- storage -------------------------------------------------------------------------------

    def _key(self, s: Served, namespace: str | None, name: str) -> tuple[str, str, str, str, str]:
        return (s.group, s.version, s.plural, (namespace or "") if s.namespaced else "", name)

    def _schema(self, s: Served) -> JSON | None:
        crd = self.objects.get(("apiextensions.k8s.io", "v1", "customresourcedefinitions", "", s.group_resource))
        if crd is None:
            return None
        for v in crd["spec"]["versions"]:
            if v["name"] == s.version:
                schema: JSON | None = v.get("schema", {}).get("openAPIV3Schema")
                return schema
        return None

    def _admit(self, s: Served, obj: JSON, request: Request | None) -> JSON:
        """Validate a custom resource against its CRD and prune unknown fields, as the API server
        does; ``fieldValidation=Strict`` (kubectl's default) turns unknown fields into an error."""
        schema = self._schema(s)
        if schema is None:
            return obj
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        unknown: list[str] = []
        invalid: list[str] = []
        pruned = check_schema(body, {**schema, "properties": {
            k: v for k, v in schema.get("properties", {}).items() if k not in ("apiVersion", "kind", "metadata")}},
            "", unknown, invalid)
        name = obj.get("metadata", {}).get("name", "")
        if invalid:
            raise APIError(422, "Invalid", f'{s.kind}.{s.group} "{name}" is invalid: [{", ".join(invalid)}]',
                           {"name": name, "group": s.group, "kind": s.kind,
                            "causes": [{"reason": "FieldValueInvalid", "message": m} for m in invalid]})
        mode = (request.params.get("fieldValidation", "") if request is not None else "").lower()
        if unknown and mode == "strict":
            raise APIError(400, "BadRequest", "strict decoding error: " + ", ".join(
                f'unknown field "{u}"' for u in unknown))
        return {**{k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}, **pruned}

    def _not_found(self, s: Served, name: str) -> APIError:
        return APIError(404, "NotFound", f'{s.group_resource} "{name}" not found',
                        {"name": name, "group": s.group, "kind": s.plural})

    def _get(self, s: Served, namespace: str | None, name: str) -> JSON:
        obj = self.objects.get(self._key(s, namespace, name))
        if obj is None:
            raise self._not_found(s, name)
        return obj

    def _record(self, s: Served, type_: str, new: JSON | None, old: JSON | None) -> None:
        change = Change(self.revision, s, type_, copy.deepcopy(new), copy.deepcopy(old))
        self.history.append(change)
        for w in self.watchers:
            if w.served == s:
                w.queue.put_nowait(change)

    def _bump(self, obj: JSON) -> None:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)

    def _create(self, s: Served, namespace: str | None, body: JSON,
                request: Request | None = None) -> JSON:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name")
        if not name:
            raise APIError(422, "Invalid", f"{s.kind} \"\" is invalid: metadata.name: Required value: name or "
                                           f"generateName is required",
                           {"kind": s.kind, "causes": [{"reason": "FieldValueRequired", "field": "metadata.name"}]})
        if s.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise APIError(400, "BadRequest", "the namespace of the provided object does not match the "
                                                  "namespace sent on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
            ns = ""
        key = self._key(s, ns, name)
        if key in self.objects:
            raise APIError(409, "AlreadyExists", f'{s.group_resource} "{name}" already exists',
                           {"name": name, "group": s.group, "kind": s.plural})
        obj["apiVersion"], obj["kind"] = s.api_version, s.kind
        obj = self._admit(s, obj, request)
        meta = obj["metadata"]
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        self._bump(obj)
        self.objects[key] = obj
        if s.plural == "customresourcedefinitions" and s.group == "apiextensions.k8s.io":
            self.serve_crd(obj)
        self._record(s, "ADDED", obj, None)
        return obj

    def _check_preconditions(self, s: Served, current: JSON, rv: str | None, uid: str | None) -> None:
        meta = current["metadata"]
        if uid and uid != meta.get("uid"):
            raise APIError(409, "Conflict", f'Operation cannot be fulfilled on {s.group_resource} '
                                            f'"{meta["name"]}": Precondition failed: UID in precondition: {uid}, '
                                            f'UID in object meta: {meta.get("uid")}',
                           {"name": meta["name"], "group": s.group, "kind": s.plural})
        if rv and rv != meta["resourceVersion"]:
            raise APIError(409, "Conflict", f'Operation cannot be fulfilled on {s.group_resource} '
                                            f'"{meta["name"]}": the object has been modified; please apply your '
                                            f'changes to the latest version and try again',
                           {"name": meta["name"], "group": s.group, "kind": s.plural})

    def _store(self, s: Served, key: tuple[str, str, str, str, str], current: JSON, new: JSON,
               subresource: str | None, request: Request | None = None) -> JSON:
        """Write ``new`` over ``current`` keeping what the client may not change."""
        if subresource == "status":
            merged = copy.deepcopy(current)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            if s.group == "" and s.plural == "pods":
                # podStatusStrategy keeps the old spec but takes metadata changes: this is how
                # Calico's CNI plugin records pod IPs with only the pods/status permission.
                for k in ("labels", "annotations"):
                    if k in new.get("metadata", {}):
                        merged["metadata"][k] = new["metadata"][k]
                    else:
                        merged["metadata"].pop(k, None)
            new = merged
        elif s.status_subresource:
            new = dict(new)
            if "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        new = copy.deepcopy(new)
        meta = new.setdefault("metadata", {})
        cur_meta = current["metadata"]
        for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"):
            if k in cur_meta:
                meta[k] = cur_meta[k]
            else:
                meta.pop(k, None)
        new["apiVersion"], new["kind"] = s.api_version, s.kind
        meta["generation"] = cur_meta.get("generation", 1) + (1 if new.get("spec") != current.get("spec") else 0)
        meta["resourceVersion"] = cur_meta["resourceVersion"]
        new = self._admit(s, new, request)
        if new == current:
            return current  # a no-op write does not move the resourceVersion
        self._bump(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self.objects[key]
            self._record(s, "DELETED", new, current)
        else:
            self.objects[key] = new
            self._record(s, "MODIFIED", new, current)
        return new

    def _existing(self, s: Served, request: Request) -> tuple[tuple[str, str, str, str, str], JSON]:
        """The key and stored object a named request is about; 404 if there is none."""
        assert request.name is not None
        key = self._key(s, request.namespace, request.name)
        current = self.objects.get(key)
        if current is None:
            raise self._not_found(s, request.name)
        return key, current

    def _replace(self, s: Served, request: Request, body: JSON) -> JSON:
        key, current = self._existing(s, request)
        meta = body.get("metadata", {})
        if meta.get("name") not in (None, key[-1]):
            raise APIError(400, "BadRequest", "the name of the object does not match the name on the URL")
        self._check_preconditions(s, current, meta.get("resourceVersion"), meta.get("uid"))
        return self._store(s, key, current, body, request.subresource, request)

    def _patch(self, s: Served, request: Request) -> JSON:
        key, current = self._existing(s, request)
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            patch = json.loads(request.text)
        except ValueError as exc:
            raise APIError(400, "BadRequest", f"the patch is not valid JSON: {exc}") from None
        if ctype == "application/json-patch+json":
            if not isinstance(patch, list):
                raise APIError(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                new = json_patch(current, patch)
            except PatchError as exc:
                raise APIError(422, "Invalid", f"the JSON patch does not apply: {exc}") from None
            rv = None if new["metadata"].get("resourceVersion") == current["metadata"]["resourceVersion"] \
                else new["metadata"].get("resourceVersion")
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise APIError(400, "BadRequest", "a merge patch must be a JSON object")
            new = merge_patch(current, patch)
            rv = (patch.get("metadata") or {}).get("resourceVersion")
        else:
            raise APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: application/json-patch+json, "
                                                        f"application/merge-patch+json, "
                                                        f"application/strategic-merge-patch+json ({ctype})")
        self._check_preconditions(s, current, rv, None)
        return self._store(s, key, current, new, request.subresource, request)

    def _delete(self, s: Served, request: Request) -> JSON:
        key, current = self._existing(s, request)
        options = request.data if isinstance(request.data, dict) else {}
        pre = options.get("preconditions") or {}
        self._check_preconditions(s, current, pre.get("resourceVersion"), pre.get("uid"))
        if current["metadata"].get("finalizers"):
            if current["metadata"].get("deletionTimestamp"):
                return current
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = _now()
            self._bump(new)
            self.objects[key] = new
            self._record(s, "MODIFIED", new, current)
            return new
        gone = copy.deepcopy(current)
        self._bump(gone)
        del self.objects[key]
        self._record(s, "DELETED", gone, current)
        return gone

    # --- reads ---------------------------------------------------------------------------------

    def _selectors(self, request: Request) -> tuple[Callable[[dict[str, str]], bool],
                                                             Callable[[dict[str, str]], bool]]:
        try:
            return (parse_selector(request.params.get("labelSelector", "")),
                    parse_selector(request.params.get("fieldSelector", "")))
        except ValueError as exc:
            raise APIError(400, "BadRequest", str(exc)) from None

    def _list(self, s: Served, request: Request) -> JSON:
        labels, fields_ = self._selectors(request)
        w = _Watcher(s, request.namespace, None, labels, fields_)
        items = [obj for (g, v, p, _, _), obj in sorted(self.objects.items())
                 if (g, v, p) == (s.group, s.version, s.plural) and w.matches(obj)]
        return {"apiVersion": s.api_version, "kind": f"{s.kind}List",
                "metadata": {"resourceVersion": str(self.revision)}, "items": items}

    async def _watch(self, s: Served, request: Request) -> aiohttp.web.StreamResponse:
        labels, fields_ = self._selectors(request)
        name = request.name
        field_sel = request.params.get("fieldSelector", "")
        m = re.fullmatch(r"metadata\.name=(.+)", field_sel)
        if m and name is None:
            name = m.group(1)
        watcher = _Watcher(s, request.namespace, name, labels, fields_)
        rv_text = request.params.get("resourceVersion", "")
        try:
            since = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError:
            raise APIError(400, "BadRequest", f"invalid resourceVersion {rv_text!r}") from None
        timeout = float(request.params.get("timeoutSeconds", "0") or 0)
        bookmarks = _go_bool(request.params.get("allowWatchBookmarks"))

        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request.raw)

        async def send(event: JSON) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        if since is not None and since < self.oldest:
            await send({"type": "ERROR", "object": status(
                410, "Expired", f"too old resource version: {since} ({self.oldest})")})
            await response.write_eof()
            return response

        # Register before replaying so nothing falls between the two.
        self.watchers.append(watcher)
        try:
            if since is None:
                backlog: list[Change] = []
                for (g, v, p, _, _), obj in sorted(self.objects.items()):
                    if (g, v, p) == (s.group, s.version, s.plural) and watcher.matches(obj):
                        await send({"type": "ADDED", "object": obj})
                since = self.revision
            else:
                backlog = [c for c in self.history if c.rv > since and c.served == s]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            sent_upto = since
            while True:
                if backlog:
                    change = backlog.pop(0)
                else:
                    wait = self.bookmark_interval if bookmarks else None
                    if deadline is not None:
                        left = deadline - loop.time()
                        if left <= 0:
                            break
                        wait = left if wait is None else min(wait, left)
                    try:
                        got = await asyncio.wait_for(watcher.queue.get(), wait)
                    except TimeoutError:
                        if bookmarks:
                            await send({"type": "BOOKMARK", "object": {
                                "kind": s.kind, "apiVersion": s.api_version,
                                "metadata": {"resourceVersion": str(max(sent_upto, self.revision))}}})
                        continue
                    if got is None:
                        break
                    if isinstance(got, str):
                        await send({"type": "ERROR", "object": status(
                            410, "Expired", f"too old resource version: {sent_upto} ({self.oldest})")})
                        break
                    change = got
                if change.rv <= sent_upto:
                    continue
                sent_upto = change.rv
                event = self._event_for(watcher, change)
                if event is not None:
                    await send(event)
        except ConnectionResetError:
            return response  # the client went away
        finally:
            self.watchers.remove(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    @staticmethod
    def _event_for(w: _Watcher, change: Change) -> JSON | None:
        was, now = w.matches(change.old), w.matches(change.new)
        if change.type == "DELETED":
            return {"type": "DELETED", "object": change.new} if was else None
        if was and now:
            return {"type": "MODIFIED" if change.type == "MODIFIED" else "ADDED", "object": change.new}
        if now:
            return {"type": "ADDED", "object": change.new}
        if was:
            return {"type": "DELETED", "object": change.new}
        return None


def kubeconfig(server: str, path: Path) -> Path:
    """A kubeconfig that points kubectl and the client libraries at ``server``."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kubemock",
        "clusters": [{"name": "kubemock", "cluster": {"server": server}}],
        "users": [{"name": "kubemock", "user": {"token": "kubemock"}}],
        "contexts": [{"name": "kubemock", "context": {"cluster": "kubemock", "user": "kubemock"}}],
    }))
    return path


def crd_files(crd_dir: Path) -> list[Path]:
    """The CRD manifests in a directory (``*.yaml``), in name order."""
    return sorted(crd_dir.glob("*.yaml"))


@contextlib.asynccontextmanager
async def listening(api: KubeAPI, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``api`` over HTTP on ``host:port`` (0: a free port); yields the server's URL.

    On exit every watch stream is ended first, so shutting down waits for no client."""
    app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)  # kubectl apply of the largest CRDs
    app.router.add_route("*", "/{path:.*}", api.handle)
    runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = aiohttp.web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        api.drop_watches()
        await runner.cleanup()


@dataclass
class RunningAPI:
    api: KubeAPI
    url: str
    kubeconfig: Path


@contextlib.asynccontextmanager
async def running_api(tmp: Path, crd_dir: Path | None = None) -> AsyncIterator[RunningAPI]:
    """Serve a KubeAPI on a free loopback port, with the CRDs from ``crd_dir`` installed."""
    api = KubeAPI()
    if crd_dir is not None:
        api.install_crds(crd_files(crd_dir))
    async with listening(api) as url:
        yield RunningAPI(api, url, kubeconfig(url, tmp / f"kubeconfig-{url.rsplit(':', 1)[1]}"))


async def serve(*, host: str, port: int, crd_dir: Path, kubeconfig_path: Path) -> None:
    """Serve until cancelled; the kubeconfig is written once the server listens."""
    api = KubeAPI()
    api.install_crds(crd_files(crd_dir))
    async with listening(api, host=host, port=port) as url:
        kubeconfig(url, kubeconfig_path)
        await asyncio.Event().wait()
