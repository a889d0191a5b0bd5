"""Where every slot lives: segment, offset, size. Built by the node from ``PoolSettings`` and
sent to each agent (``to_wire``), which rebuilds it with ``from_wire`` — untrusted input there,
so every field is checked: no negative, overlapping or out-of-segment slot gets through.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, RemoteProtocolError
from ._settings import PAGE, PoolSettings

__all__ = ["LAYOUT_VERSION", "MAX_SLOTS", "PoolLayout", "Slot", "SlotRun"]

LAYOUT_VERSION = 1
#: A layout with more slots than this is hostile: it would make a receiver allocate tables
#: of unbounded size.
MAX_SLOTS = 1 << 17
_MAX_SEGMENTS = 64
_MAX_RUNS = 1024
_U64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Slot:
    """One slot's fixed place in the pool."""

    #: Global index (what a ``Descriptor`` names).
    index: int
    #: Index into ``PoolLayout.class_sizes``.
    class_index: int
    #: Which memfd segment.
    segment: int
    #: Byte offset of the slot in its segment (page-aligned).
    offset: int
    #: Capacity in bytes.
    size: int


@dataclass(frozen=True, slots=True)
class SlotRun:
    """``count`` consecutive slots of one class, back to back in one segment."""

    class_index: int
    slot_size: int
    count: int
    segment: int
    base_offset: int


