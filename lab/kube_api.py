"""A Kubernetes API server for tests and the lab: kmock, extended until it behaves as Kubernetes documents.

No kube-apiserver can be installed here, so the Kubernetes backend, kubectl and
(later) the kopf controllers are tested against kmock 0.8, which speaks the
real HTTP/JSON protocol (discovery, JSON errors, chunked watch streams). kmock's
emulator keeps objects as plain dicts and leaves out the parts of the API that
a datastore built on it depends on. :class:`KubeAPI` keeps kmock's server,
request parsing, discovery and error rendering, and replaces the object store
with one that follows the API conventions. What was added, each with a test in
``tests/test_kube_api.py``:

* **resourceVersion, uid, creationTimestamp, generation** are assigned by the
  server on every write. resourceVersion is one counter across all resources,
  as etcd's revision is for a real API server.
* **Optimistic concurrency**: a PUT, PATCH or DELETE that names a
  resourceVersion (in the body, the patch, or DeleteOptions.preconditions)
  that is not the current one gets ``409 Conflict``; preconditions.uid too.
* **PUT** replaces an object (``404`` if it does not exist, as for custom
  resources); ``/status`` PUT and PATCH change only ``.status`` (for pods also
  labels and annotations, as podStatusStrategy allows), other writes leave
  ``.status`` alone where the resource has a status subresource.
* **Create answers 201** with the stored object; a duplicate name gets
  ``409 AlreadyExists``; a missing name gets ``422 Invalid``.
* **Watch honours resourceVersion**: events after that version are replayed
  from a history, then live events follow; a version older than the history
  (see :meth:`KubeAPI.compact`) gets the ``ERROR`` event with ``410 Expired``,
  as the API server sends it. Without a version (or "0") the watch starts with
  synthetic ADDED events for what exists. ``allowWatchBookmarks`` brings
  BOOKMARK events; ``timeoutSeconds`` ends the stream.
* **Label and field selectors** (``=``, ``==``, ``!=``, ``in``, ``notin``,
  exists, ``!`` not exists; fields ``metadata.name``, ``metadata.namespace``,
  ``spec.nodeName``) filter lists and watches; a watched object that stops
  matching is reported as DELETED, one that starts matching as ADDED.
* **Patches**: JSON merge patch, JSON patch (RFC 6902) and strategic merge
  patch (applied as a merge patch: enough for the maps these tests patch; lists
  are replaced, not merged by key). The patch functions are
  :mod:`libcalico.patching`'s (JSON patch is the ``jsonpatch`` library's).
* **List** answers carry ``kind: <Kind>List``, ``apiVersion`` and the current
  ``resourceVersion``.
* **CRDs**: creating an ``apiextensions.k8s.io/v1`` CustomResourceDefinition
  starts serving its resource (discovery included), as the API server does.
* **Finalizers**: DELETE of an object with finalizers sets deletionTimestamp;
  the object goes when the last finalizer is removed.
* **Leases and Events** (``coordination.k8s.io/v1`` leases, ``v1`` and
  ``events.k8s.io/v1`` events) are served like any other kind, so leader election
  (a Lease replaced at its resourceVersion) and kopf's event posting work.

Not emulated: admission, schema validation of custom resources, namespaces'
existence, server-side apply, pagination (``limit`` returns everything),
and authentication. The backend never relies on their absence.

``python -m lab.kube_api --host H --port P --crds DIR --kubeconfig FILE`` serves
it until killed: the lab's ``--datastore kubernetes`` (no kube-apiserver can
run here; on a machine with Docker, deploy/ is the path to a real cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import parsing, rendering

from libcalico.patching import PatchError, json_patch, merge_patch

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


# --- paths -------------------------------------------------------------------------------------

# kmock 0.8 reads ``/api/v1/namespaces/<x>`` as "namespace <x>" and fails on ``/api/v1/namespaces``,
# so Namespace objects themselves could not be created, listed or read. The Namespace paths are
# parsed here; every other path as kmock does (its parser is looked up at each request).
_kmock_parse_path = parsing.parse_path
_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+))?(?:/(status|finalize))?/?$")


def _parse_path(path: str) -> parsing.ParsedPath:
    m = _NAMESPACE_PATH.match("/" + path.lstrip("/"))
    if m:
        return parsing.ParsedPath("", "v1", "namespaces", None, m.group(1), m.group(2))
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path


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


@attrs.define(kw_only=True)
class KubeAPI(kmock.KubernetesScaffold):
    """kmock's Kubernetes scaffold with an object store that keeps the API's promises."""

    bookmark_interval: float = 1.0
    served: dict[tuple[str, str, str], Served] = attrs.field(factory=dict)
    objects: dict[tuple[str, str, str, str, str], JSON] = attrs.field(factory=dict)
    history: list[Change] = attrs.field(factory=list)
    revision: int = 1
    oldest: int = 1  # the oldest resourceVersion a watch may start from
    watchers: list[_Watcher] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for s in CORE:
            self.serve(s)

    # --- setup ---------------------------------------------------------------------------------

    def serve(self, s: Served) -> None:
        self.served[(s.group, s.version, s.plural)] = s
        key = f"{s.group}/{s.version}/{s.plural}" if s.group else f"v1/{s.plural}"
        verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
        self.resources[key] = kmock.ResourceInfo(
            kind=s.kind, namespaced=s.namespaced, singular=s.singular or s.kind.lower(),
            shortnames=set(s.short_names), verbs=verbs,
            subresources={"status"} if s.status_subresource else set())

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

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        path = request.url.path
        if request.method.value == "GET" and path.startswith("/openapi/v3"):
            return self._openapi(path[len("/openapi/v3"):].strip("/"))
        if request.method.value == "GET" and (found := self._discovery(path.rstrip("/"))) is not None:
            return self._json(found)
        res = request.resource
        s = self.served.get((res.group or "", res.version or "", res.plural)) if res is not None and res.plural \
            else None
        if s is None or res is None:
            return await super()._handle(request)
        try:
            if s.namespaced is False and request.namespace is not None:
                raise APIError(404, "NotFound", "the server could not find the requested resource")
            method = request.method.value
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
        except APIError as exc:
            return self._json(exc.status, exc.status["code"])

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
    def _body(request: rendering.Request) -> JSON:
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

    def _admit(self, s: Served, obj: JSON, request: rendering.Request | None) -> JSON:
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
                request: rendering.Request | None = None) -> JSON:
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
               subresource: str | None, request: rendering.Request | None = None) -> JSON:
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

    def _existing(self, s: Served, request: rendering.Request) -> tuple[tuple[str, str, str, str, str], JSON]:
        """The key and stored object a named request is about; 404 if there is none."""
        assert request.name is not None
        key = self._key(s, request.namespace, request.name)
        current = self.objects.get(key)
        if current is None:
            raise self._not_found(s, request.name)
        return key, current

    def _replace(self, s: Served, request: rendering.Request, body: JSON) -> JSON:
        key, current = self._existing(s, request)
        meta = body.get("metadata", {})
        if meta.get("name") not in (None, key[-1]):
            raise APIError(400, "BadRequest", "the name of the object does not match the name on the URL")
        self._check_preconditions(s, current, meta.get("resourceVersion"), meta.get("uid"))
        return self._store(s, key, current, body, request.subresource, request)

    def _patch(self, s: Served, request: rendering.Request) -> JSON:
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

    def _delete(self, s: Served, request: rendering.Request) -> JSON:
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

    def _selectors(self, request: rendering.Request) -> tuple[Callable[[dict[str, str]], bool],
                                                             Callable[[dict[str, str]], bool]]:
        try:
            return (parse_selector(request.params.get("labelSelector", "")),
                    parse_selector(request.params.get("fieldSelector", "")))
        except ValueError as exc:
            raise APIError(400, "BadRequest", str(exc)) from None

    def _list(self, s: Served, request: rendering.Request) -> JSON:
        labels, fields_ = self._selectors(request)
        w = _Watcher(s, request.namespace, None, labels, fields_)
        items = [obj for (g, v, p, _, _), obj in sorted(self.objects.items())
                 if (g, v, p) == (s.group, s.version, s.plural) and w.matches(obj)]
        return {"apiVersion": s.api_version, "kind": f"{s.kind}List",
                "metadata": {"resourceVersion": str(self.revision)}, "items": items}

    async def _watch(self, s: Served, request: rendering.Request) -> aiohttp.web.StreamResponse:
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

        raw = request._raw_request
        assert raw is not None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(raw)

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
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove(watcher)
        try:
            await response.write_eof()
        except ConnectionResetError:
            pass
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
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "kmock", "user": {"token": "kmock"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
    }))
    return path


@dataclass
class RunningAPI:
    api: KubeAPI
    url: str
    kubeconfig: Path


@contextlib.asynccontextmanager
async def running_api(tmp: Path, crd_dir: Path | None = None) -> AsyncIterator[RunningAPI]:
    """Serve a KubeAPI on a free loopback port, with the CRDs from ``crd_dir`` installed."""
    async with KubeAPI() as api, kmock.Server(api) as server:
        if crd_dir is not None:
            api.install_crds(sorted(crd_dir.glob("*.yaml")))
        url = str(server.url).rstrip("/")
        yield RunningAPI(api, url, kubeconfig(url, tmp / f"kubeconfig-{server.port}"))


async def serve(host: str, port: int, crd_dir: Path, kubeconfig_path: Path) -> None:
    """Serve until cancelled; the kubeconfig is written once the server listens."""
    async with KubeAPI() as api, kmock.Server(api, host=host, port=port) as server:
        api.install_crds(sorted(crd_dir.glob("*.yaml")))
        kubeconfig(str(server.url).rstrip("/"), kubeconfig_path)
        await asyncio.Event().wait()


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m lab.kube_api")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6443)
    p.add_argument("--crds", type=Path, required=True)
    p.add_argument("--kubeconfig", type=Path, required=True)
    a = p.parse_args()
    asyncio.run(serve(a.host, a.port, a.crds, a.kubeconfig))
