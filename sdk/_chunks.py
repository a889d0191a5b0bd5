"""Stream chunk batches and stream credit accounting (pure: no I/O, no clock, no loop).

A responder whose generator yields faster than the loop turns sends the chunks it has
gathered as ONE frame (``Status.STREAM_CHUNKS``): the per-chunk cost becomes a fraction of a
frame's. Only a requester that said so in its stream-open (``BATCH_HEADER``) gets batches;
anyone else gets one chunk per frame, as before. Credit is still counted in chunks, so a
batch never carries more chunks than the responder holds credit for.

Batch payload: ``u32 count`` then ``count`` times ``u32 length`` (little-endian), then the chunks'
bytes back to back. The frame's ``seq`` is the first chunk's number.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from fabric.errors import RemoteProtocolError
from fabric.protocol import CHUNKS_HEADER, Status

__all__ = [
    "BATCH_HEADER",
    "BATCH_VERSION",
    "DEFAULT_WINDOW",
    "MAX_BATCH_BYTES",
    "ChunkBatcher",
    "CreditWindow",
    "Frame",
    "pack_chunks",
    "unpack_chunks",
]

#: Stream-open header by which a requester says it splits ``STREAM_CHUNKS`` frames.
BATCH_HEADER = CHUNKS_HEADER
BATCH_VERSION = "1"

#: A batch is always sent inline (never through a slot, whose release would cut its chunks'
#: views short); this keeps it below the default 64 KiB shared-memory threshold.
MAX_BATCH_BYTES = 32 * 1024
#: Bounded so splitting one batch stays a short step of the reader's loop.
MAX_BATCH_CHUNKS = 1024

#: Credit a stream starts with. Measured (2,000 chunks of 64 B, docs/architecture.md): with
#: batches, 64 leaves the responder waiting on a credit round trip every 32 chunks; 256 keeps
#: it busy on one host and across two nodes; 512 gains little more and doubles what a reader
#: may have to buffer.
DEFAULT_WINDOW = 256

_U32 = struct.Struct("<I")


def pack_chunks(chunks: Sequence[bytes | memoryview]) -> bytes:
    """One batch payload carrying ``chunks`` in order."""
    n = len(chunks)
    lengths = struct.pack(f"<{n + 1}I", n, *(len(c) for c in chunks))
    return b"".join((lengths, *chunks))


def unpack_chunks(payload: bytes | memoryview) -> list[memoryview]:
    """The chunks of a batch payload, in order (views into ``payload``, no copy).

    Raises:
        RemoteProtocolError: the payload is truncated or its lengths do not add up.
    """
    view = memoryview(payload)
    if len(view) < 4:
        raise RemoteProtocolError("stream batch shorter than its count")
    (n,) = _U32.unpack_from(view, 0)
    offset = 4 + 4 * n
    if n > MAX_BATCH_CHUNKS or offset > len(view):
        raise RemoteProtocolError(f"stream batch claims {n} chunks in {len(view)} bytes")
    lengths = struct.unpack_from(f"<{n}I", view, 4)
    if offset + sum(lengths) != len(view):
        raise RemoteProtocolError("stream batch lengths do not match its size")
    out: list[memoryview] = []
    for size in lengths:
        out.append(view[offset : offset + size])
        offset += size
    return out


class Frame(NamedTuple):
    """One frame a responder sends: a single chunk or a batch."""

    #: ``Status.STREAM_CHUNK`` or ``Status.STREAM_CHUNKS``.
    status: int
    #: The (first) chunk's number.
    seq: int
    payload: bytes | memoryview


class ChunkBatcher:
    """Responder side: the chunks gathered since the last flush.

    The driver offers chunks while its generator runs without yielding to the loop and
    flushes when the loop turns, before it waits for credit, and at the end of the stream.
    A chunk that does not ``fit`` is not offered: the driver flushes, then sends it alone.
    """

    def __init__(
        self, max_bytes: int = MAX_BATCH_BYTES, max_chunks: int = MAX_BATCH_CHUNKS
    ) -> None:
        self.max_bytes = max_bytes
        self.max_chunks = max_chunks
        self._chunks: list[bytes | memoryview] = []
        self._size = 4
        self._first_seq = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def fits(self, chunk: bytes | memoryview) -> bool:
        """Whether ``chunk`` may join a batch at all (small enough on its own)."""
        return len(chunk) + 8 <= self.max_bytes

    def offer(self, chunk: bytes | memoryview, seq: int) -> Sequence[Frame]:
        """Gather chunk number ``seq`` (which ``fits``); the frames to send now, if any: the
        batch it would overflow, or the batch it filled. (Per chunk: kept lean.)"""
        size = len(chunk) + 4
        chunks = self._chunks
        out: tuple[Frame, ...] = ()
        if not chunks:
            self._first_seq = seq
        elif self._size + size > self.max_bytes:
            out = (self._take(),)
            chunks = self._chunks
            self._first_seq = seq
        chunks.append(chunk)
        self._size += size
        if self._size >= self.max_bytes or len(chunks) >= self.max_chunks:
            return (*out, self._take())
        return out

    def flush(self) -> Frame | None:
        """The frame carrying what is gathered (None when nothing is); empty again after."""
        return self._take() if self._chunks else None

    def _take(self) -> Frame:
        chunks, self._chunks, self._size = self._chunks, [], 4
        if len(chunks) == 1:
            return Frame(Status.STREAM_CHUNK, self._first_seq, chunks[0])
        return Frame(Status.STREAM_CHUNKS, self._first_seq, pack_chunks(chunks))


class CreditWindow:
    """Requester side: when to grant the responder more credit.

    The responder starts with ``window`` credits; every chunk the reader takes is one more the
    responder may send. Credit goes back in grants of ``batch`` chunks (one message each), so
    the responder never holds more than ``window`` chunks unread.
    """

    def __init__(self, window: int, batch: int | None = None) -> None:
        if window < 2:
            raise ValueError("window must be at least 2")
        self.window = window
        self.batch = max(1, min(window, batch if batch is not None else window // 2))
        self._unacked = 0

    def consumed(self, n: int = 1) -> int:
        """The reader took ``n`` chunks; the credit to grant now (0: not yet)."""
        self._unacked += n
        if self._unacked < self.batch:
            return 0
        grant, self._unacked = self._unacked, 0
        return grant
