"""Property tests: the pool against a plain model, and the descriptor decoder on any bytes."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from fabric.errors import BadDescriptor, PayloadTooLarge, PoolExhausted
from fabric.shm import Descriptor, PoolLayout, PoolSettings, SlotClassSpec, SlotPool, SlotState

SETTINGS = PoolSettings(
    classes=(
        SlotClassSpec(slot_size=4096, count=3),
        SlotClassSpec(slot_size=16384, count=2),
        SlotClassSpec(slot_size=65536, count=1),
    )
)
HOLDERS = st.sampled_from(["a", "b", "c", "d"])


class PoolMachine(RuleBasedStateMachine):
    """Random allocate/publish/release/drop_holder sequences against a simple model."""

    allocated = Bundle("allocated")
    published = Bundle("published")

    def __init__(self) -> None:
        super().__init__()
        self.pool = SlotPool.from_settings(SETTINGS)
        # slot -> (owner, descriptor) while ALLOCATED; slot -> (holds, descriptor) if PUBLISHED
        self.model_alloc: dict[int, tuple[str, Descriptor]] = {}
        self.model_pub: dict[int, tuple[Counter[str], Descriptor]] = {}
        self.reclaimed = 0

    def busy(self, slot: int) -> bool:
        return slot in self.model_alloc or slot in self.model_pub

    @rule(target=allocated, owner=HOLDERS, size=st.integers(0, 70000))
    def allocate(self, owner: str, size: int) -> tuple[str, Descriptor] | None:
        fitting = [s for s in self.pool.layout.slots if s.size >= size]
        try:
            d = self.pool.allocate(owner, size)
        except PayloadTooLarge:
            assert not fitting
            return None
        except PoolExhausted:
            smallest = min(s.size for s in fitting)
            assert all(self.busy(s.index) for s in fitting if s.size == smallest)
            return None
        assert not self.busy(d.slot), "handed out a slot still in use"
        assert d.length == size
        self.model_alloc[d.slot] = (owner, d)
        return owner, d

    @rule(
        target=published,
        entry=consumes(allocated),
        receivers=st.lists(HOLDERS, max_size=5),
        shorten=st.integers(0, 100),
    )
    def publish(
        self, entry: tuple[str, Descriptor] | None, receivers: list[str], shorten: int
    ) -> tuple[Descriptor, list[str]] | None:
        if entry is None:
            return None
        owner, d = entry
        if self.model_alloc.get(d.slot) != (owner, d):
            # dropped (owner died) in between: must be refused
            try:
                self.pool.publish(owner, d, receivers)
            except BadDescriptor:
                return None
            raise AssertionError("published a reclaimed allocation")
        d = Descriptor(d.segment, d.slot, d.offset, max(0, d.length - shorten), d.generation)
        holds = self.pool.publish(owner, d, receivers)
        del self.model_alloc[d.slot]
        assert holds == len(receivers)
        if receivers:
            self.model_pub[d.slot] = (Counter(receivers), d)
        return d, receivers

    @rule(entry=published, holder=HOLDERS)
    def release(self, entry: tuple[Descriptor, list[str]] | None, holder: str) -> None:
        if entry is None:
            return
        d, _ = entry
        current = self.model_pub.get(d.slot)
        valid = current is not None and current[1] == d and current[0][holder] > 0
        try:
            freed = self.pool.release(holder, d)
        except BadDescriptor:
            assert not valid
            return
        assert valid
        assert current is not None
        holds = current[0]
        holds[holder] -= 1
        if holds[holder] == 0:
            del holds[holder]
        assert freed == (not holds)
        if not holds:
            del self.model_pub[d.slot]

    @rule(holder=HOLDERS)
    def drop(self, holder: str) -> None:
        expected = 0
        for slot, (owner, _) in list(self.model_alloc.items()):
            if owner == holder:
                del self.model_alloc[slot]
                expected += 1
        for slot, (holds, _) in list(self.model_pub.items()):
            if holder in holds:
                del holds[holder]
                if not holds:
                    del self.model_pub[slot]
                    expected += 1
        assert self.pool.drop_holder(holder) == expected
        self.reclaimed += expected

    @precondition(lambda self: bool(self.model_pub))
    @rule(data=st.data())
    def stale_release_is_refused(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(sorted(self.model_pub)))
        _, d = self.model_pub[slot]
        stale = Descriptor(d.segment, d.slot, d.offset, d.length, d.generation - 1 or 2**64 - 1)
        before = self.pool.stats()
        try:
            self.pool.release("a", stale)
        except BadDescriptor:
            pass
        else:
            raise AssertionError("stale descriptor accepted")
        assert self.pool.stats() == before

    @invariant()
    def states_match_model(self) -> None:
        for s in self.pool.layout.slots:
            expected = (
                SlotState.ALLOCATED
                if s.index in self.model_alloc
                else SlotState.PUBLISHED
                if s.index in self.model_pub
                else SlotState.FREE
            )
            assert self.pool.state_of(s.index) is expected

    @invariant()
    def bytes_in_use_is_the_sum_over_held_slots(self) -> None:
        st_ = self.pool.stats()
        slots = self.pool.layout.slots
        busy = list(self.model_alloc) + list(self.model_pub)
        assert st_.bytes_in_use == sum(slots[i].size for i in busy)
        payload = [d.length for _, d in self.model_alloc.values()]
        payload += [d.length for _, d in self.model_pub.values()]
        assert st_.payload_bytes == sum(payload)
        assert st_.leases == sum(h.total() for h, _ in self.model_pub.values())
        assert st_.allocated == len(self.model_alloc)
        assert st_.reclaimed == self.reclaimed
        for c in st_.classes:
            assert c.in_use == sum(1 for i in busy if slots[i].size == c.slot_size)


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=80))
def test_decode_any_bytes_returns_descriptor_or_bad_descriptor(data: bytes) -> None:
    try:
        d = Descriptor.decode(data)
    except BadDescriptor:
        return
    assert d.encode() == data


@settings(max_examples=500, deadline=None)
@given(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**64 - 1),
        st.integers(1, 2**64 - 1),
    ),
    st.integers(0, 35),
    st.integers(0, 255),
)
def test_decode_of_mutated_descriptors(fields: tuple[int, ...], pos: int, byte: int) -> None:
    # A valid encoding with one byte overwritten: near-misses reach deeper checks than noise.
    data = bytearray(Descriptor(*fields).encode())
    data[pos] = byte
    try:
        d = Descriptor.decode(bytes(data))
    except BadDescriptor:
        return
    assert d.encode() == bytes(data)


@settings(max_examples=500, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=6)
            | st.dictionaries(st.sampled_from(["v", "segments", "runs", "x"]), children, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_layout_from_wire_on_anything(data: object) -> None:
    from fabric.errors import RemoteProtocolError

    try:
        layout = PoolLayout.from_wire(data)
    except RemoteProtocolError:
        return
    assert PoolLayout.from_wire(layout.to_wire()) == layout
