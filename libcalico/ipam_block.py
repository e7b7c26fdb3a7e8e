"""A block's arithmetic as pure functions of the block: assign and release, no I/O.

libcalico-go keeps the same split: ``ipam_block.go`` changes an AllocationBlock in
memory, and the retry loops of ``ipam.go`` only read a block, call it, and write
the result with a compare-and-swap. Here :mod:`libcalico.ipam` does the reading and
writing; these functions take a block's spec and return a new one (specs are
never changed in place, so a failed write leaves the cached block as it was),
which is what makes them property-testable (tests/libcalico/test_ipam_block.py).

Calico's bookkeeping, kept as Calico keeps it:

* ``sequenceNumber`` starts at the block's creation time in nanoseconds (a block
  deleted and made again never hands out the same number for an address) and
  goes up by one on every write of the block (:func:`written`, as Calico's
  ``updateBlock``);
* ``sequenceNumberForAllocation`` maps an ordinal (as a string) to the block's
  sequence number when that address last changed hands, assigned or released;
* an allocation's attribute is found by its handle and attributes together, or
  added; attributes nothing refers to any more are dropped on release.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Sequence

from libcalico.api.ipam import AllocationAttribute, IPAMBlockSpec

Select = Callable[[int, AllocationAttribute], bool]
"""Which allocations a release frees: called with (ordinal, its attribute)."""


class OrdinalTaken(Exception):
    """The address asked for by ordinal is already allocated."""


def new_spec(cidr: str, *, affinity: str | None, strict: bool = False, now_ns: int | None = None) -> IPAMBlockSpec:
    """An empty block: every ordinal free, in order; its sequence number the creation time in ns."""
    size = ipaddress.ip_network(cidr).num_addresses
    return IPAMBlockSpec(cidr=cidr, affinity=affinity, allocations=[None] * size, unallocated=list(range(size)),
                         strict_affinity=strict, sequence_number=time.time_ns() if now_ns is None else now_ns)


def _attribute_index(attributes: list[AllocationAttribute], handle_id: str | None,
                     attrs: dict[str, str]) -> int:
    """Calico's findOrAddAttribute: the index of the equal attribute, appended when there is none."""
    for i, a in enumerate(attributes):
        if a.handle_id == handle_id and a.secondary == attrs:
            return i
    attributes.append(AllocationAttribute(handle_id=handle_id, secondary=dict(attrs)))
    return len(attributes) - 1


def assign(spec: IPAMBlockSpec, num: int, handle_id: str | None,
           attrs: dict[str, str]) -> tuple[IPAMBlockSpec, list[int]]:
    """Take up to ``num`` free ordinals in hand-out order (Calico's autoAssign); the block unchanged
    and no ordinals when it has none free."""
    ordinals = spec.unallocated[:max(num, 0)]
    if not ordinals:
        return spec, []
    attributes = list(spec.attributes)
    index = _attribute_index(attributes, handle_id, attrs)
    allocations = list(spec.allocations)
    seq = dict(spec.sequence_number_for_allocation)
    for o in ordinals:
        allocations[o] = index
        seq[str(o)] = spec.sequence_number
    return spec.model_copy(update={"allocations": allocations, "unallocated": spec.unallocated[len(ordinals):],
                                   "attributes": attributes, "sequence_number_for_allocation": seq}), ordinals


def assign_ordinal(spec: IPAMBlockSpec, ordinal: int, handle_id: str | None,
                   attrs: dict[str, str]) -> IPAMBlockSpec:
    """Take one given ordinal (Calico's assign); :class:`OrdinalTaken` when it is in use."""
    if not 0 <= ordinal < len(spec.allocations):
        raise ValueError(f"ordinal {ordinal} is outside the block {spec.cidr}")
    if spec.allocations[ordinal] is not None:
        raise OrdinalTaken(ordinal)
    attributes = list(spec.attributes)
    allocations = list(spec.allocations)
    allocations[ordinal] = _attribute_index(attributes, handle_id, attrs)
    seq = {**spec.sequence_number_for_allocation, str(ordinal): spec.sequence_number}
    return spec.model_copy(update={"allocations": allocations,
                                   "unallocated": [o for o in spec.unallocated if o != ordinal],
                                   "attributes": attributes, "sequence_number_for_allocation": seq})


def release(spec: IPAMBlockSpec, select: Select) -> tuple[IPAMBlockSpec, dict[int, str | None]]:
    """Free the allocations ``select`` picks; return the new block and each freed ordinal's handle.

    Freed ordinals go to the end of the free list (handed out last, as Calico appends them);
    attributes nothing refers to any more are dropped and the rest renumbered."""
    freed: dict[int, str | None] = {}
    allocations = list(spec.allocations)
    for o, idx in enumerate(allocations):
        if idx is not None and select(o, spec.attributes[idx]):
            freed[o] = spec.attributes[idx].handle_id
            allocations[o] = None
    if not freed:
        return spec, {}
    used = sorted({i for i in allocations if i is not None})
    renumber = {old: new for new, old in enumerate(used)}
    seq = {**spec.sequence_number_for_allocation, **{str(o): spec.sequence_number for o in freed}}
    return spec.model_copy(update={
        "allocations": [renumber[i] if i is not None else None for i in allocations],
        "attributes": [spec.attributes[i] for i in used],
        "unallocated": spec.unallocated + sorted(freed),
        "sequence_number_for_allocation": seq}), freed


def written(spec: IPAMBlockSpec) -> IPAMBlockSpec:
    """The block as it is written: every write of a block bumps its sequence number (Calico's updateBlock)."""
    return spec.model_copy(update={"sequence_number": spec.sequence_number + 1})


def empty(spec: IPAMBlockSpec) -> bool:
    return all(a is None for a in spec.allocations)


def addresses(spec: IPAMBlockSpec, ordinals: Sequence[int]) -> list[str]:
    base = ipaddress.ip_network(spec.cidr).network_address
    return [str(base + o) for o in ordinals]
