"""How a resource is written as bytes in a key-value datastore.

As Calico's etcdv3 backend does: the v3 object as JSON, without
``metadata.resourceVersion`` (the key's mod_revision is the revision; storing
it as well would let the two disagree). Decoding puts the revision back.

IPAM's kinds are stored as Calico stores them under ``/calico/ipam/v2``: the
bare model (a block's cidr, affinity, allocations...; an affinity's state; a
handle's per-block counts), with what the key already says (names, node)
left out and put back from the key on decode.

JSON is written and read by pydantic_core (already there for the models):
the same compact bytes as ``json.dumps(separators=(",", ":"))``, except that
non-ASCII is written as UTF-8 (as Go's encoder does), in a quarter of the
time. A block is encoded on every allocation, so this shows in the IPAM bench;
it is written straight from its model by pydantic's serializer, in the shape
of Calico's AllocationBlock (``strictAffinity`` always present, as Go writes it).
"""

from __future__ import annotations

from typing import Any

import pydantic
import pydantic_core

from libcalico.api.ipam import BlockAffinity, IPAMBlock, IPAMConfig, IPAMHandle, split_affinity_name
from libcalico.api.meta import Resource
from libcalico.api.registry import ModelT
from libcalico.errors import CorruptEntry
from libcalico.model import ResourceKey

__all__ = ["CorruptEntry", "decode", "encode", "reasons", "with_revision"]


def reasons(exc: Exception) -> list[str]:
    """What failed, field by field, as an operator reads it (pydantic's help URLs left out)."""
    if isinstance(exc, pydantic.ValidationError):
        out = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(p) for p in err.get("loc", ()))
            out.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
        return out or [str(exc)]
    return [str(exc) or type(exc).__name__]


def _ipam_encode(value: Resource) -> bytes | None:
    spec: Any = getattr(value, "spec", None)
    if isinstance(value, IPAMBlock):
        # Written on every allocation: pydantic's own JSON writer, straight from the model. The
        # shape is Calico's AllocationBlock (strictAffinity always present, handle_id as is).
        return spec.__pydantic_serializer__.to_json(spec, by_alias=True)  # type: ignore[no-any-return]
    if isinstance(value, BlockAffinity):
        return pydantic_core.to_json({"state": spec.state, "deleted": spec.deleted == "true"})
    if isinstance(value, IPAMHandle):
        return pydantic_core.to_json({"block": dict(spec.block), "deleted": spec.deleted})
    if isinstance(value, IPAMConfig):
        out: dict[str, Any] = {"strict_affinity": spec.strict_affinity,
                               "auto_allocate_blocks": spec.auto_allocate_blocks}
        if spec.max_blocks_per_host:
            out["maxBlocksPerHost"] = spec.max_blocks_per_host
        return pydantic_core.to_json(out)
    return None


def _ipam_decode(key: ResourceKey, raw: dict[str, Any]) -> dict[str, Any] | None:
    spec: dict[str, Any]
    cls = key.resource_class
    if cls is IPAMBlock:
        spec = {k: raw[k] for k in ("cidr", "affinity", "allocations", "unallocated", "sequenceNumber",
                                    "sequenceNumberForAllocation", "deleted", "strictAffinity") if raw.get(k) is not None}
        spec["attributes"] = [{"handle_id": a.get("handle_id"), "secondary": a.get("secondary") or {}}
                              for a in raw.get("attributes") or []]
    elif cls is BlockAffinity:
        split = split_affinity_name(key.name)
        if split is None:
            raise ValueError(f"not an affinity name: {key.name}")
        # No state (a raw ``{}``, as older Calico wrote affinities) is confirmed: Calico reads it so.
        spec = {"state": raw.get("state") or "confirmed", "node": split[0], "cidr": split[1],
                "deleted": "true" if raw.get("deleted") else "false"}
    elif cls is IPAMHandle:
        spec = {"handleID": key.name, "block": raw.get("block") or {}, "deleted": bool(raw.get("deleted"))}
    elif cls is IPAMConfig:
        spec = {"strictAffinity": bool(raw.get("strict_affinity")),
                "autoAllocateBlocks": raw.get("auto_allocate_blocks", True),
                "maxBlocksPerHost": raw.get("maxBlocksPerHost", 0)}
    else:
        return None
    return {"kind": key.kind, "metadata": {"name": key.name}, "spec": spec}


def encode(value: Resource) -> bytes:
    ipam = _ipam_encode(value)
    if ipam is not None:
        return ipam
    wire = value.to_wire()
    wire.get("metadata", {}).pop("resourceVersion", None)
    return pydantic_core.to_json(wire)


def decode(key: ResourceKey[ModelT], data: bytes, revision: str) -> ModelT:
    try:
        raw = pydantic_core.from_json(data)
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON object was expected, not {type(raw).__name__}")
        raw = _ipam_decode(key, raw) or raw
        raw.setdefault("metadata", {})["resourceVersion"] = revision
        raw.setdefault("kind", key.kind)
        raw.setdefault("apiVersion", "projectcalico.org/v3")
        return key.resource_class.model_validate(raw)
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        # pydantic.ValidationError is a ValueError; the others come from a raw shape _ipam_decode
        # did not expect (a list where an object should be, ...).
        raise CorruptEntry(key, reasons(exc)) from exc


def with_revision(value: Resource, revision: str) -> Resource:
    """A copy of ``value`` whose metadata carries ``revision``."""
    meta = value.metadata.model_copy(update={"resource_version": revision})
    return value.model_copy(update={"metadata": meta})
