"""Pool configuration: the one place where slot classes, the threshold and the full-pool policy
are chosen. Validated at the edge (pydantic); the pure pool only ever sees a valid layout."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PAGE", "PoolSettings", "SlotClassSpec"]

#: Slot sizes and offsets are multiples of this, so every slot starts page-aligned (numpy and
#: SIMD code get aligned buffers, and a slot never shares a page with its neighbour).
PAGE = 4096

_KIB = 1024
_MIB = 1024 * 1024


class SlotClassSpec(BaseModel):
    """One size class: ``count`` slots of ``slot_size`` bytes each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slot_size: int = Field(gt=0, multiple_of=PAGE)
    count: int = Field(gt=0, le=1 << 16)


def _default_classes() -> tuple[SlotClassSpec, ...]:
    # 360 MiB of address space. memfd pages cost memory only once touched, and the pool hands
    # out the most recently freed slot first, so a quiet host touches a few MiB of it.
    return (
        SlotClassSpec(slot_size=64 * _KIB, count=128),
        SlotClassSpec(slot_size=1 * _MIB, count=32),
        SlotClassSpec(slot_size=4 * _MIB, count=16),
        SlotClassSpec(slot_size=16 * _MIB, count=8),
        SlotClassSpec(slot_size=64 * _MIB, count=2),
    )


class PoolSettings(BaseModel):
    """Shared-memory pool of one node.

    The node creates ``sum(slot_size * count)`` bytes of memfd segments at start, cut into the
    classes below; agents map the same segments and read payloads in place.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Size classes, strictly increasing ``slot_size``. A payload goes to the smallest class
    #: it fits; above the largest it is refused with ``PayloadTooLarge``.
    classes: tuple[SlotClassSpec, ...] = Field(default_factory=_default_classes, min_length=1)
    #: Upper bound on the whole pool (all segments); the classes must fit in it.
    max_pool_bytes: int = Field(default=1024 * _MIB, gt=0)
    #: One memfd segment holds at most this many bytes; more classes spill into a new segment.
    segment_max_bytes: int = Field(default=1024 * _MIB, gt=0, multiple_of=PAGE)
    #: Payloads of at least this many bytes travel through shared memory; smaller ones are
    #: copied inline (a copy of 64 KiB costs less than the allocate/release round trips).
    threshold: int = Field(default=64 * _KIB, ge=0)
    #: When the fitting class is full: ``"wait"`` for a free slot up to the request deadline
    #: (then ``PoolExhausted``), or ``"copy"``: refuse at once so the sender falls back to
    #: sending the bytes inline.
    when_full: Literal["wait", "copy"] = "wait"
    #: Longest wait for a slot when the request carries no deadline, in seconds.
    max_wait: float = Field(default=5.0, gt=0)
    #: Take a slot of a larger class when the fitting class is full. Off by default: small
    #: payloads would otherwise eat the few large slots that big transfers (migration) need.
    spill_to_larger: bool = False
    #: Slots one agent may hold allocated but not yet published; beyond it the agent gets
    #: ``PoolExhausted`` (or waits for its own publishes). Stops one agent from taking the
    #: whole pool and never publishing.
    max_unpublished_per_owner: int = Field(default=8, gt=0)
    #: Slots of one class an agent may lease ahead of need once it has sent a payload of that
    #: class, so the next one needs no allocation round trip (0: never). Bounded further by
    #: ``prelease_bounds``.
    prelease: int = Field(default=2, ge=0, le=64)
    #: Commit every page of the pool when the node starts (``SharedRegion.populate``). A slot's
    #: first write otherwise pays the page allocation: about 10-15 ms for 16 MiB on the
    #: reference machine against about 1.5 ms once warm. Costs ``pool_bytes`` of RAM up front.
    prefault: bool = False

    @model_validator(mode="after")
    def _check_classes(self) -> PoolSettings:
        sizes = [c.slot_size for c in self.classes]
        if any(b <= a for a, b in pairwise(sizes)):
            raise ValueError("slot classes must have strictly increasing slot_size")
        if sizes[-1] > self.segment_max_bytes:
            raise ValueError("the largest slot does not fit in one segment")
        if self.pool_bytes > self.max_pool_bytes:
            raise ValueError(
                f"classes need {self.pool_bytes} bytes, more than max_pool_bytes "
                f"({self.max_pool_bytes})"
            )
        return self

    @property
    def pool_bytes(self) -> int:
        """Bytes of shared memory all classes together take."""
        return sum(c.slot_size * c.count for c in self.classes)

    def prelease_bounds(self) -> tuple[int, ...]:
        """Per class, the slots one agent may hold pre-leased: ``prelease``, but never more
        than a sixteenth of the class (a few agents must not empty it), and all classes
        together at most half of ``max_unpublished_per_owner`` (the rest stays for payloads
        allocated on demand); the smallest classes are served first."""
        budget = self.max_unpublished_per_owner // 2
        out: list[int] = []
        for spec in self.classes:
            n = min(self.prelease, spec.count // 16, budget)
            budget -= n
            out.append(n)
        return tuple(out)

    @property
    def largest_slot(self) -> int:
        """The biggest payload the pool can carry."""
        return self.classes[-1].slot_size
