"""How a resource is written as bytes in a key-value datastore.

As Calico's etcdv3 backend does: the v3 object as JSON, without
``metadata.resourceVersion`` (the key's mod_revision is the revision; storing
it as well would let the two disagree). Decoding puts the revision back.
"""

from __future__ import annotations

import json

import pydantic

from libcalico.api.meta import Resource
from libcalico.errors import CalicoError
from libcalico.model import ResourceKey


class CorruptEntry(CalicoError):
    """A stored value that does not decode into its kind (written by something else?)."""


def encode(value: Resource) -> bytes:
    wire = value.to_wire()
    wire.get("metadata", {}).pop("resourceVersion", None)
    return json.dumps(wire, separators=(",", ":"), sort_keys=False).encode()


def decode(key: ResourceKey, data: bytes, revision: str) -> Resource:
    try:
        raw = json.loads(data)
        raw.setdefault("metadata", {})["resourceVersion"] = revision
        raw.setdefault("kind", key.kind)
        raw.setdefault("apiVersion", "projectcalico.org/v3")
        return key.resource_class.model_validate(raw)
    except (ValueError, pydantic.ValidationError) as exc:
        raise CorruptEntry(f"unexpected error parsing stored datastore entry for {key}: {exc}") from exc


def with_revision(value: Resource, revision: str) -> Resource:
    """A copy of ``value`` whose metadata carries ``revision``."""
    meta = value.metadata.model_copy(update={"resource_version": revision})
    return value.model_copy(update={"metadata": meta})
