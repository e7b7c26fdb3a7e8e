"""IPAM's stored kinds: IPAMBlock, BlockAffinity, IPAMHandle, IPAMConfig.

Calico's IPAM keeps its state in the datastore as these four kinds (its
``crd.projectcalico.org/v1`` CRDs and etcd's ``/calico/ipam/v2/...`` keys),
so every node reads and writes the same blocks with compare-and-swap. The
shapes here are the CRDs' specs, field for field (a block's attributes keep
Calico's ``handle_id``), and the names are Calico's:

* a block is named after its CIDR: ``10.244.56.64/26`` -> ``10-244-56-64-26``;
* an affinity is ``<node>-<block name>``;
* a handle is its id (``k8s-pod-network.<containerID>``), lower-cased;
* the IPAM configuration is ``default``.

The allocation logic lives in :mod:`libcalico.ipam`.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field

from libcalico.api import fields
from libcalico.api.fields import CalicoModel
from libcalico.api.meta import Resource


def cidr_to_name(cidr: str) -> str:
    """Calico's names.CIDRToName: dots, colons and the slash become dashes."""
    return cidr.replace(".", "-").replace(":", "-").replace("/", "-")


def name_to_cidr(name: str) -> str | None:
    """The CIDR of a block name, or None. IPv4 names have five parts; IPv6 names contain no dots."""
    head, _, length = name.rpartition("-")
    if not length.isdigit():
        return None
    parts = head.split("-")
    if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts) and int(length) <= 32:
        host = (int(parts[0]) << 24) | (int(parts[1]) << 16) | (int(parts[2]) << 8) | int(parts[3])
        if host & ((1 << (32 - int(length))) - 1) == 0:  # a network address, as a block's is
            return f"{'.'.join(str(int(p)) for p in parts)}/{length}"
    text = ".".join(parts) + f"/{length}" if len(parts) == 4 else head.replace("-", ":") + f"/{length}"
    try:
        return str(ipaddress.ip_network(text))
    except ValueError:
        return None


def affinity_name(node: str, cidr: str) -> str:
    return f"{node}-{cidr_to_name(cidr)}"


def split_affinity_name(name: str) -> tuple[str, str] | None:
    """(node, cidr) for an IPv4 affinity name (the last five dash parts are the block)."""
    parts = name.split("-")
    if len(parts) < 6:
        return None
    cidr = name_to_cidr("-".join(parts[-5:]))
    return ("-".join(parts[:-5]), cidr) if cidr else None


class AllocationAttribute(CalicoModel):
    handle_id: str | None = Field(default=None, alias="handle_id")
    secondary: dict[str, str] = Field(default_factory=dict)


class IPAMBlockSpec(CalicoModel):
    cidr: fields.CIDR
    affinity: str | None = None  # "host:<node>" when affine to a node
    allocations: list[int | None] = Field(default_factory=list)  # ordinal -> index into attributes
    unallocated: list[int] = Field(default_factory=list)        # free ordinals, in hand-out order
    attributes: list[AllocationAttribute] = Field(default_factory=list)
    sequence_number: int = 0  # creation time in ns, then one more per write (libcalico.ipam_block)
    sequence_number_for_allocation: dict[str, int] = Field(default_factory=dict)  # ordinal -> sequence number
    deleted: bool = False
    strict_affinity: bool = False


class IPAMBlock(Resource):
    KIND = "IPAMBlock"
    PLURAL = "ipamblocks"
    spec: IPAMBlockSpec


class BlockAffinitySpec(CalicoModel):
    # "" is Calico's legacy "implicitly confirmed" (an affinity written before states existed).
    state: Literal["pending", "confirmed", "pendingDeletion", ""] = "pending"
    node: str
    cidr: fields.CIDR
    type: str = "host"
    deleted: str = "false"  # a string in Calico's CRD


class BlockAffinity(Resource):
    KIND = "BlockAffinity"
    PLURAL = "blockaffinities"
    spec: BlockAffinitySpec


class IPAMHandleSpec(CalicoModel):
    handle_id: str = Field(alias="handleID")
    block: dict[str, int] = Field(default_factory=dict)  # block CIDR -> addresses of this handle in it
    deleted: bool = False


class IPAMHandle(Resource):
    KIND = "IPAMHandle"
    PLURAL = "ipamhandles"
    spec: IPAMHandleSpec


class IPAMConfigSpec(CalicoModel):
    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = Field(default=0, ge=0)


class IPAMConfig(Resource):
    KIND = "IPAMConfig"
    PLURAL = "ipamconfigs"
    spec: IPAMConfigSpec = Field(default_factory=IPAMConfigSpec)


IPAM_KINDS = (IPAMBlock, BlockAffinity, IPAMHandle, IPAMConfig)
