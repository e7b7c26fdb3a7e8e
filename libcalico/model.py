"""Keys, list options and KVPairs: what the datastore contract speaks.

A key names one stored object independent of the backend. Each key knows its
etcd path (Calico's layout, so an etcd written by Calico and one written by
pycalico look alike)::

    /calico/resources/v3/projectcalico.org/<plural>/<name>
    /calico/resources/v3/projectcalico.org/<plural>/<namespace>/<name>

IPAM's kinds live where Calico keeps them::

    /calico/ipam/v2/assignment/ipv4/block/10.244.56.64-26     IPAMBlock 10-244-56-64-26
    /calico/ipam/v2/host/<node>/ipv4/block/10.244.56.64-26    BlockAffinity <node>-10-244-56-64-26
    /calico/ipam/v2/handle/<handle id>                        IPAMHandle
    /calico/ipam/v2/config                                    IPAMConfig default

The Kubernetes backend maps the same keys to CRDs (or to Pods and Nodes).

A revision is an opaque string: etcd's mod_revision, Kubernetes'
resourceVersion. Callers only ever hand back a revision they were given.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

from libcalico.api import registry
from libcalico.api.ipam import name_to_cidr, split_affinity_name
from libcalico.api.meta import Resource
from libcalico.errors import CorruptEntry

RESOURCE_PREFIX = "/calico/resources/v3/projectcalico.org/"
IPAM_PREFIX = "/calico/ipam/v2/"
_BLOCKS = IPAM_PREFIX + "assignment/"
_AFFINITIES = IPAM_PREFIX + "host/"
_HANDLES = IPAM_PREFIX + "handle/"
_CONFIG = IPAM_PREFIX + "config"


def _block_path(cidr: str) -> str:
    version = 6 if ":" in cidr else 4
    return f"ipv{version}/block/{cidr.replace('/', '-')}"


def _ipam_path(kind: str, name: str) -> str | None:
    if kind == "IPAMBlock":
        cidr = name_to_cidr(name)
        return f"{_BLOCKS}{_block_path(cidr)}" if cidr else f"{_BLOCKS}invalid/{name}"
    if kind == "BlockAffinity":
        split = split_affinity_name(name)
        return f"{_AFFINITIES}{split[0]}/{_block_path(split[1])}" if split else f"{_AFFINITIES}invalid/{name}"
    if kind == "IPAMHandle":
        return f"{_HANDLES}{name}"
    if kind == "IPAMConfig":
        return _CONFIG
    return None


def _ipam_key(path: str) -> tuple[str, str] | None:
    """(kind, name) for an IPAM path."""
    parts = path.split("/")
    if path.startswith(_BLOCKS) and len(parts) == 8 and parts[6] == "block":
        return "IPAMBlock", parts[7].replace(".", "-").replace(":", "-")
    if path.startswith(_AFFINITIES) and len(parts) == 9 and parts[7] == "block":
        return "BlockAffinity", f"{parts[5]}-{parts[8].replace('.', '-').replace(':', '-')}"
    if path.startswith(_HANDLES) and len(parts) == 6:
        return "IPAMHandle", parts[5]
    if path == _CONFIG:
        return "IPAMConfig", "default"
    return None


@functools.lru_cache(maxsize=16384)
def _path(kind: str, name: str, namespace: str) -> str:
    """The datastore path of a key (cached: IPAM computes the same few on every allocation)."""
    cls = resource_class(kind)
    ipam = _ipam_path(cls.KIND, name)
    if ipam is not None:
        return ipam
    if cls.NAMESPACED:
        return f"{RESOURCE_PREFIX}{cls.PLURAL}/{namespace}/{name}"
    return f"{RESOURCE_PREFIX}{cls.PLURAL}/{name}"


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
        return _path(self.kind, self.name, self.namespace)

    def __str__(self) -> str:
        if self.namespaced:
            return f"{self.kind}({self.namespace}/{self.name})"
        return f"{self.kind}({self.name})"

    @classmethod
    def for_resource(cls, res: Resource) -> ResourceKey:
        return cls(res.KIND, res.metadata.name, res.metadata.namespace if res.NAMESPACED else "")

    @classmethod
    def from_path(cls, path: str) -> ResourceKey | None:
        """The key for an etcd path, or None if the path is not a resource we know."""
        if path.startswith(IPAM_PREFIX):
            found = _ipam_key(path)
            return cls(*found) if found else None
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
    """Select resources of one kind; narrow by namespace and/or name ("" = any).

    ``node`` narrows BlockAffinities to one node's, as Calico's
    BlockAffinityListOptions.Host does (on etcd, the node's own key prefix).
    """

    kind: str
    namespace: str = ""
    name: str = ""
    node: str = ""

    @property
    def resource_class(self) -> type[Resource]:
        return resource_class(self.kind)

    def prefix(self) -> str:
        """The etcd prefix that holds every match (a superset when only name is set)."""
        cls = self.resource_class
        ipam = {"IPAMBlock": _BLOCKS, "BlockAffinity": _AFFINITIES, "IPAMHandle": _HANDLES,
                "IPAMConfig": _CONFIG}.get(cls.KIND)
        if ipam is not None:
            return f"{ipam}{self.node}/" if self.node and cls.KIND == "BlockAffinity" else ipam
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
        if self.node and key.kind == "BlockAffinity":
            split = split_affinity_name(key.name)
            if split is None or split[0] != self.node:
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
    # Entries that did not parse, left out of ``items`` (libcalico-go logs and skips them too);
    # a caller that shows a listing to a person reports them.
    corrupt: list[CorruptEntry] = field(default_factory=list)
