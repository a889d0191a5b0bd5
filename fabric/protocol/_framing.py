"""Frames on a byte stream (the node's Unix-domain socket).

ZeroMQ keeps message boundaries itself; a stream socket does not, so each message travels as

    u32 header length | u32 payload length | header bytes | payload bytes   (little-endian)

``FrameDecoder`` is sans-I/O: feed it whatever ``recv`` returned, in any pieces, and pull out
``(header, payload)`` pairs. Payloads come out as memoryviews over the bytes received, so a node
forwards them without a copy.

Memory rules (what a hostile peer can make a node hold; docs/limits.md):

1. The buffer grows with the bytes that arrived, never with the length a prefix declares.
2. Lengths are checked before any buffering: a connection holds at most one maximal frame
   (``max_payload``, which a node keeps small until the handshake: ``set_max_payload``).
3. Bytes held across connections are charged to a shared ``PendingBudget``; past it the
   connection that asked for more is refused (the caller closes it), not the node.
4. A partial frame that makes no progress is the driver's to time out: ``received`` counts
   every byte fed, so "nothing arrived since the last look" needs no clock here.
5. ``reset()`` gives every byte back (a closed connection must not wait for the GC).
"""

from __future__ import annotations

import struct

from typing_extensions import Buffer

from ..errors import PayloadTooLarge, RemoteProtocolError
from ._wire import MAX_HEADER_BYTES

__all__ = ["PREFIX_SIZE", "FrameDecoder", "PendingBudget", "frame_prefix"]

_PREFIX = struct.Struct("<II")
PREFIX_SIZE = _PREFIX.size


def frame_prefix(header_len: int, payload_len: int) -> bytes:
    """The 8-byte prefix announcing a frame of these sizes."""
    return _PREFIX.pack(header_len, payload_len)


class PendingBudget:
    """Bytes of partial frames a whole node may hold, shared by its connections. Pure."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        """Charge ``n`` more bytes; False (and nothing charged) past the limit."""
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


class FrameDecoder:
    """Reassembles frames from stream bytes.

    Raises ``RemoteProtocolError`` (header too large, empty header, the node's pending-byte
    budget spent) or ``PayloadTooLarge``; after any of them the stream is out of sync (or
    refused) and the connection must be closed.
    """

    def __init__(self, max_payload: int, budget: PendingBudget | None = None) -> None:
        self._max_payload = max_payload
        self._budget = budget
        #: Bytes charged to the budget (what ``_buf`` held after the last feed).
        self._charged = 0
        #: Every byte ever fed (a driver compares it over time to spot a stalled frame).
        self.received = 0
        self._buf = bytearray()
        # Size of the frame being assembled, once its prefix has been read.
        self._need_header = -1
        self._need_payload = -1

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    @property
    def partial(self) -> bool:
        """Whether a frame has begun and not ended."""
        return bool(self._buf)

    @property
    def max_payload(self) -> int:
        return self._max_payload

    def set_max_payload(self, max_payload: int) -> None:
        """Change the limit for frames whose prefix has not been read yet (a node raises it
        once the peer has authenticated)."""
        self._max_payload = max_payload

    def reset(self) -> None:
        """Drop whatever is buffered and give its bytes back to the budget."""
        self._buf = bytearray()
        self._need_header = self._need_payload = -1
        if self._budget is not None and self._charged:
            self._budget.give(self._charged)
        self._charged = 0

    def feed(self, data: Buffer) -> list[tuple[bytes, memoryview]]:
        """Add received bytes; return every frame now complete, in order.

        Raises:
            PayloadTooLarge: a prefix declares more than ``max_payload``.
            RemoteProtocolError: a bad header length, or the budget cannot hold the rest.
        """
        self.received += len(data)  # type: ignore[arg-type]  # byte-format buffers
        frames = self._feed(data)
        held = len(self._buf)
        if held != self._charged and self._budget is not None:
            if held > self._charged and not self._budget.take(held - self._charged):
                raise RemoteProtocolError(
                    f"the node holds {self._budget.used} bytes of partial frames already "
                    f"(limit {self._budget.limit}); refusing {held - self._charged} more"
                )
            if held < self._charged:
                self._budget.give(self._charged - held)
            self._charged = held
        return frames

    def _feed(self, data: Buffer) -> list[tuple[bytes, memoryview]]:
        if not self._buf and isinstance(data, bytes):
            # Fast path: frames that arrive whole are sliced out of the immutable chunk the
            # event loop handed us, so the payload view costs no copy.
            src: bytes | bytearray = data
        else:
            self._buf += data
            src = self._buf
        frames: list[tuple[bytes, memoryview]] = []
        view = memoryview(src)
        pos = 0
        end = len(src)
        while True:
            if self._need_header < 0:
                if end - pos < PREFIX_SIZE:
                    break
                header_len, payload_len = _PREFIX.unpack_from(src, pos)
                if header_len == 0 or header_len > MAX_HEADER_BYTES:
                    raise RemoteProtocolError(f"frame header length {header_len} out of range")
                if payload_len > self._max_payload:
                    raise PayloadTooLarge(size=payload_len, limit=self._max_payload)
                self._need_header, self._need_payload = header_len, payload_len
                pos += PREFIX_SIZE
            total = self._need_header + self._need_payload
            if end - pos < total:
                break
            start = pos + self._need_header
            header = bytes(view[pos:start])
            payload = view[start : start + self._need_payload]
            if src is self._buf:
                # The bytearray is about to be compacted; the payload needs its own bytes.
                payload = memoryview(bytes(payload))
            frames.append((header, payload))
            pos += total
            self._need_header = self._need_payload = -1
        if src is self._buf:
            view.release()  # a bytearray cannot be resized while a view is exported
            del self._buf[:pos]
        elif pos < end:
            self._buf += view[pos:]
        return frames
