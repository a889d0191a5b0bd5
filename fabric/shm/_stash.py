"""Slots an agent leases ahead of need, so a large publish needs no allocation round trip.
Pure: no I/O, no clock, no asyncio.

Rules:

1. A class is only stocked once the agent has put a payload of that class (demand): an agent
   that never sends large payloads holds nothing.
2. At most ``bounds[c]`` slots of class ``c`` are held or being leased at any time (the node
   announces the bounds in WELCOME; a node that announces none gets no pre-leases).
3. A refill that failed (the class was full) stops stocking that class until the next put in
   it: a busy pool is not hammered from the background.
4. Pre-leased slots are leased at their full class size; ``take`` hands one out with the
   payload's own length, which the node accepts at publish (a shorter length than allocated).
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections.abc import Sequence

from ._descriptor import Descriptor

__all__ = ["SlotStash"]


class SlotStash:
    """Per size class, the pre-leased slots of one agent's connection."""

    def __init__(self, class_sizes: Sequence[int], bounds: Sequence[int]) -> None:
        if len(class_sizes) != len(bounds):
            raise ValueError("one bound per slot class")
        self.class_sizes = tuple(class_sizes)
        self.bounds = tuple(max(0, b) for b in bounds)
        self._held: list[list[Descriptor]] = [[] for _ in class_sizes]
        self._leasing = [0] * len(class_sizes)
        self._wanted = [False] * len(class_sizes)
        #: Puts served from the stash (no round trip) and puts that found it empty.
        self.hits = 0
        self.misses = 0

    def take(self, size: int) -> Descriptor | None:
        """A pre-leased slot for a ``size``-byte payload, its length set; None when the class
        has none held (the caller allocates, and the class is wanted from now on)."""
        c = bisect_left(self.class_sizes, size)
        if c >= len(self.class_sizes) or not self.bounds[c]:
            return None
        self._wanted[c] = True
        held = self._held[c]
        if not held:
            self.misses += 1
            return None
        self.hits += 1
        return dataclasses.replace(held.pop(), length=size)

    def to_lease(self) -> list[int]:
        """Class slot sizes to lease now (each one counted as being leased until ``leased``
        or ``failed``)."""
        out: list[int] = []
        for c, size in enumerate(self.class_sizes):
            if not self._wanted[c]:
                continue
            missing = self.bounds[c] - len(self._held[c]) - self._leasing[c]
            if missing > 0:
                self._leasing[c] += missing
                out += [size] * missing
        return out

    def leased(self, desc: Descriptor) -> None:
        """A lease asked for by ``to_lease`` arrived."""
        c = self._class_of(desc.length)
        self._leasing[c] -= 1
        self._held[c].append(desc)

    def failed(self, size: int) -> None:
        """A lease asked for by ``to_lease`` was refused: stop stocking that class for now."""
        c = self._class_of(size)
        self._leasing[c] -= 1
        self._wanted[c] = False

    def held(self) -> int:
        """Slots held now."""
        return sum(len(h) for h in self._held)

    def drain(self) -> list[Descriptor]:
        """Forget everything held (the connection is gone: its node reclaims the slots)."""
        out = [d for h in self._held for d in h]
        self._held = [[] for _ in self.class_sizes]
        self._wanted = [False] * len(self.class_sizes)
        return out

    def _class_of(self, size: int) -> int:
        c = bisect_left(self.class_sizes, size)
        if c >= len(self.class_sizes) or self.class_sizes[c] != size:
            raise ValueError(f"{size} is not a slot class size")
        return c
