"""The Kubernetes datastore (``DATASTORE_TYPE=kubernetes``), through kubernetes-asyncio.

Most Calico clusters keep Calico's state in the Kubernetes API. This backend
meets the same contract as the etcd one (:mod:`libcalico.backend.api`, one
parametrised test suite), mapping each kind onto one or more Kubernetes
*sources*:

* the CRD kinds onto custom resources in ``crd.projectcalico.org/v1`` or, in
  Calico's no-API-server mode, ``projectcalico.org/v3``. The group is chosen as
  libcalico-go chooses it: ``CALICO_API_GROUP`` if set, else discovery (v3
  when only projectcalico.org is served);
* Node onto Kubernetes Nodes, WorkloadEndpoint onto Pods (see
  :mod:`.conversion`); writes become patches of the Node's annotations and
  labels and of the Pod's status annotations, as Calico's CNI plugin does;
* NetworkPolicy onto Calico's CRD *and* Kubernetes NetworkPolicies, which show
  as read-only ``knp.default.<name>`` policies.

Revisions are resourceVersions. Writes with a revision carry it (PUT body,
patch metadata, DeleteOptions preconditions) so the API server does the
compare-and-swap and answers 409. A kind served from two sources has a
composite revision ``<rv1>/<rv2>`` for its lists and watch events, as in
libcalico-go; a plain revision applies to each source. A watch whose
resourceVersion is too old (410 Gone, sent as an ERROR event) raises
:class:`WatchCompacted`, and :mod:`libcalico.watching` re-lists. Server-side
watch timeouts and BOOKMARK events just move the watch on.

The official client is used as an async library (kubernetes-asyncio, its
generated twin), because every daemon here is asyncio; no HTTP is spoken by
hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pydantic
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from libcalico.api import crds
from libcalico.api.meta import Resource
from libcalico.backend import codec
from libcalico.backend.api import EventType, WatchEvent
from libcalico.backend.kubernetes import conversion
from libcalico.errors import (AlreadyExists, CalicoError, Conflict, CorruptEntry, DatastoreUnavailable, ErroredField,
                              NotFound,
                              OperationNotSupported, ValidationError, WatchCompacted)
from libcalico.model import KVList, KVPair, ResourceKey, ResourceListOptions, resource_class
from libcalico.names import parse_workload_endpoint_name

log = logging.getLogger(__name__)

JSON = dict[str, Any]
V1 = conversion.V1_API_VERSION
V3 = conversion.V3_API_VERSION
API_GROUPS = (V1, V3)
# Server-side watch timeout: the stream ends after this and is re-opened from the last version.
WATCH_TIMEOUT_SECONDS = 300


@dataclass(frozen=True, slots=True)
class KubeConfig:
    kubeconfig: str = ""          # path; "" = in-cluster service account
    api_endpoint: str = ""        # overrides the kubeconfig's server (K8S_API_ENDPOINT)
    api_group: str = ""           # CALICO_API_GROUP: crd.projectcalico.org/v1 or projectcalico.org/v3; "" = discover


@dataclass
class _Source:
    """One Kubernetes resource that holds (part of) a Calico kind."""

    what: str                                   # e.g. "ippools.crd.projectcalico.org", for errors
    namespaced: bool
    list: Callable[..., Awaitable[Any]]         # the client's list function (also used to watch)
    list_args: Callable[[str], tuple[tuple[Any, ...], JSON]]  # namespace -> (args, kwargs)
    convert: Callable[[JSON], JSON | None]      # Kubernetes object -> v3 wire, None = not a Calico object
    get: Callable[[str, str], Awaitable[Any]] | None = None  # (namespace, name) -> object: cheaper than a list


@dataclass
class _WatchState:
    revisions: list[str]
    seen: dict[ResourceKey, KVPair] = field(default_factory=dict)


def _status(exc: ApiException) -> JSON:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (ValueError, TypeError):
        body = {}
    return body if isinstance(body, dict) else {}


def _map_error(exc: BaseException, key: object, what: str) -> CalicoError:
    if isinstance(exc, CalicoError):
        return exc
    if isinstance(exc, ApiException):
        st = _status(exc)
        reason, message = st.get("reason", exc.reason), st.get("message", str(exc.reason))
        if exc.status == 404:
            return NotFound(key)
        if exc.status == 409 and reason == "AlreadyExists":
            return AlreadyExists(key)
        if exc.status == 409:
            return Conflict(key)
        if exc.status == 410:
            return WatchCompacted(str(key))
        if exc.status in (400, 422):
            return ValidationError([ErroredField(str(key), message)], context=f"{what} rejected by the API server")
        return DatastoreUnavailable(f"{what}: the Kubernetes API answered {exc.status} {reason}: {message}")
    return DatastoreUnavailable(f"{what}: cannot reach the Kubernetes API: {exc}")


class KubernetesBackend:
    """A :class:`~libcalico.backend.api.Backend` on the Kubernetes API (see the module docstring)."""

    def __init__(self, config: KubeConfig) -> None:
        self._config = config
        self._api: k8s.ApiClient | None = None
        self._group = ""
        self._lock = asyncio.Lock()

    # --- connection ----------------------------------------------------------------------

    async def _connect(self) -> k8s.ApiClient:
        async with self._lock:
            if self._api is not None:
                return self._api
            cfg = k8s.Configuration()
            try:
                if self._config.kubeconfig:
                    await k8s_config.load_kube_config(config_file=self._config.kubeconfig,
                                                      client_configuration=cfg)
                else:
                    k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except (k8s_config.ConfigException, OSError, ValueError, TypeError) as exc:
                raise DatastoreUnavailable(f"cannot load the Kubernetes client configuration "
                                           f"({self._config.kubeconfig or 'in-cluster'}): {exc}") from None
            if self._config.api_endpoint:
                cfg.host = self._config.api_endpoint
            api = k8s.ApiClient(cfg)
            try:
                self._group = self._config.api_group or await self._discover(api)
            except BaseException:
                await api.close()
                raise
            if self._group not in API_GROUPS:
                await api.close()
                raise ValidationError([ErroredField("calicoAPIGroup", f"must be one of {', '.join(API_GROUPS)}",
                                                    self._group)])
            self._api = api
            return api

    @staticmethod
    async def _discover(api: k8s.ApiClient) -> str:
        """libcalico-go's UsingV3CRDs: v3 only when projectcalico.org is served and crd.projectcalico.org not."""
        try:
            groups = await k8s.ApisApi(api).get_api_versions()
        except (ApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            log.warning("cannot discover Calico's API group (%s); using %s", exc, V1)
            return V1
        names = {g.name for g in groups.groups or []}
        if crds.V3_GROUP in names and crds.V1_GROUP not in names:
            return V3
        return V1

    @property
    def api_group(self) -> str:
        """The group custom resources are stored in (known after the first request)."""
        return self._group

    async def _sources(self, kind: str) -> list[_Source]:
        api = await self._connect()
        core = k8s.CoreV1Api(api)
        if kind == "Node":
            return [_Source("nodes", False, core.list_node, lambda ns: ((), {}), conversion.k8s_node_to_wire,
                            lambda ns, name: core.read_node(name))]
        if kind == "WorkloadEndpoint":
            def pod_args(ns: str) -> tuple[tuple[Any, ...], JSON]:
                return ((ns,), {}) if ns else ((), {})

            def pods(*args: Any, **kwargs: Any) -> Awaitable[Any]:
                return core.list_namespaced_pod(*args, **kwargs) if args else \
                    core.list_pod_for_all_namespaces(**kwargs)

            def pod_wep(pod: JSON) -> JSON | None:
                return conversion.pod_to_wire(pod) if conversion.pod_is_workload(pod) else None

            return [_Source("pods", True, pods, pod_args, pod_wep)]
        cls = resource_class(kind)
        custom = k8s.CustomObjectsApi(api)
        group, version = self._group.split("/")

        def crd_args(ns: str) -> tuple[tuple[Any, ...], JSON]:
            if cls.NAMESPACED and ns:
                return (group, version, ns, cls.PLURAL), {}
            return (group, version, cls.PLURAL), {}

        def crd_list(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            if len(args) == 4:
                return custom.list_namespaced_custom_object(*args, **kwargs)
            return custom.list_cluster_custom_object(*args, **kwargs)

        sources = [_Source(f"{cls.PLURAL}.{group}", cls.NAMESPACED, crd_list, crd_args, conversion.crd_to_wire)]
        if kind == "NetworkPolicy":
            net = k8s.NetworkingV1Api(api)

            def knp_list(*args: Any, **kwargs: Any) -> Awaitable[Any]:
                return net.list_namespaced_network_policy(*args, **kwargs) if args else \
                    net.list_network_policy_for_all_namespaces(**kwargs)

            sources.append(_Source("networkpolicies.networking.k8s.io", True, knp_list,
                                   lambda ns: (((ns,), {}) if ns else ((), {})), conversion.knp_to_wire))
        return sources

    # --- conversion ------------------------------------------------------------------------

    def _plain(self, obj: Any) -> JSON:
        if isinstance(obj, dict):
            return obj
        assert self._api is not None
        out: JSON = self._api.sanitize_for_serialization(obj)
        return out

    def _pair(self, kind: str, wire: JSON) -> KVPair:
        cls = resource_class(kind)
        try:
            value: Resource = cls.model_validate(wire)
        except pydantic.ValidationError as exc:
            meta = wire.get("metadata") or {}
            key = ResourceKey(kind, str(meta.get("name", "")), str(meta.get("namespace", "") or ""))
            raise CorruptEntry(key, codec.reasons(exc)) from exc
        return KVPair(ResourceKey.for_resource(value), value, value.metadata.resource_version)

    # --- reads -----------------------------------------------------------------------------

    async def get(self, key: ResourceKey) -> KVPair:
        if key.kind == "WorkloadEndpoint":
            pod = await self._pod_for(key)
            wire = conversion.pod_to_wire(pod) if conversion.pod_is_workload(pod) else None
            if wire is None or wire["metadata"]["name"] != key.name:
                raise NotFound(key)
            return self._pair(key.kind, wire)
        sources = await self._sources(key.kind)
        if len(sources) == 1 and sources[0].get is not None:
            try:
                obj = self._plain(await sources[0].get(key.namespace, key.name))
            except Exception as exc:
                raise _map_error(exc, key, f"get {sources[0].what}") from None
            wire = sources[0].convert(obj)
            if wire is None:
                raise NotFound(key)
            return self._pair(key.kind, wire)
        listing = await self.list(ResourceListOptions(key.kind, key.namespace, key.name))
        for kv in listing.items:
            if kv.key == key:
                return kv
        raise NotFound(key)

    async def _pod_for(self, key: ResourceKey) -> JSON:
        ids = parse_workload_endpoint_name(key.name)
        if ids is None or ids.orchestrator != "k8s":
            raise NotFound(key, "not the name of a Kubernetes pod's endpoint")
        api = await self._connect()
        try:
            return self._plain(await k8s.CoreV1Api(api).read_namespaced_pod(ids.pod, key.namespace))
        except Exception as exc:
            raise _map_error(exc, key, "get pod") from None

    async def list(self, opts: ResourceListOptions) -> KVList:
        sources = await self._sources(opts.kind)
        items: list[KVPair] = []
        corrupt: list[CorruptEntry] = []
        revisions: list[str] = []
        for src in sources:
            args, kwargs = src.list_args(opts.namespace)
            if opts.name and src.convert is conversion.crd_to_wire:
                kwargs["field_selector"] = f"metadata.name={opts.name}"
            try:
                result = self._plain(await src.list(*args, **kwargs))
            except Exception as exc:
                raise _map_error(exc, opts.kind, f"list {src.what}") from None
            revisions.append(str((result.get("metadata") or {}).get("resourceVersion", "")))
            for obj in result.get("items") or []:
                wire = src.convert(self._plain(obj))
                if wire is None:
                    continue
                try:
                    kv = self._pair(opts.kind, wire)
                except CorruptEntry as exc:
                    log.warning("skipping %s", exc)
                    if opts.matches(exc.key):  # type: ignore[arg-type]
                        corrupt.append(exc)
                    continue
                if opts.matches(kv.key):
                    items.append(kv)
        items.sort(key=lambda kv: (kv.key.namespace, kv.key.name))
        return KVList(items, "/".join(revisions), corrupt)

    # --- writes ----------------------------------------------------------------------------

    def _body(self, kv: KVPair) -> JSON:
        value: Resource = kv.value
        meta = value.metadata.model_copy(update={"resource_version": kv.revision})
        return conversion.resource_to_crd(value.model_copy(update={"metadata": meta}), self._group)

    def _crd_path(self, key: ResourceKey) -> tuple[str, str, str]:
        group, version = self._group.split("/")
        return group, version, key.resource_class.PLURAL

    async def _custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(await self._connect())

    def _read_only(self, key: ResourceKey, operation: str) -> None:
        if key.kind == "NetworkPolicy" and key.name.startswith(conversion.KNP_PREFIX):
            raise OperationNotSupported(operation, key, "Kubernetes NetworkPolicies are changed through the "
                                                        "Kubernetes API (networking.k8s.io)")
        if key.kind == "Node" and operation in ("Create", "Delete"):
            raise OperationNotSupported(operation, key, "Nodes come from Kubernetes Nodes")

    async def create(self, kv: KVPair) -> KVPair:
        self._read_only(kv.key, "Create")
        if kv.key.kind == "WorkloadEndpoint":
            return await self._patch_pod(kv, "", "Create")
        custom = await self._custom()
        group, version, plural = self._crd_path(kv.key)
        body = self._body(kv.with_revision(""))
        try:
            if kv.key.namespaced:
                out = await custom.create_namespaced_custom_object(group, version, kv.key.namespace, plural, body)
            else:
                out = await custom.create_cluster_custom_object(group, version, plural, body)
        except Exception as exc:
            raise _map_error(exc, kv.key, "create") from None
        return self._pair(kv.key.kind, conversion.crd_to_wire(out))

    async def update(self, kv: KVPair) -> KVPair:
        self._read_only(kv.key, "Update")
        if kv.key.kind == "WorkloadEndpoint":
            return await self._patch_pod(kv, kv.revision, "Update")
        if kv.key.kind == "Node":
            return await self._patch_node(kv)
        custom = await self._custom()
        group, version, plural = self._crd_path(kv.key)
        body = self._body(kv)
        try:
            if kv.key.namespaced:
                out = await custom.replace_namespaced_custom_object(group, version, kv.key.namespace, plural,
                                                                    kv.key.name, body)
            else:
                out = await custom.replace_cluster_custom_object(group, version, plural, kv.key.name, body)
        except Exception as exc:
            raise _map_error(exc, kv.key, "update") from None
        return self._pair(kv.key.kind, conversion.crd_to_wire(out))

    async def apply(self, kv: KVPair) -> KVPair:
        kv = kv.with_revision("")
        if kv.key.kind in ("WorkloadEndpoint", "Node"):
            return await self.update(kv)
        for _ in range(5):
            try:
                return await self.update(kv)
            except NotFound:
                pass
            try:
                return await self.create(kv)
            except AlreadyExists:
                continue
        raise Conflict(kv.key)

    async def delete(self, key: ResourceKey, revision: str = "") -> KVPair:
        self._read_only(key, "Delete")
        if key.kind == "WorkloadEndpoint":
            current = await self.get(key)
            cleared = current.value.model_copy(update={"spec": current.value.spec.model_copy(
                update={"ip_networks": [], "container_id": ""})})
            await self._patch_pod(KVPair(key, cleared, revision), revision, "Delete")
            return current
        custom = await self._custom()
        group, version, plural = self._crd_path(key)
        body = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(resource_version=revision) if revision
                                   else None)
        try:
            if key.namespaced:
                out = await custom.delete_namespaced_custom_object(group, version, key.namespace, plural, key.name,
                                                                   body=body)
            else:
                out = await custom.delete_cluster_custom_object(group, version, plural, key.name, body=body)
        except Exception as exc:
            raise _map_error(exc, key, "delete") from None
        return self._pair(key.kind, conversion.crd_to_wire(out))

    async def _patch_pod(self, kv: KVPair, revision: str, operation: str) -> KVPair:
        ids = parse_workload_endpoint_name(kv.key.name)
        if ids is None or ids.orchestrator != "k8s":
            raise OperationNotSupported(operation, kv.key, "on the Kubernetes datastore a WorkloadEndpoint is "
                                                           "named <node>-k8s-<pod>-<endpoint> after its pod")
        api = await self._connect()
        wire = kv.value.to_wire()
        patch = conversion.wep_pod_patch(wire, revision) if operation != "Delete" else {
            "metadata": {"annotations": {conversion.POD_IP: "", conversion.POD_IPS: ""},
                         **({"resourceVersion": revision} if revision else {})}}
        try:
            pod = await k8s.CoreV1Api(api).patch_namespaced_pod_status(ids.pod, kv.key.namespace, patch)
        except Exception as exc:
            raise _map_error(exc, kv.key, f"{operation.lower()} (patch pod {kv.key.namespace}/{ids.pod})") from None
        return self._pair("WorkloadEndpoint", conversion.pod_to_wire(self._plain(pod)))

    async def _patch_node(self, kv: KVPair) -> KVPair:
        api = await self._connect()
        wire = kv.value.to_wire()
        wire.setdefault("metadata", {})["resourceVersion"] = kv.revision
        try:
            node = await k8s.CoreV1Api(api).patch_node(kv.key.name, conversion.node_patch(wire))
        except Exception as exc:
            raise _map_error(exc, kv.key, "update (patch node)") from None
        return self._pair("Node", conversion.k8s_node_to_wire(self._plain(node)))

    # --- watch -------------------------------------------------------------------------------

    async def watch(self, opts: ResourceListOptions, revision: str) -> AsyncIterator[WatchEvent]:
        sources = await self._sources(opts.kind)
        parts = revision.split("/") if "/" in revision else [revision] * len(sources)
        if len(parts) != len(sources):
            raise WatchCompacted(revision)
        state = _WatchState(list(parts))
        queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue()
        tasks = [asyncio.create_task(self._watch_source(i, src, opts, state, queue), name=f"watch {src.what}")
                 for i, src in enumerate(sources)]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t

    async def _watch_source(self, index: int, src: _Source, opts: ResourceListOptions, state: _WatchState,
                            queue: asyncio.Queue[WatchEvent | BaseException]) -> None:
        try:
            while True:  # each pass is one watch request; the server ends it after its timeout
                args, kwargs = src.list_args(opts.namespace)
                if opts.name and src.convert is conversion.crd_to_wire:
                    kwargs["field_selector"] = f"metadata.name={opts.name}"
                async with k8s_watch.Watch() as w:
                    stream = w.stream(src.list, *args, resource_version=state.revisions[index],
                                      timeout_seconds=WATCH_TIMEOUT_SECONDS, allow_watch_bookmarks=True, **kwargs)
                    async for event in stream:
                        obj = event["raw_object"]
                        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                        if rv:
                            state.revisions[index] = rv
                        if event["type"] == "BOOKMARK":
                            continue
                        out = self._event(opts, src, event["type"], obj, state)
                        if out is not None:
                            queue.put_nowait(out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(_map_error(exc, state.revisions[index], f"watch {src.what}"))

    def _event(self, opts: ResourceListOptions, src: _Source, type_: str, obj: JSON,
               state: _WatchState) -> WatchEvent | None:
        wire = src.convert(obj)
        revision = "/".join(state.revisions)
        if wire is None:
            return None
        try:
            kv = self._pair(opts.kind, wire)
        except CorruptEntry as exc:
            key: ResourceKey = exc.key  # type: ignore[assignment]
            if not opts.matches(key):
                return None
            old = state.seen.pop(key, None)
            if type_ == "DELETED":
                return WatchEvent(EventType.DELETED, key, None, old, revision) if old is not None else None
            kind = EventType.ADDED if type_ == "ADDED" else EventType.MODIFIED
            return WatchEvent(kind, key, None, old, revision, exc)
        if not opts.matches(kv.key):
            return None
        old = state.seen.get(kv.key)
        if type_ == "DELETED":
            state.seen.pop(kv.key, None)
            return WatchEvent(EventType.DELETED, kv.key, None, old or kv, revision)
        state.seen[kv.key] = kv
        kind = EventType.ADDED if type_ == "ADDED" else EventType.MODIFIED
        return WatchEvent(kind, kv.key, kv, old, revision)

    # --- secrets (BGP passwords) ----------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded (BGPPeer passwords refer to keys of secrets)."""
        import base64

        api = await self._connect()
        try:
            secret = self._plain(await k8s.CoreV1Api(api).read_namespaced_secret(name, namespace))
        except Exception as exc:
            raise _map_error(exc, f"Secret({namespace}/{name})", "read secret") from None
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    async def close(self) -> None:
        if self._api is not None:
            with contextlib.suppress(Exception):
                await self._api.close()
            self._api = None


__all__ = ["API_GROUPS", "KubeConfig", "KubernetesBackend"]
