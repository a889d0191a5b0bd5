"""SlotPool, PoolLayout and PoolSettings without I/O: the node's lease bookkeeping."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from fabric.errors import (
    BadDescriptor,
    ConfigError,
    PayloadTooLarge,
    PoolExhausted,
    RemoteProtocolError,
)
from fabric.shm import (
    Descriptor,
    PoolLayout,
    PoolSettings,
    SlotClassSpec,
    SlotPool,
    SlotState,
)

KIB = 1024
MIB = 1024 * KIB


def small_settings(**kw: Any) -> PoolSettings:
    classes = (
        SlotClassSpec(slot_size=4 * KIB, count=3),
        SlotClassSpec(slot_size=64 * KIB, count=2),
        SlotClassSpec(slot_size=1 * MIB, count=1),
    )
    return PoolSettings(classes=classes, **kw)


@pytest.fixture
def pool() -> SlotPool:
    return SlotPool.from_settings(small_settings())


def snapshot(pool: SlotPool) -> Any:
    """Everything observable about the pool, to prove a failed call changed nothing."""
    return (
        pool.stats(),
        [pool.state_of(i) for i in range(len(pool.layout.slots))],
        {h: pool.holds_of(h) for h in ("p", "q", "r1", "r2", "r3")},
        {h: pool.allocated_to(h) for h in ("p", "q", "r1", "r2", "r3")},
        [list(f) for f in pool._free],
    )


# --- settings and layout ---------------------------------------------------------------------


def test_default_settings_lay_out_one_page_aligned_segment() -> None:
    s = PoolSettings()
    layout = PoolLayout.from_settings(s)
    assert layout.segment_sizes == (s.pool_bytes,)
    assert layout.class_sizes == tuple(c.slot_size for c in s.classes)
    assert all(slot.offset % 4096 == 0 for slot in layout.slots)
    ends = [(sl.offset, sl.offset + sl.size) for sl in layout.slots]
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends))  # no overlap


def test_settings_refuse_unsorted_unaligned_or_oversized_classes() -> None:
    with pytest.raises(ValidationError):
        PoolSettings(
            classes=(
                SlotClassSpec(slot_size=MIB, count=1),
                SlotClassSpec(slot_size=64 * KIB, count=1),
            )
        )
    with pytest.raises(ValidationError):
        SlotClassSpec(slot_size=1000, count=1)
    with pytest.raises(ValidationError):
        PoolSettings(classes=(SlotClassSpec(slot_size=MIB, count=64),), max_pool_bytes=32 * MIB)
    with pytest.raises(ValidationError):
        PoolSettings(when_full="drop")  # type: ignore[arg-type]


def test_layout_spills_into_more_segments_when_one_is_full() -> None:
    s = PoolSettings(classes=(SlotClassSpec(slot_size=MIB, count=5),), segment_max_bytes=2 * MIB)
    layout = PoolLayout.from_settings(s)
    assert layout.segment_sizes == (2 * MIB, 2 * MIB, MIB)
    assert [(sl.segment, sl.offset) for sl in layout.slots] == [
        (0, 0),
        (0, MIB),
        (1, 0),
        (1, MIB),
        (2, 0),
    ]
    assert PoolLayout.from_wire(layout.to_wire()) == layout


def test_settings_that_need_too_many_segments_are_a_config_error() -> None:
    s = PoolSettings(classes=(SlotClassSpec(slot_size=4096, count=65),), segment_max_bytes=4096)
    with pytest.raises(ConfigError):
        PoolLayout.from_settings(s)


@pytest.mark.parametrize(
    "wire",
    [
        None,
        {"v": 2, "segments": [4096], "runs": [[0, 4096, 1, 0, 0]]},
        {"v": 1, "segments": [4096], "runs": [[0, 4096, 2, 0, 0]]},  # past the segment end
        {"v": 1, "segments": [8192], "runs": [[0, 4096, 1, 0, 0], [1, 8192, 1, 0, 0]]},
        {"v": 1, "segments": [8192], "runs": [[0, 4096, 1, 0, 0], [0, 4096, 1, 0, 0]]},  # overlap
        {"v": 1, "segments": [8192], "runs": [[0, 4096, 1, 0, 100]]},  # unaligned
        {"v": 1, "segments": [8192], "runs": [[0, 4096, 1, 1, 0]]},  # no such segment
        {"v": 1, "segments": [8192], "runs": [[0, 4096, 1, 0]]},
        {"v": 1, "segments": [8192], "runs": [[0, 4096, True, 0, 0]]},
        {"v": 1, "segments": [8192], "runs": [[0, -4096, 1, 0, 0]]},
        {"v": 1, "segments": [2**70], "runs": [[0, 4096, 1, 0, 0]]},
        {"v": 1, "segments": [4096 * 2**20], "runs": [[0, 4096, 2**20, 0, 0]]},  # too many
        {"v": 1, "segments": [], "runs": []},
        {"v": 1, "segments": "x", "runs": []},
    ],
)
def test_layout_from_wire_refuses_hostile_layouts(wire: Any) -> None:
    with pytest.raises(RemoteProtocolError):
        PoolLayout.from_wire(wire)


# --- allocate / publish / release ------------------------------------------------------------


def test_allocate_picks_smallest_fitting_class(pool: SlotPool) -> None:
    sizes = {0: 4 * KIB, 1: 4 * KIB, 4 * KIB: 4 * KIB, 4 * KIB + 1: 64 * KIB, MIB: MIB}
    for size, slot_size in sizes.items():
        d = pool.allocate("p", size)
        assert pool.layout.slots[d.slot].size == slot_size
        assert d.length == size
        assert d.offset == pool.layout.slots[d.slot].offset
        assert d.generation == 1


def test_publish_then_release_frees_after_last_hold(pool: SlotPool) -> None:
    d = pool.allocate("p", 100)
    assert pool.state_of(d.slot) is SlotState.ALLOCATED
    assert pool.publish("p", d, ["r1", "r2"]) == 2
    assert pool.state_of(d.slot) is SlotState.PUBLISHED
    assert pool.allocated_to("p") == frozenset()
    assert pool.stats().leases == 2
    assert pool.release("r1", d) is False
    assert pool.state_of(d.slot) is SlotState.PUBLISHED
    assert pool.release("r2", d) is True
    assert pool.state_of(d.slot) is SlotState.FREE
    st = pool.stats()
    assert (st.leases, st.bytes_in_use, st.payload_bytes, st.reclaimed) == (0, 0, 0, 0)


def test_freed_slot_is_reused_with_a_new_generation(pool: SlotPool) -> None:
    d1 = pool.allocate("p", 100)
    pool.publish("p", d1, ["r1"])
    pool.release("r1", d1)
    d2 = pool.allocate("q", 200)
    assert d2.slot == d1.slot  # most recently freed goes out first
    assert d2.generation == d1.generation + 1
    with pytest.raises(BadDescriptor):
        pool.release("r1", d1)  # the stale lease is not confused with the new one


def test_publish_to_nobody_frees_at_once(pool: SlotPool) -> None:
    d = pool.allocate("p", 100)
    assert pool.publish("p", d, []) == 0
    assert pool.state_of(d.slot) is SlotState.FREE
    assert pool.stats().bytes_in_use == 0


def test_same_holder_twice_needs_two_releases(pool: SlotPool) -> None:
    d = pool.allocate("p", 100)
    assert pool.publish("p", d, iter(["r1", "r1", "r2"])) == 3
    assert pool.holds_of("r1") == {d.slot: 2}
    pool.release("r1", d)
    pool.release("r2", d)
    assert pool.state_of(d.slot) is SlotState.PUBLISHED
    assert pool.release("r1", d) is True
    with pytest.raises(BadDescriptor):
        pool.release("r1", d)


def test_publish_may_shorten_the_payload(pool: SlotPool) -> None:
    d = pool.allocate("p", 3000)
    short = dataclasses.replace(d, length=10)
    pool.publish("p", short, ["r1"])
    assert pool.stats().payload_bytes == 10
    with pytest.raises(BadDescriptor):
        pool.release("r1", d)  # releases must name the descriptor as published
    assert pool.release("r1", short)


def test_producer_can_be_among_the_receivers(pool: SlotPool) -> None:
    d = pool.allocate("p", 100)
    pool.publish("p", d, ["p", "r1"])
    assert pool.holds_of("p") == {d.slot: 1}
    pool.drop_holder("r1")
    assert pool.state_of(d.slot) is SlotState.PUBLISHED
    assert pool.release("p", d)


def test_exhausted_class_raises_and_is_counted(pool: SlotPool) -> None:
    for _ in range(3):
        pool.allocate("p", 4 * KIB)
    with pytest.raises(PoolExhausted):
        pool.allocate("p", 1)
    assert pool.stats().refused == 1
    # other classes are still served, and without spilling a small payload waits its class
    assert pool.free_slots(1) == 0
    assert pool.layout.slots[pool.allocate("p", 5 * KIB).slot].size == 64 * KIB


def test_one_owner_cannot_hoard_unpublished_slots() -> None:
    pool = SlotPool.from_settings(small_settings(max_unpublished_per_owner=2))
    a, _ = pool.allocate("p", 1), pool.allocate("p", 1)
    with pytest.raises(PoolExhausted):
        pool.allocate("p", 1)
    assert pool.allocate("q", 1)  # others are still served
    pool.publish("p", a, ["r1"])  # publishing gives the owner room again
    assert pool.allocate("p", 5 * KIB)
    assert pool.stats().refused == 1


def test_spill_to_larger_class_when_enabled() -> None:
    pool = SlotPool.from_settings(small_settings(spill_to_larger=True))
    got = [pool.layout.slots[pool.allocate("p", 1).slot].size for _ in range(6)]
    assert got == [4 * KIB] * 3 + [64 * KIB] * 2 + [MIB]
    with pytest.raises(PoolExhausted):
        pool.allocate("p", 1)


def test_too_large_payload(pool: SlotPool) -> None:
    with pytest.raises(PayloadTooLarge) as info:
        pool.allocate("p", MIB + 1)
    assert (info.value.size, info.value.limit) == (MIB + 1, MIB)
    assert pool.stats().too_large == 1
    for bad in (-1, 1.5, "10", None):
        with pytest.raises(RemoteProtocolError):
            pool.allocate("p", bad)  # type: ignore[arg-type]


def test_drop_holder_reclaims_producer_and_receiver_leases(pool: SlotPool) -> None:
    unpublished = pool.allocate("p", 100)
    shared = pool.allocate("q", 100)
    pool.publish("q", shared, ["p", "p", "r1"])
    solo = pool.allocate("q", 100)
    pool.publish("q", solo, ["p"])
    assert pool.drop_holder("p") == 2  # its allocation and the slot only it held
    assert pool.state_of(unpublished.slot) is SlotState.FREE
    assert pool.state_of(solo.slot) is SlotState.FREE
    assert pool.state_of(shared.slot) is SlotState.PUBLISHED  # r1 still holds it
    st = pool.stats()
    assert (st.reclaimed, st.leases, st.allocated) == (2, 1, 0)
    with pytest.raises(BadDescriptor):
        pool.publish("p", unpublished, ["r1"])
    assert pool.drop_holder("r1") == 1
    assert pool.drop_holder("nobody") == 0
    assert pool.stats().bytes_in_use == 0


def test_held_slot_is_never_handed_out(pool: SlotPool) -> None:
    d = pool.allocate("p", 1)
    pool.publish("p", d, ["r1"])
    others = {pool.allocate("p", 1).slot for _ in range(2)}
    assert d.slot not in others
    with pytest.raises(PoolExhausted):
        pool.allocate("p", 1)


# --- bad descriptors: each refused, nothing changed --------------------------------------------


def _published(pool: SlotPool) -> Descriptor:
    d = pool.allocate("p", 100)
    pool.publish("p", d, ["r1"])
    return d


BAD_VARIANTS = {
    "wrong segment": {"segment": 1},
    "slot out of range": {"slot": 6},
    "slot 2**32": {"slot": 2**32},
    "offset not the slot's": {"offset": 4096 * 7},
    "offset 2**63": {"offset": 2**63},
    "offset 2**64": {"offset": 2**64},
    "length 2**63": {"length": 2**63},
    "length beyond slot": {"length": 4 * KIB + 1},
    "negative length": {"length": -1},
    "wrong generation": {"generation": 2},
    "generation 0": {"generation": 0},
    "bool field": {"segment": False, "slot": True},
}


@pytest.mark.parametrize("change", BAD_VARIANTS.values(), ids=BAD_VARIANTS.keys())
def test_bad_release_is_refused_and_changes_nothing(pool: SlotPool, change: dict[str, Any]) -> None:
    d = _published(pool)
    pool.allocate("q", 10)
    before = snapshot(pool)
    with pytest.raises(BadDescriptor):
        pool.release("r1", dataclasses.replace(d, **change))
    assert snapshot(pool) == before


@pytest.mark.parametrize("change", BAD_VARIANTS.values(), ids=BAD_VARIANTS.keys())
def test_bad_publish_is_refused_and_changes_nothing(pool: SlotPool, change: dict[str, Any]) -> None:
    d = pool.allocate("p", 100)
    before = snapshot(pool)
    with pytest.raises(BadDescriptor):
        pool.publish("p", dataclasses.replace(d, **change), ["r1"])
    assert snapshot(pool) == before


def test_publish_of_a_slot_not_owned_is_refused(pool: SlotPool) -> None:
    d = pool.allocate("p", 100)
    before = snapshot(pool)
    with pytest.raises(BadDescriptor):
        pool.publish("q", d, ["r1"])
    assert snapshot(pool) == before
    pool.publish("p", d, ["r1"])
    before = snapshot(pool)
    with pytest.raises(BadDescriptor):
        pool.publish("p", d, ["r2"])  # already published
    with pytest.raises(BadDescriptor):
        pool.release("r2", d)  # not a holder
    with pytest.raises(BadDescriptor):
        pool.release("p", d)  # the producer gave its lease away
    assert snapshot(pool) == before


def test_release_of_never_allocated_or_already_released(pool: SlotPool) -> None:
    d = _published(pool)
    pool.release("r1", d)
    before = snapshot(pool)
    with pytest.raises(BadDescriptor):
        pool.release("r1", d)
    never = Descriptor(0, 1, pool.layout.slots[1].offset, 10, 1)
    with pytest.raises(BadDescriptor):
        pool.release("r1", never)
    with pytest.raises(BadDescriptor):
        pool.release("r1", "not a descriptor")  # type: ignore[arg-type]
    assert snapshot(pool) == before


def test_unhashable_receivers_change_nothing(pool: SlotPool) -> None:
    d = pool.allocate("p", 100)
    before = snapshot(pool)
    with pytest.raises(TypeError):
        pool.publish("p", d, [["unhashable"]])  # type: ignore[list-item]
    assert snapshot(pool) == before
