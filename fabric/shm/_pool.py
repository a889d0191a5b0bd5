"""Lease bookkeeping of the node's shared-memory pool. Pure: no I/O, no clock, no asyncio.

Rules (every method keeps them; the property tests check them):

1. A slot is FREE, ALLOCATED (to one owner, who is writing it) or PUBLISHED (held by one or
   more holders, each possibly more than once).
2. A slot returns to FREE only when its owner publishes it to nobody, when the last hold on it
   is released, or when ``drop_holder`` removes its owner or last holders. Never earlier: a
   slot is not handed out while anyone still holds it.
3. Every allocation bumps the slot's generation, so a descriptor of an earlier lease is stale
   and refused.
4. A call that raises ``BadDescriptor`` (or any error) changes nothing: checks come first,
   mutation after.

Holders are opaque hashables (the node uses session ids); the producer is the owner until it
publishes, then holds nothing unless it is among the receivers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from ..errors import BadDescriptor, PayloadTooLarge, PoolExhausted, RemoteProtocolError
from ._descriptor import Descriptor, check_fields
from ._layout import PoolLayout, Slot
from ._settings import PoolSettings

__all__ = ["ClassStats", "PoolStats", "SlotPool", "SlotState"]

_U64 = (1 << 64) - 1


class SlotState(Enum):
    """Life cycle of one slot (rule 1)."""

    FREE = "free"
    ALLOCATED = "allocated"
    PUBLISHED = "published"


@dataclass(slots=True)
class _Record:
    generation: int = 0
    state: SlotState = SlotState.FREE
    owner: Hashable | None = None
    #: The descriptor as published: releases must match it exactly.
    published: Descriptor | None = None
    length: int = 0
    holds: Counter[Hashable] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class ClassStats:
    """Use of one size class."""

    slot_size: int
    slots: int
    in_use: int


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool, for metrics and tests."""

    classes: tuple[ClassStats, ...]
    #: Capacity of every slot not FREE (what the pool cannot hand out now).
    bytes_in_use: int
    #: Payload bytes in those slots (descriptor lengths).
    payload_bytes: int
    #: Slots ALLOCATED and not yet published.
    allocated: int
    #: Holds on PUBLISHED slots, counted with multiplicity.
    leases: int
    #: Slots freed by ``drop_holder`` (a dead agent's, not released by it).
    reclaimed: int
    #: Allocations refused because the class was full.
    refused: int
    #: Allocations refused because the payload was larger than the largest class.
    too_large: int


