"""The test API server itself (kubemock, through tests/kube_api.py), driven by the official ``kubernetes`` client.

Each test pins one behaviour that the Kubernetes backend, kubectl or kopf
depend on, as the Kubernetes API conventions document it (the list is
kubemock.server's docstring). The client is synchronous, so its calls run in a
thread while the loop serves the API.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

import kubemock
from libcalico import patching
from tests.kube_api import RunningAPI, check_schema, parse_selector

T = TypeVar("T")
GROUP, VERSION, PLURAL = "crd.projectcalico.org", "v1", "ippools"


def clients(k: RunningAPI) -> tuple[kubernetes.client.CoreV1Api, kubernetes.client.CustomObjectsApi]:
    cfg = kubernetes.client.Configuration()
    cfg.host = k.url
    api = kubernetes.client.ApiClient(cfg)
    return kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kwargs)


def ippool(name: str, cidr: str = "10.1.0.0/16", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "IPPool", "metadata": {"name": name, **meta},
            "spec": {"cidr": cidr}}


async def error_of(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as info:
        await call(fn, *args, **kwargs)
    return info.value.status, json.loads(info.value.body)


class TestWrites:
    async def test_create_answers_201_with_server_assigned_metadata(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        node = await call(core.create_node, {"metadata": {"name": "n1"}})
        assert node is not None  # the client returns None unless the answer is 201 with the object
        assert node.metadata.resource_version and node.metadata.uid and node.metadata.creation_timestamp
        _, custom = clients(kube_api)
        data, code, _ = await call(custom.create_cluster_custom_object_with_http_info, GROUP, VERSION, PLURAL,
                                   ippool("p"))
        assert code == 201 and int(data["metadata"]["resourceVersion"]) > int(node.metadata.resource_version)

    async def test_namespaces_are_created_got_and_listed_as_the_namespace_resource(self, kube_api: RunningAPI) -> None:
        # /api/v1/namespaces[/NAME] is the Namespace resource, not a namespace prefix 
        core, _ = clients(kube_api)
        await call(core.create_namespace, {"metadata": {"name": "shop", "labels": {"team": "a"}}})
        got = await call(core.read_namespace, "shop")
        assert got.metadata.labels == {"team": "a"}
        assert [n.metadata.name for n in (await call(core.list_namespace)).items] == ["shop"]
        await call(core.create_namespaced_pod, "shop", {"metadata": {"name": "p"}, "spec": {"containers": []}})
        assert [p.metadata.name for p in (await call(core.list_namespaced_pod, "shop")).items] == ["p"]

    async def test_duplicate_create_is_409_already_exists_and_missing_name_is_422(self, kube_api: RunningAPI) -> None:
        _, custom = clients(kube_api)
        await call(custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, ippool("p"))
        code, st = await error_of(custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, ippool("p"))
        assert (code, st["reason"]) == (409, "AlreadyExists")
        code, st = await error_of(custom.create_cluster_custom_object, GROUP, VERSION, PLURAL,
                                  {"metadata": {}, "spec": {}})
        assert (code, st["reason"]) == (422, "Invalid")

    async def test_put_replaces_and_a_stale_resource_version_is_409_conflict(self, kube_api: RunningAPI) -> None:
        _, custom = clients(kube_api)
        created = await call(custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, ippool("p"))
        body = {**created, "spec": {"cidr": "10.2.0.0/16"}}
        replaced = await call(custom.replace_cluster_custom_object, GROUP, VERSION, PLURAL, "p", body)
        assert replaced["spec"]["cidr"] == "10.2.0.0/16"
        assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
        assert replaced["metadata"]["generation"] == 2
        code, st = await error_of(custom.replace_cluster_custom_object, GROUP, VERSION, PLURAL, "p", body)
        assert (code, st["reason"]) == (409, "Conflict")
        code, _ = await error_of(custom.replace_cluster_custom_object, GROUP, VERSION, PLURAL, "nope", ippool("nope"))
        assert code == 404
        unconditional = {**ippool("p"), "spec": {"cidr": "10.3.0.0/16"}}
        assert (await call(custom.replace_cluster_custom_object, GROUP, VERSION, PLURAL, "p",
                           unconditional))["spec"]["cidr"] == "10.3.0.0/16"

    async def test_delete_honours_resource_version_preconditions(self, kube_api: RunningAPI) -> None:
        _, custom = clients(kube_api)
        created = await call(custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, ippool("p"))
        stale = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(
            resource_version="1"))
        code, st = await error_of(custom.delete_cluster_custom_object, GROUP, VERSION, PLURAL, "p", body=stale)
        assert (code, st["reason"]) == (409, "Conflict")
        ok = kubernetes.client.V1DeleteOptions(preconditions=kubernetes.client.V1Preconditions(
            resource_version=created["metadata"]["resourceVersion"]))
        await call(custom.delete_cluster_custom_object, GROUP, VERSION, PLURAL, "p", body=ok)
        assert kube_api.api.get_object(f"{GROUP}/{VERSION}", PLURAL, "p") is None

    async def test_merge_and_json_patches_and_patch_preconditions(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        node = await call(core.create_node, {"metadata": {"name": "n1", "labels": {"a": "1"}}})
        patched = await call(core.patch_node, "n1", {"metadata": {"labels": {"b": "2", "a": None}}})
        assert patched.metadata.labels == {"b": "2"}
        code, _ = await error_of(core.patch_node, "n1", {"metadata": {
            "resourceVersion": node.metadata.resource_version, "labels": {"c": "3"}}})
        assert code == 409
        patched = await call(core.patch_node, "n1", [{"op": "add", "path": "/metadata/labels/c", "value": "3"}])
        assert patched.metadata.labels == {"b": "2", "c": "3"}

    async def test_finalizers_hold_deletion_until_removed(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        await call(core.create_node, {"metadata": {"name": "n1", "finalizers": ["x/y"]}})
        await call(core.delete_node, "n1")
        held = kube_api.api.get_object("v1", "nodes", "n1")
        assert held is not None and held["metadata"]["deletionTimestamp"]
        await call(core.patch_node, "n1", {"metadata": {"finalizers": None}})
        assert kube_api.api.get_object("v1", "nodes", "n1") is None

    async def test_custom_resources_are_validated_and_pruned_by_their_crd_schema(self, kube_api: RunningAPI) -> None:
        _, custom = clients(kube_api)
        bad = {**ippool("p"), "spec": {"cidr": "10.1.0.0/16", "ipipMode": "Sometimes"}}
        code, st = await error_of(custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, bad)
        assert code == 422 and "spec.ipipMode: Unsupported value" in st["message"]
        extra = {**ippool("p"), "spec": {"cidr": "10.1.0.0/16", "bogus": 1}}
        code, st = await error_of(custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, extra,
                                  field_validation="Strict")
        assert code == 400 and 'unknown field "spec.bogus"' in st["message"]
        stored = await call(custom.create_cluster_custom_object, GROUP, VERSION, PLURAL, extra)
        assert stored["spec"] == {"cidr": "10.1.0.0/16"}  # pruned, as the API server prunes


class TestReads:
    async def test_list_carries_kind_and_the_current_resource_version(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        await call(core.create_node, {"metadata": {"name": "n1"}})
        listing = await call(core.list_node)
        assert listing.metadata.resource_version == str(kube_api.api.revision)
        assert [n.metadata.name for n in listing.items] == ["n1"]

    async def test_label_and_field_selectors_filter_lists(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        for name, labels in (("a", {"role": "rr"}), ("b", {"role": "edge"}), ("c", {})):
            await call(core.create_node, {"metadata": {"name": name, "labels": labels}})

        async def names(**kw: Any) -> list[str]:
            return [n.metadata.name for n in (await call(core.list_node, **kw)).items]

        assert await names(label_selector="role=rr") == ["a"]
        assert await names(label_selector="role in (rr,edge)") == ["a", "b"]
        assert await names(label_selector="!role") == ["c"]
        assert await names(label_selector="role,role!=rr") == ["b"]
        assert await names(field_selector="metadata.name=c") == ["c"]
        code, _ = await error_of(core.list_node, label_selector="role=(")
        assert code == 400


class TestWatch:
    async def _events(self, k: RunningAPI, n: int, **kw: Any) -> list[dict[str, Any]]:
        def collect() -> list[dict[str, Any]]:
            core, _ = clients(k)
            w = kubernetes.watch.Watch()
            out = []
            for event in w.stream(core.list_node, timeout_seconds=5, **kw):
                out.append({"type": event["type"], "object": event["raw_object"]})
                if len(out) == n:
                    w.stop()
            return out
        return await asyncio.to_thread(collect)

    async def test_watch_from_a_resource_version_replays_what_came_after(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        first = await call(core.create_node, {"metadata": {"name": "a"}})
        await call(core.create_node, {"metadata": {"name": "b"}})
        await call(core.patch_node, "a", {"metadata": {"labels": {"x": "1"}}})
        events = await self._events(kube_api, 2, resource_version=first.metadata.resource_version)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b"), ("MODIFIED", "a")]

    async def test_watch_without_a_version_starts_with_what_exists(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        await call(core.create_node, {"metadata": {"name": "a"}})
        events = await self._events(kube_api, 1)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]

    async def test_watch_from_a_compacted_version_gets_410_expired(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        first = await call(core.create_node, {"metadata": {"name": "a"}})
        await call(core.patch_node, "a", {"metadata": {"labels": {"x": "1"}}})
        kube_api.api.compact(kube_api.api.revision)
        with pytest.raises(ApiException) as info:
            await self._events(kube_api, 1, resource_version=first.metadata.resource_version)
        assert info.value.status == 410

    async def test_bookmarks_carry_the_current_version(self, kube_api: RunningAPI) -> None:
        kube_api.api.bookmark_interval = 0.05
        core, _ = clients(kube_api)
        await call(core.create_node, {"metadata": {"name": "a"}})
        events = await self._events(kube_api, 1, resource_version=str(kube_api.api.revision),
                                    allow_watch_bookmarks=True)
        assert events[0]["type"] == "BOOKMARK"
        assert events[0]["object"]["metadata"]["resourceVersion"] == str(kube_api.api.revision)

    async def test_a_watched_object_leaving_the_selector_is_deleted_for_the_watcher(
            self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        start = str(kube_api.api.revision)
        await call(core.create_node, {"metadata": {"name": "a", "labels": {"role": "rr"}}})
        await call(core.create_node, {"metadata": {"name": "b"}})
        await call(core.patch_node, "a", {"metadata": {"labels": {"role": None}}})
        events = await self._events(kube_api, 2, resource_version=start, label_selector="role=rr")
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("DELETED", "a")]


class TestDiscoveryAndCRDs:
    async def test_creating_a_crd_serves_its_resource(self, kube_api: RunningAPI) -> None:
        cfg = kubernetes.client.Configuration()
        cfg.host = kube_api.url
        apis = kubernetes.client.ApisApi(kubernetes.client.ApiClient(cfg))
        groups = {g.name for g in (await call(apis.get_api_versions)).groups}
        assert "crd.projectcalico.org" in groups and "projectcalico.org" not in groups
        ext = kubernetes.client.ApiextensionsV1Api(kubernetes.client.ApiClient(cfg))
        await call(ext.create_custom_resource_definition, {
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                         "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}})
        groups = {g.name for g in (await call(apis.get_api_versions)).groups}
        assert "example.com" in groups
        _, custom = clients(kube_api)
        w = await call(custom.create_namespaced_custom_object, "example.com", "v1", "ns1", "widgets",
                       {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})
        assert w["metadata"]["namespace"] == "ns1"

    async def test_version_and_root_answer_and_unknown_paths_are_404_status(self, kube_api: RunningAPI) -> None:
        cfg = kubernetes.client.Configuration()
        cfg.host = kube_api.url
        version = await call(kubernetes.client.VersionApi(kubernetes.client.ApiClient(cfg)).get_code)
        assert version.major == "1" and version.git_version.startswith("v1.")
        _, custom = clients(kube_api)
        code, body = await error_of(custom.list_cluster_custom_object, "nope.example.com", "v1", "things")
        assert code == 404 and body["kind"] == "Status" and body["reason"] == "NotFound"
        code, body = await error_of(custom.list_namespaced_custom_object, GROUP, VERSION, "ns1", PLURAL)
        assert code == 404 and body["reason"] == "NotFound"  # a cluster-scoped kind under a namespace
        async with aiohttp.ClientSession() as session, session.get(kube_api.url + "/") as root:
            paths = (await root.json())["paths"]
        assert {"/api", "/api/v1", "/apis", "/version", f"/apis/{GROUP}/{VERSION}"} <= set(paths)


class TestHelpers:
    def test_selectors(self) -> None:
        assert parse_selector("a=b,c!=d")({"a": "b"})
        assert parse_selector("a notin (x,y),!z")({"a": "b"})
        with pytest.raises(ValueError):
            parse_selector("a=(")

    @pytest.mark.parametrize("impl", [kubemock, patching], ids=["kubemock", "libcalico.patching"])
    def test_the_servers_patches_and_calicoctls_apply_alike(self, impl: Any) -> None:
        assert impl.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}
        assert impl.json_patch({"a": [1]}, [{"op": "add", "path": "/a/-", "value": 2}]) == {"a": [1, 2]}
        with pytest.raises(ValueError):
            impl.json_patch({}, [{"op": "remove", "path": "/x"}])

    def test_paths_parse_as_the_api_server_reads_them(self) -> None:
        parse = kubemock.parse_path
        assert parse("/api/v1/namespaces") == kubemock.ResourcePath("", "v1", "namespaces")
        assert parse("/api/v1/namespaces/shop/status") == kubemock.ResourcePath("", "v1", "namespaces", None,
                                                                                "shop", "status")
        assert parse("/api/v1/namespaces/shop/pods/web/status") == kubemock.ResourcePath("", "v1", "pods", "shop",
                                                                                         "web", "status")
        assert parse("/apis/crd.projectcalico.org/v1/ippools/p") == kubemock.ResourcePath(
            "crd.projectcalico.org", "v1", "ippools", None, "p")
        assert parse("/apis/crd.projectcalico.org/v1") is None and parse("/version") is None

    def test_schema_checks(self) -> None:
        unknown: list[str] = []
        invalid: list[str] = []
        schema = {"type": "object", "properties": {"n": {"type": "integer"}, "s": {"type": "string"}}}
        out = check_schema({"n": "x", "s": "ok", "z": 1}, schema, "spec", unknown, invalid)
        assert unknown == ["spec.z"] and len(invalid) == 1 and out == {"n": "x", "s": "ok"}


class TestControllerKinds:
    """What calico-kube-controllers needs beyond the Calico kinds: Namespaces, Leases, Events."""

    async def test_namespaces_are_created_listed_read_patched_and_deleted(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        await call(core.create_namespace, {"metadata": {"name": "web", "labels": {"team": "a"}}})
        assert [n.metadata.name for n in (await call(core.list_namespace)).items] == ["web"]
        await call(core.patch_namespace, "web", {"metadata": {"labels": {"team": "b"}}})
        assert (await call(core.read_namespace, "web")).metadata.labels == {"team": "b"}
        await call(core.create_namespaced_service_account, "web", {"metadata": {"name": "app"}})
        assert [s.metadata.name for s in (await call(core.list_namespaced_service_account, "web")).items] == ["app"]
        await call(core.delete_namespace, "web")
        assert (await call(core.list_namespace)).items == []

    async def test_a_lease_replaced_at_a_stale_resource_version_is_409(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        coord = kubernetes.client.CoordinationV1Api(core.api_client)
        lease = await call(coord.create_namespaced_lease, "kube-system", {
            "metadata": {"name": "l"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
        lease.spec.holder_identity = "b"
        await call(coord.replace_namespaced_lease, "l", "kube-system", lease)
        lease.spec.holder_identity = "c"   # still at the old resourceVersion
        code, body = await error_of(coord.replace_namespaced_lease, "l", "kube-system", lease)
        assert code == 409 and body["reason"] == "Conflict"
        assert (await call(coord.read_namespaced_lease, "l", "kube-system")).spec.holder_identity == "b"

    async def test_events_are_created_with_a_generated_name(self, kube_api: RunningAPI) -> None:
        core, _ = clients(kube_api)
        ev = await call(core.create_namespaced_event, "default", {
            "metadata": {"generateName": "x-"}, "involvedObject": {"kind": "Node", "name": "n1"},
            "reason": "Test", "message": "hello", "type": "Normal"})
        assert ev.metadata.name.startswith("x-")
        assert [e.message for e in (await call(core.list_namespaced_event, "default")).items] == ["hello"]
