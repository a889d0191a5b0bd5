"""Frames written in one event-loop iteration, gathered to leave in one system call. Pure.

A stream link (Unix socket, the mesh's TCP) adds every frame it is given to a ``FrameBatch``
and writes ``take()`` once, at the end of the loop iteration (``loop.call_soon``), so a
burst of publishes or a fan-out costs the reader one wake-up, not one per frame, and a lone
frame still leaves in the iteration it was sent in. Rules:

1. Order is kept: ``take()`` returns the buffers in the order the frames were added.
2. Small payloads are copied into the batch (the caller may reuse its buffer at once); a
   payload of more than ``COALESCE_LIMIT`` bytes is kept by reference and ends the batch
   (``add`` answers True: write now, so the reference is not held across iterations).
3. A batch of ``COALESCE_LIMIT`` bytes or more also asks to be written now: a sender that
   never yields still meets the transport's backpressure instead of growing the batch.
"""

from __future__ import annotations

from typing_extensions import Buffer

from ..framing import frame_prefix

__all__ = ["COALESCE_LIMIT", "FrameBatch"]

#: Bytes gathered before a batch is written without waiting for the end of the iteration.
COALESCE_LIMIT = 64 * 1024


class FrameBatch:
    """Encoded frames not yet written: ``add`` them, ``take`` the buffers to write."""

    __slots__ = ("_parts", "size")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        #: Bytes gathered (prefixes, headers and copied payloads).
        self.size = 0

    def __bool__(self) -> bool:
        return bool(self._parts)

    def add(self, header: bytes, payload: Buffer = b"") -> Buffer | None:
        """Add one frame. Returns None while the batch may wait for the end of the loop
        iteration; otherwise it must be written now: then a large payload is returned, to be
        written (by reference) right after ``take()``'s buffers, or ``b""``."""
        size = len(payload)  # type: ignore[arg-type]  # payloads are byte-format buffers
        parts = self._parts
        parts.append(frame_prefix(len(header), size))
        parts.append(header)
        if size > COALESCE_LIMIT:
            self.size += len(header) + 8
            return payload
        parts.append(payload if type(payload) is bytes else bytes(payload))  # type: ignore[arg-type]
        self.size += size + len(header) + 8
        return b"" if self.size >= COALESCE_LIMIT else None

    def take(self) -> bytes:
        """The gathered frames as one buffer; the batch is empty afterwards."""
        joined = b"".join(self._parts)
        self._parts.clear()
        self.size = 0
        return joined
