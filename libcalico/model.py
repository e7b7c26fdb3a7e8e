"""Keys, list options and KVPairs: what the datastore contract speaks.

A key names one stored object independent of the backend. Each key knows its
etcd path (Calico's layout, so an etcd written by Calico and one written by
pycalico look alike)::

    /calico/resources/v3/projectcalico.org/<plural>/<name>
    /calico/resources/v3/projectcalico.org/<plural>/<namespace>/<name>

The Kubernetes backend maps the same keys to CRDs (or to Pods and Nodes).
IPAM keys (blocks, affinities, handles) join this module with the IPAM issue;
the contract does not change for them.

A revision is an opaque string: etcd's mod_revision, Kubernetes'
resourceVersion. Callers only ever hand back a revision they were given.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from libcalico.api import registry
from libcalico.api.meta import Resource

RESOURCE_PREFIX = "/calico/resources/v3/projectcalico.org/"


def resource_class(kind: str) -> type[Resource]:
    cls = registry.by_kind(kind)
    if cls is None:
        raise ValueError(f"unknown resource kind: {kind}")
    return cls


@dataclass(frozen=True, slots=True)
class ResourceKey:
    """One v3 resource: kind, name and (for namespaced kinds) namespace."""

    kind: str
    name: str
    namespace: str = ""

    @property
    def resource_class(self) -> type[Resource]:
        return resource_class(self.kind)

    @property
    def namespaced(self) -> bool:
        return self.resource_class.NAMESPACED

    def path(self) -> str:
        cls = self.resource_class
        if cls.NAMESPACED:
            return f"{RESOURCE_PREFIX}{cls.PLURAL}/{self.namespace}/{self.name}"
        return f"{RESOURCE_PREFIX}{cls.PLURAL}/{self.name}"

    def __str__(self) -> str:
        if self.namespaced:
            return f"{self.kind}({self.namespace}/{self.name})"
        return f"{self.kind}({self.name})"

    @classmethod
    def for_resource(cls, res: Resource) -> ResourceKey:
        return cls(res.KIND, res.metadata.name, res.metadata.namespace if res.NAMESPACED else "")

    @classmethod
    def from_path(cls, path: str) -> ResourceKey | None:
        """The key for an etcd path, or None if the path is not a v3 resource we know."""
        if not path.startswith(RESOURCE_PREFIX):
            return None
        parts = path[len(RESOURCE_PREFIX):].split("/")
        res_cls = registry.by_plural(parts[0])
        if res_cls is None:
            return None
        if res_cls.NAMESPACED and len(parts) == 3:
            return cls(res_cls.KIND, parts[2], parts[1])
        if not res_cls.NAMESPACED and len(parts) == 2:
            return cls(res_cls.KIND, parts[1])
        return None


@dataclass(frozen=True, slots=True)
class ResourceListOptions:
    """Select resources of one kind; narrow by namespace and/or name ("" = any)."""

    kind: str
    namespace: str = ""
    name: str = ""

    @property
    def resource_class(self) -> type[Resource]:
        return resource_class(self.kind)

    def prefix(self) -> str:
        """The etcd prefix that holds every match (a superset when only name is set)."""
        cls = self.resource_class
        base = f"{RESOURCE_PREFIX}{cls.PLURAL}/"
        if cls.NAMESPACED:
            if self.namespace and self.name:
                return f"{base}{self.namespace}/{self.name}"
            return f"{base}{self.namespace}/" if self.namespace else base
        return f"{base}{self.name}" if self.name else base

    def matches(self, key: ResourceKey) -> bool:
        if key.kind != self.resource_class.KIND:
            return False
        if self.namespace and key.namespace != self.namespace:
            return False
        return not self.name or key.name == self.name


@dataclass(frozen=True, slots=True)
class KVPair:
    """A key, its value and the revision the datastore holds it at ("" = unknown)."""

    key: ResourceKey
    value: Any
    revision: str = ""

    def with_revision(self, revision: str) -> KVPair:
        return replace(self, revision=revision)


@dataclass(frozen=True, slots=True)
class KVList:
    """The result of a list: the pairs, sorted by key, and the datastore revision of the list."""

    items: list[KVPair] = field(default_factory=list)
    revision: str = ""
