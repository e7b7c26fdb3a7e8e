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
from typing import Any, Generic, cast

from libcalico.api import registry
from libcalico.api.ipam import BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle, name_to_cidr, split_affinity_name
from libcalico.api.meta import Resource
from libcalico.api.registry import ModelT
from libcalico.errors import CorruptEntry

RESOURCE_PREFIX = "/calico/resources/v3/projectcalico.org/"
IPAM_PREFIX = "/calico/ipam/v2/"
_BLOCKS = IPAM_PREFIX + "assignment/"
_AFFINITIES = IPAM_PREFIX + "host/"
_HANDLES = IPAM_PREFIX + "handle/"
_CONFIG = IPAM_PREFIX + "config"
# Where IPAM's kinds live (every other kind: RESOURCE_PREFIX + its plural).
_IPAM_PREFIXES: dict[type[Resource], str] = {IPAMBlock: _BLOCKS, BlockAffinity: _AFFINITIES, IPAMHandle: _HANDLES,
                                             IPAMConfig: _CONFIG}


def _block_path(cidr: str) -> str:
    version = 6 if ":" in cidr else 4
    return f"ipv{version}/block/{cidr.replace('/', '-')}"


def _ipam_path(cls: type[Resource], name: str) -> str | None:
    if cls is IPAMBlock:
        cidr = name_to_cidr(name)
        return f"{_BLOCKS}{_block_path(cidr)}" if cidr else f"{_BLOCKS}invalid/{name}"
    if cls is BlockAffinity:
        split = split_affinity_name(name)
        return f"{_AFFINITIES}{split[0]}/{_block_path(split[1])}" if split else f"{_AFFINITIES}invalid/{name}"
    if cls is IPAMHandle:
        return f"{_HANDLES}{name}"
    if cls is IPAMConfig:
        return _CONFIG
    return None


def _ipam_key(path: str) -> tuple[type[Resource], str] | None:
    """(kind, name) for an IPAM path."""
    parts = path.split("/")
    if path.startswith(_BLOCKS) and len(parts) == 8 and parts[6] == "block":
        return IPAMBlock, parts[7].replace(".", "-").replace(":", "-")
    if path.startswith(_AFFINITIES) and len(parts) == 9 and parts[7] == "block":
        return BlockAffinity, f"{parts[5]}-{parts[8].replace('.', '-').replace(':', '-')}"
    if path.startswith(_HANDLES) and len(parts) == 6:
        return IPAMHandle, parts[5]
    if path == _CONFIG:
        return IPAMConfig, "default"
    return None


@functools.lru_cache(maxsize=16384)
def _path(kind: str, name: str, namespace: str) -> str:
    """The datastore path of a key (cached: IPAM computes the same few on every allocation)."""
    cls = resource_class(kind)
    ipam = _ipam_path(cls, name)
    if ipam is not None:
        return ipam
    if cls.NAMESPACED:
        return f"{key_prefix(cls)}{namespace}/{name}"
    return f"{key_prefix(cls)}{name}"


def key_prefix(cls: type[Resource]) -> str:
    """The etcd prefix under which every key of a kind lives (Calico's layout, see the module docstring)."""
    return _IPAM_PREFIXES.get(cls) or f"{RESOURCE_PREFIX}{cls.PLURAL}/"


def resource_class(kind: str) -> type[Resource]:
    """The model class of a kind string; :class:`~libcalico.api.registry.UnknownKind` names it if unknown."""
    return registry.class_of(kind)


def _kind_name(kind: type[Resource] | str) -> str:
    # Typed code passes the class. A string is taken as it is (tests and data-driven callers
    # build keys from strings; an unknown one fails, naming it, when the key is used). Inlined
    # in ResourceKey.__init__.
    return kind if isinstance(kind, str) else kind.KIND