class PoolLayout:
    """Immutable map from slot index to (segment, offset, size).

    Slot indices are global and grouped by class in increasing size, so a class is a
    contiguous index range.
    """

    __slots__ = ("_run_starts", "class_sizes", "runs", "segment_sizes", "slots")

    def __init__(self, segment_sizes: Sequence[int], runs: Sequence[SlotRun]) -> None:
        """Build from raw parts. Raises ``ValueError`` if they are inconsistent.

        Use ``from_settings`` (node) or ``from_wire`` (agent) rather than this.
        """
        self.segment_sizes: tuple[int, ...] = tuple(segment_sizes)
        self.runs: tuple[SlotRun, ...] = tuple(runs)
        _check_parts(self.segment_sizes, self.runs)
        sizes: list[int] = []
        for run in self.runs:
            if run.class_index == len(sizes):
                sizes.append(run.slot_size)
        self.class_sizes: tuple[int, ...] = tuple(sizes)
        slots: list[Slot] = []
        starts: list[int] = []
        for run in self.runs:
            starts.append(len(slots))
            for i in range(run.count):
                slots.append(
                    Slot(
                        index=len(slots),
                        class_index=run.class_index,
                        segment=run.segment,
                        offset=run.base_offset + i * run.slot_size,
                        size=run.slot_size,
                    )
                )
        self.slots: tuple[Slot, ...] = tuple(slots)
        self._run_starts = tuple(starts)

    @classmethod
    def from_settings(cls, settings: PoolSettings) -> PoolLayout:
        """Pack the classes into as few segments as ``segment_max_bytes`` allows.

        Raises:
            ConfigError: the settings need more segments, runs or slots than a layout may
                have (a tiny ``segment_max_bytes``, say).
        """
        segment_sizes: list[int] = [0]
        runs: list[SlotRun] = []
        for class_index, spec in enumerate(settings.classes):
            left = spec.count
            while left:
                room = (settings.segment_max_bytes - segment_sizes[-1]) // spec.slot_size
                if room == 0:
                    segment_sizes.append(0)
                    continue
                n = min(room, left)
                runs.append(
                    SlotRun(
                        class_index, spec.slot_size, n, len(segment_sizes) - 1, segment_sizes[-1]
                    )
                )
                segment_sizes[-1] += n * spec.slot_size
                left -= n
        try:
            return cls(segment_sizes, runs)
        except ValueError as exc:
            raise ConfigError(f"pool settings give an impossible layout: {exc}") from None

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-ready map for the agent (``from_wire`` reads it back)."""
        return {
            "v": LAYOUT_VERSION,
            "segments": list(self.segment_sizes),
            "runs": [
                [r.class_index, r.slot_size, r.count, r.segment, r.base_offset] for r in self.runs
            ],
        }

    @classmethod
    def from_wire(cls, data: Any) -> PoolLayout:
        """Rebuild a layout a node sent.

        Raises:
            RemoteProtocolError: the map is malformed, or describes overlapping, unaligned or
                out-of-segment slots, or too many of them.
        """
        try:
            if type(data) is not dict or data.get("v") != LAYOUT_VERSION:
                raise ValueError("not a layout of a known version")
            segments = data["segments"]
            raw_runs = data["runs"]
            if not isinstance(segments, list | tuple) or not isinstance(raw_runs, list | tuple):
                raise ValueError("segments and runs must be arrays")
            runs = []
            for raw in raw_runs:
                if not isinstance(raw, list | tuple) or len(raw) != 5:
                    raise ValueError("a run is an array of 5 integers")
                runs.append(SlotRun(*raw))
            return cls(segments, runs)
        except (KeyError, TypeError, ValueError) as exc:
            raise RemoteProtocolError(f"bad pool layout: {exc}") from None

    def slot(self, index: int) -> Slot:
        """The slot at ``index``. Raises ``IndexError`` when out of range."""
        if index < 0:
            raise IndexError(index)
        return self.slots[index]

    def class_slots(self, class_index: int) -> range:
        """Indices of every slot of one class."""
        first = last = -1
        for run, start in zip(self.runs, self._run_starts, strict=True):
            if run.class_index == class_index:
                if first < 0:
                    first = start
                last = start + run.count
        return range(first, last) if first >= 0 else range(0)

    def run_of(self, index: int) -> SlotRun:
        """The run holding slot ``index``."""
        return self.runs[bisect_right(self._run_starts, index) - 1]

    @property
    def total_bytes(self) -> int:
        """Bytes of all segments together."""
        return sum(self.segment_sizes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PoolLayout):
            return NotImplemented
        return self.segment_sizes == other.segment_sizes and self.runs == other.runs

    def __hash__(self) -> int:
        return hash((self.segment_sizes, self.runs))

    def __repr__(self) -> str:
        return f"PoolLayout(segments={self.segment_sizes!r}, classes={self.class_sizes!r})"


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= _U64


def _check_parts(segment_sizes: tuple[int, ...], runs: tuple[SlotRun, ...]) -> None:
    if not 1 <= len(segment_sizes) <= _MAX_SEGMENTS:
        raise ValueError(f"a pool has 1 to {_MAX_SEGMENTS} segments")
    for size in segment_sizes:
        if not _is_uint(size) or size == 0 or size % PAGE:
            raise ValueError("segment sizes must be positive multiples of the page size")
    if not 1 <= len(runs) <= _MAX_RUNS:
        raise ValueError(f"a pool has 1 to {_MAX_RUNS} runs of slots")
    total = 0
    next_class, last_size = 0, 0
    # Per segment, the byte ranges taken so far (runs must not overlap each other).
    taken: list[list[tuple[int, int]]] = [[] for _ in segment_sizes]
    for run in runs:
        fields = (run.class_index, run.slot_size, run.count, run.segment, run.base_offset)
        if not all(_is_uint(f) for f in fields):
            raise ValueError("run fields must be unsigned integers")
        if run.slot_size == 0 or run.slot_size % PAGE or run.base_offset % PAGE:
            raise ValueError("slots must be page-aligned and non-empty")
        if run.count == 0:
            raise ValueError("a run holds at least one slot")
        total += run.count
        if total > MAX_SLOTS:
            raise ValueError(f"more than {MAX_SLOTS} slots")
        # Classes appear in increasing order, each with one size, sizes strictly increasing.
        if run.class_index == next_class:
            if run.slot_size <= last_size:
                raise ValueError("class sizes must increase")
            next_class, last_size = next_class + 1, run.slot_size
        elif run.class_index != next_class - 1 or run.slot_size != last_size:
            raise ValueError("runs must list classes in order, one size per class")
        if run.segment >= len(segment_sizes):
            raise ValueError("run names a segment that does not exist")
        end = run.base_offset + run.count * run.slot_size
        if end > segment_sizes[run.segment]:
            raise ValueError("run extends past the end of its segment")
        for lo, hi in taken[run.segment]:
            if run.base_offset < hi and lo < end:
                raise ValueError("runs overlap")
        taken[run.segment].append((run.base_offset, end))
