"""Batching RELEASEs: a receiver gives back many leases in one control message. Pure: the
caller passes ``now`` (monotonic seconds) and decides when to send."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import BadDescriptor
from ._descriptor import DESCRIPTOR_SIZE, Descriptor

__all__ = ["MAX_BATCH", "ReleaseBatcher", "decode_release_batch", "encode_release_batch"]

#: Most descriptors in one RELEASE payload (about 36 KiB); a longer batch is hostile.
MAX_BATCH = 1024


def encode_release_batch(descriptors: Iterable[Descriptor]) -> bytes:
    """Concatenate encoded descriptors: the payload of one RELEASE.

    Raises ``LocalProtocolError`` if a descriptor does not fit the wire format.
    """
    return b"".join(d.encode() for d in descriptors)


def decode_release_batch(data: bytes | bytearray | memoryview) -> list[Descriptor]:
    """Split a RELEASE payload from a peer.

    Raises:
        BadDescriptor: the length is not a multiple of the descriptor size, the batch is
            empty or longer than ``MAX_BATCH``, or any descriptor is malformed (then none is
            returned).
    """
    view = memoryview(data).cast("B")
    n, rest = divmod(len(view), DESCRIPTOR_SIZE)
    if rest or not 0 < n <= MAX_BATCH:
        raise BadDescriptor(f"release batch of {len(view)} bytes is malformed")
    return [
        Descriptor.decode(view[i * DESCRIPTOR_SIZE : (i + 1) * DESCRIPTOR_SIZE]) for i in range(n)
    ]


class ReleaseBatcher:
    """Collect releases; flush when ``max_count`` are pending or the oldest waited
    ``max_delay`` seconds.

    The driver calls ``add`` for each finished payload, arms a timer at ``deadline()`` and
    sends ``drain()`` as one RELEASE whenever ``due(now)`` or ``add`` returns True.
    """

    def __init__(self, *, max_count: int = 64, max_delay: float = 0.001) -> None:
        if not 0 < max_count <= MAX_BATCH:
            raise ValueError(f"max_count must be in 1..{MAX_BATCH}")
        self.max_count = max_count
        self.max_delay = max_delay
        self._pending: list[Descriptor] = []
        self._first_at = 0.0

    def add(self, desc: Descriptor, *, now: float) -> bool:
        """Queue one release. Returns True when the batch is full and should go now."""
        if not self._pending:
            self._first_at = now
        self._pending.append(desc)
        return len(self._pending) >= self.max_count

    def deadline(self) -> float | None:
        """When the oldest pending release must be sent, or None if nothing is pending."""
        return self._first_at + self.max_delay if self._pending else None

    def due(self, *, now: float) -> bool:
        """Whether the batch should be sent at ``now``."""
        return bool(self._pending) and (
            len(self._pending) >= self.max_count or now >= self._first_at + self.max_delay
        )

    def drain(self) -> list[Descriptor]:
        """Take every pending release (oldest first)."""
        out, self._pending = self._pending, []
        return out

    def __len__(self) -> int:
        return len(self._pending)