@dataclass(frozen=True, slots=True, init=False)
class ResourceKey(Generic[ModelT]):
    """One v3 resource: kind, name and (for namespaced kinds) namespace.

    Built from the model class (``ResourceKey(api.IPPool, "pool-1")``), which types what a
    backend returns for it (``KVPair[api.IPPool]``); ``kind`` holds the kind's name, as
    Calico's keys and messages print it. :meth:`of_kind` builds one from a string at an edge.
    """

    kind: str
    name: str
    namespace: str

    def __init__(self, kind: type[ModelT], name: str, namespace: str = "") -> None:
        # IPAM builds keys on every allocation: the setters inline, as dataclass's own __init__.
        setter = object.__setattr__
        setter(self, "kind", kind if isinstance(kind, str) else kind.KIND)
        setter(self, "name", name)
        setter(self, "namespace", namespace)

    @classmethod
    def of_kind(cls, kind: str, name: str, namespace: str = "") -> ResourceKey[Any]:
        """The key for a kind given as a string (an edge); :class:`~libcalico.api.registry.UnknownKind` if unknown."""
        return ResourceKey(registry.class_of(kind), name, namespace)

    @property
    def resource_class(self) -> type[ModelT]:
        return cast("type[ModelT]", resource_class(self.kind))

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
    def for_resource(cls, res: ModelT) -> ResourceKey[ModelT]:
        return ResourceKey(type(res), res.metadata.name, res.metadata.namespace if res.NAMESPACED else "")

    @classmethod
    def from_path(cls, path: str) -> ResourceKey[Any] | None:
        """The key for an etcd path, or None if the path is not a resource we know."""
        if path.startswith(IPAM_PREFIX):
            found = _ipam_key(path)
            return ResourceKey(*found) if found else None
        if not path.startswith(RESOURCE_PREFIX):
            return None
        parts = path[len(RESOURCE_PREFIX):].split("/")
        res_cls = registry.by_plural(parts[0])
        if res_cls is None:
            return None
        if res_cls.NAMESPACED and len(parts) == 3:
            return ResourceKey(res_cls, parts[2], parts[1])
        if not res_cls.NAMESPACED and len(parts) == 2:
            return ResourceKey(res_cls, parts[1])
        return None


@dataclass(frozen=True, slots=True, init=False)
class ResourceListOptions(Generic[ModelT]):
    """Select resources of one kind; narrow by namespace and/or name ("" = any).

    Built from the model class, like :class:`ResourceKey`, so a list of it is a
    ``KVList[<that class>]``. ``node`` narrows BlockAffinities to one node's, as Calico's
    BlockAffinityListOptions.Host does (on etcd, the node's own key prefix).
    """

    kind: str
    namespace: str
    name: str
    node: str

    def __init__(self, kind: type[ModelT], namespace: str = "", name: str = "", node: str = "") -> None:
        object.__setattr__(self, "kind", _kind_name(kind))
        object.__setattr__(self, "namespace", namespace)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "node", node)

    @property
    def resource_class(self) -> type[ModelT]:
        return cast("type[ModelT]", resource_class(self.kind))

    def prefix(self) -> str:
        """The etcd prefix that holds every match (a superset when only name is set)."""
        cls = self.resource_class
        base = key_prefix(cls)
        if cls in _IPAM_PREFIXES:
            return f"{base}{self.node}/" if self.node and cls is BlockAffinity else base
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
        if self.node and key.kind == BlockAffinity.KIND:
            split = split_affinity_name(key.name)
            if split is None or split[0] != self.node:
                return False
        return not self.name or key.name == self.name


@dataclass(frozen=True, slots=True)
class KVPair(Generic[ModelT]):
    """A key, its value and the revision the datastore holds it at ("" = unknown).

    Typed by the key's model class: ``get(ResourceKey(api.IPPool, n))`` is a
    ``KVPair[api.IPPool]``. (The pair a delete of an unparseable entry returns
    holds None; see :mod:`libcalico.backend.api`.)
    """

    key: ResourceKey[ModelT]
    value: ModelT
    revision: str = ""

    def with_revision(self, revision: str) -> KVPair[ModelT]:
        return replace(self, revision=revision)


@dataclass(frozen=True, slots=True)
class KVList(Generic[ModelT]):
    """The result of a list: the pairs, sorted by key, and the datastore revision of the list."""

    items: list[KVPair[ModelT]] = field(default_factory=list)
    revision: str = ""
    # Entries that did not parse, left out of ``items`` (libcalico-go logs and skips them too);
    # a caller that shows a listing to a person reports them.
    corrupt: list[CorruptEntry] = field(default_factory=list)