class SlotPool:
    """Allocate, publish, release and reclaim slots of one node's pool."""

    def __init__(
        self,
        layout: PoolLayout,
        *,
        spill_to_larger: bool = False,
        max_unpublished_per_owner: int | None = None,
    ) -> None:
        self.layout = layout
        self._spill = spill_to_larger
        self._owner_cap = max_unpublished_per_owner
        self._records = [_Record() for _ in layout.slots]
        # Stacks, popped from the end: the most recently freed slot goes out first, so the
        # pages already touched (and mapped by every agent) are reused before fresh ones.
        self._free: list[list[int]] = [
            list(reversed(layout.class_slots(c))) for c in range(len(layout.class_sizes))
        ]
        self._allocated_by: dict[Hashable, set[int]] = {}
        self._held_by: dict[Hashable, Counter[int]] = {}
        self._bytes_in_use = 0
        self._payload_bytes = 0
        self._allocated = 0
        self._leases = 0
        self._reclaimed = 0
        self._refused = 0
        self._too_large = 0

    @classmethod
    def from_settings(cls, settings: PoolSettings) -> SlotPool:
        """A pool laid out as ``settings`` says."""
        return cls(
            PoolLayout.from_settings(settings),
            spill_to_larger=settings.spill_to_larger,
            max_unpublished_per_owner=settings.max_unpublished_per_owner,
        )

    # --- the four operations -------------------------------------------------------------

    def allocate(self, owner: Hashable, size: int) -> Descriptor:
        """Lease a free slot of the smallest class that fits ``size`` bytes to ``owner``.

        The descriptor's ``length`` is ``size``; the owner writes the payload, then calls
        ``publish``.

        Raises:
            RemoteProtocolError: ``size`` is not a non-negative integer.
            PayloadTooLarge: ``size`` exceeds the largest class.
            PoolExhausted: no slot of the class (or a larger one, with spilling) is free, or
                ``owner`` already has ``max_unpublished_per_owner`` slots unpublished.
        """
        if type(size) is not int or size < 0:
            raise RemoteProtocolError(f"allocation size must be a non-negative int, got {size!r}")
        sizes = self.layout.class_sizes
        if size > sizes[-1]:
            self._too_large += 1
            raise PayloadTooLarge(
                size=size,
                limit=sizes[-1],
                hint="that is the pool's largest slot: add a larger class to [pool] classes in "
                "the node's config (docs/shared-memory.md)",
            )
        first = bisect_left(sizes, size)
        mine = self._allocated_by.get(owner)
        if self._owner_cap is not None and mine is not None and len(mine) >= self._owner_cap:
            self._refused += 1
            raise PoolExhausted(f"{len(mine)} slots allocated and not yet published")
        for c in range(first, len(sizes) if self._spill else first + 1):
            if self._free[c]:
                index = self._free[c].pop()
                break
        else:
            self._refused += 1
            raise PoolExhausted(f"no free slot for {size} bytes (class {sizes[first]} bytes)")
        rec = self._records[index]
        slot = self.layout.slots[index]
        rec.generation = rec.generation + 1 if rec.generation < _U64 else 1
        rec.state = SlotState.ALLOCATED
        rec.owner = owner
        rec.length = size
        self._allocated_by.setdefault(owner, set()).add(index)
        self._allocated += 1
        self._bytes_in_use += slot.size
        self._payload_bytes += size
        return Descriptor(slot.segment, index, slot.offset, size, rec.generation)

    def publish(
        self, owner: Hashable, descriptor: Descriptor, receivers: Iterable[Hashable]
    ) -> int:
        """Hand the slot ``owner`` wrote over to ``receivers``, one hold per occurrence.

        ``descriptor`` may carry a shorter ``length`` than allocated (the payload came out
        smaller); receivers must release exactly the descriptor published. A slot published to
        nobody is freed at once.

        Returns the number of holds created (0 means the slot was freed).

        Raises:
            BadDescriptor: the descriptor is not a live allocation of ``owner`` (wrong segment,
                slot, offset or generation, longer than the slot, already published, or
                allocated by someone else). Nothing changes.
        """
        slot, rec = self._lookup(descriptor)
        if rec.state is not SlotState.ALLOCATED or rec.owner != owner:
            raise BadDescriptor(f"slot {descriptor.slot} is not allocated to this owner")
        holds = Counter(receivers)
        # Mutation starts here; nothing below can raise.
        self._allocated_by[owner].discard(descriptor.slot)
        if not self._allocated_by[owner]:
            del self._allocated_by[owner]
        self._allocated -= 1
        rec.owner = None
        self._payload_bytes += descriptor.length - rec.length
        rec.length = descriptor.length
        if not holds:
            self._free_slot(slot, rec)
            return 0
        rec.state = SlotState.PUBLISHED
        rec.published = descriptor
        rec.holds = holds
        for holder, n in holds.items():
            self._held_by.setdefault(holder, Counter())[descriptor.slot] += n
        total = holds.total()
        self._leases += total
        return total

    def release(self, holder: Hashable, descriptor: Descriptor) -> bool:
        """Give back one hold ``holder`` has on the published slot.

        Returns True if that was the last hold and the slot is free again.

        Raises:
            BadDescriptor: ``holder`` holds no lease on exactly this descriptor (never held,
                already released, stale generation, different length). Nothing changes.
        """
        slot, rec = self._lookup(descriptor)
        if rec.state is not SlotState.PUBLISHED or rec.published != descriptor:
            raise BadDescriptor(f"slot {descriptor.slot} is not published as this descriptor")
        if rec.holds[holder] <= 0:
            # Counter[...] on a missing key does not insert it; nothing to undo.
            raise BadDescriptor(f"slot {descriptor.slot} is not held by this holder")
        rec.holds[holder] -= 1
        if rec.holds[holder] == 0:
            del rec.holds[holder]
        mine = self._held_by[holder]
        mine[descriptor.slot] -= 1
        if mine[descriptor.slot] == 0:
            del mine[descriptor.slot]
            if not mine:
                del self._held_by[holder]
        self._leases -= 1
        if rec.holds:
            return False
        self._free_slot(slot, rec)
        return True

    def drop_holder(self, holder: Hashable) -> int:
        """Forget ``holder`` (its agent died or left): free what it allocated and drop every
        hold it had. Unknown holders are fine.

        Returns the number of slots this freed (also added to ``stats().reclaimed``).
        """
        freed = 0
        for index in sorted(self._allocated_by.pop(holder, ())):
            rec = self._records[index]
            self._allocated -= 1
            self._free_slot(self.layout.slots[index], rec)
            freed += 1
        for index, n in sorted(self._held_by.pop(holder, Counter()).items()):
            rec = self._records[index]
            del rec.holds[holder]
            self._leases -= n
            if not rec.holds:
                self._free_slot(self.layout.slots[index], rec)
                freed += 1
        self._reclaimed += freed
        return freed

    # --- queries --------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        """Counts for metrics (cheap: O(number of classes))."""
        classes = tuple(
            ClassStats(
                size,
                len(self.layout.class_slots(c)),
                len(self.layout.class_slots(c)) - len(self._free[c]),
            )
            for c, size in enumerate(self.layout.class_sizes)
        )
        return PoolStats(
            classes=classes,
            bytes_in_use=self._bytes_in_use,
            payload_bytes=self._payload_bytes,
            allocated=self._allocated,
            leases=self._leases,
            reclaimed=self._reclaimed,
            refused=self._refused,
            too_large=self._too_large,
        )

    def state_of(self, slot: int) -> SlotState:
        """The state of slot ``slot``. Raises ``IndexError`` when out of range."""
        return self._records[self.layout.slot(slot).index].state

    def holds_of(self, holder: Hashable) -> dict[int, int]:
        """Slot index → number of holds ``holder`` has on it (a copy)."""
        return dict(self._held_by.get(holder, {}))

    def allocated_to(self, holder: Hashable) -> frozenset[int]:
        """Slots ``holder`` has allocated and not yet published."""
        return frozenset(self._allocated_by.get(holder, ()))

    def free_slots(self, size: int) -> int:
        """How many slots could take a payload of ``size`` bytes right now (0 if too large)."""
        sizes = self.layout.class_sizes
        first = bisect_left(sizes, size)
        if first >= len(sizes):
            return 0
        last = len(sizes) if self._spill else first + 1
        return sum(len(self._free[c]) for c in range(first, last))

    # --- internals ------------------------------------------------------------------------

    def _lookup(self, desc: Descriptor) -> tuple[Slot, _Record]:
        if not isinstance(desc, Descriptor):
            raise BadDescriptor("not a descriptor")
        check_fields(desc)
        if desc.slot >= len(self._records):
            raise BadDescriptor(f"slot {desc.slot} out of range")
        slot = self.layout.slots[desc.slot]
        if desc.segment != slot.segment:
            raise BadDescriptor(f"slot {desc.slot} is not in segment {desc.segment}")
        if desc.offset != slot.offset:
            raise BadDescriptor(f"offset {desc.offset} is not the offset of slot {desc.slot}")
        if desc.length > slot.size:
            raise BadDescriptor(f"length {desc.length} exceeds slot size {slot.size}")
        rec = self._records[desc.slot]
        if desc.generation != rec.generation or rec.state is SlotState.FREE:
            raise BadDescriptor(f"stale descriptor for slot {desc.slot}")
        return slot, rec

    def _free_slot(self, slot: Slot, rec: _Record) -> None:
        self._bytes_in_use -= slot.size
        self._payload_bytes -= rec.length
        rec.state = SlotState.FREE
        rec.owner = None
        rec.published = None
        rec.length = 0
        rec.holds = Counter()
        self._free[slot.class_index].append(slot.index)
