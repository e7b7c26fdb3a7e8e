"""A block's assign and release as pure functions (libcalico.ipam_block), property-tested.

Any sequence of assignments (by count or by ordinal) and releases (by ordinal or
by handle) keeps a block consistent: no address twice, every ordinal either
allocated or free and never both, a release frees exactly what it names, and
the sequence numbers move as Calico's do.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from libcalico import ipam_block
from libcalico.api.ipam import IPAMBlockSpec

CIDR = "10.0.0.0/28"  # 16 ordinals: small enough for hypothesis to fill and drain
SIZE = 16
HANDLES = ["h0", "h1", "h2", None]


@dataclass(frozen=True)
class Auto:
    num: int
    handle: str | None


@dataclass(frozen=True)
class One:
    ordinal: int
    handle: str | None


@dataclass(frozen=True)
class Free:
    ordinals: frozenset[int]


@dataclass(frozen=True)
class FreeHandle:
    handle: str


ops = st.lists(st.one_of(
    st.builds(Auto, st.integers(0, 5), st.sampled_from(HANDLES)),
    st.builds(One, st.integers(0, SIZE - 1), st.sampled_from(HANDLES)),
    st.builds(Free, st.frozensets(st.integers(0, SIZE - 1), max_size=6)),
    st.builds(FreeHandle, st.sampled_from(["h0", "h1", "h2"])),
), max_size=40)


def owners(spec: IPAMBlockSpec) -> dict[int, str | None]:
    return {o: spec.attributes[i].handle_id for o, i in enumerate(spec.allocations) if i is not None}


def check(spec: IPAMBlockSpec) -> None:
    allocated = {o for o, i in enumerate(spec.allocations) if i is not None}
    assert len(spec.unallocated) == len(set(spec.unallocated)), "an ordinal is free twice"
    assert allocated.isdisjoint(spec.unallocated), "an ordinal is both allocated and free"
    assert allocated | set(spec.unallocated) == set(range(SIZE)), "an ordinal is neither allocated nor free"
    assert all(0 <= i < len(spec.attributes) for i in spec.allocations if i is not None)
    assert {i for i in spec.allocations if i is not None} == set(range(len(spec.attributes))), \
        "an attribute nothing refers to"


@settings(max_examples=300, deadline=None)
@given(ops)
def test_any_sequence_of_assigns_and_releases_keeps_the_block_consistent(sequence: list[object]) -> None:
    spec = ipam_block.new_spec(CIDR, affinity="host:n1", now_ns=1_000)
    model: dict[int, str | None] = {}  # what the block must say: ordinal -> handle
    for op in sequence:
        before, snapshot = spec, spec.model_dump()
        if isinstance(op, Auto):
            spec, got = ipam_block.assign(spec, op.num, op.handle, {"pod": str(op.handle)})
            assert len(got) == min(op.num, SIZE - len(model)) and not set(got) & set(model), "an address twice"
            assert got == before.unallocated[:len(got)], "not in hand-out order"
            model.update({o: op.handle for o in got})
            assert all(spec.sequence_number_for_allocation[str(o)] == before.sequence_number for o in got)
        elif isinstance(op, One):
            try:
                spec = ipam_block.assign_ordinal(spec, op.ordinal, op.handle, {})
            except ipam_block.OrdinalTaken:
                assert op.ordinal in model
            else:
                assert op.ordinal not in model
                model[op.ordinal] = op.handle
        elif isinstance(op, Free):
            spec, freed = ipam_block.release(spec, lambda o, _a, w=op.ordinals: o in w)  # type: ignore[misc]
            assert set(freed) == op.ordinals & set(model), "release freed other than what it names"
            assert freed == {o: model[o] for o in freed}
            for o in freed:
                del model[o]
        elif isinstance(op, FreeHandle):
            spec, freed = ipam_block.release(spec, lambda _o, a, h=op.handle: a.handle_id == h)  # type: ignore[misc]
            assert set(freed) == {o for o, h in model.items() if h == op.handle}
            for o in freed:
                del model[o]
        check(spec)
        assert owners(spec) == model
        assert before.model_dump() == snapshot, "the input block was changed in place"
        spec = ipam_block.written(spec) if spec is not before else spec
        assert spec.sequence_number >= before.sequence_number


def test_a_new_block_starts_its_sequence_number_at_its_creation_time_in_nanoseconds() -> None:
    a = ipam_block.new_spec(CIDR, affinity=None)
    b = ipam_block.new_spec(CIDR, affinity=None)
    assert a.sequence_number > 1_600_000_000 * 10**9 and b.sequence_number >= a.sequence_number
    assert a.unallocated == list(range(SIZE)) and a.allocations == [None] * SIZE


def test_each_write_bumps_the_sequence_number_and_an_allocation_keeps_the_one_it_was_made_at() -> None:
    spec = ipam_block.new_spec(CIDR, affinity="host:n1", now_ns=500)
    spec, [first] = ipam_block.assign(spec, 1, "h0", {})
    spec = ipam_block.written(spec)
    spec, [second] = ipam_block.assign(spec, 1, "h1", {})
    spec = ipam_block.written(spec)
    assert spec.sequence_number == 502
    assert spec.sequence_number_for_allocation == {str(first): 500, str(second): 501}
    spec, _ = ipam_block.release(spec, lambda o, _a: o == first)
    assert spec.sequence_number_for_allocation[str(first)] == 502  # released at the block's current number


def test_an_equal_handle_and_attributes_share_one_attribute_and_freed_ordinals_are_handed_out_last() -> None:
    spec = ipam_block.new_spec(CIDR, affinity="host:n1", now_ns=0)
    spec, got = ipam_block.assign(spec, 2, "h0", {"pod": "a"})
    spec, more = ipam_block.assign(spec, 1, "h0", {"pod": "a"})
    assert len(spec.attributes) == 1 and got + more == [0, 1, 2]
    spec, _ = ipam_block.release(spec, lambda o, _a: o == 0)
    assert spec.unallocated[-1] == 0 and spec.unallocated[0] == 3


def test_the_cnis_timestamp_attribute_is_written_as_go_writes_a_utc_time() -> None:
    import datetime

    from cni.ipam_plugin import go_time_string
    utc = datetime.timezone.utc
    assert go_time_string(datetime.datetime(2026, 12, 1, 23, 14, 5, 123400, tzinfo=utc)) == \
        "2026-12-01 23:14:05.1234 +0000 UTC"
    assert go_time_string(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=utc)) == "2026-01-02 03:04:05 +0000 UTC"


def test_a_raw_empty_block_affinity_reads_as_confirmed_as_calico_reads_it() -> None:
    from libcalico.backend import codec
    from libcalico.model import ResourceKey

    key = ResourceKey("BlockAffinity", "node1-10-244-1-0-26")
    assert codec.decode(key, b"{}", "1").spec.state == "confirmed"  # type: ignore[attr-defined]
    assert codec.decode(key, b'{"state":"pending"}', "1").spec.state == "pending"  # type: ignore[attr-defined]
