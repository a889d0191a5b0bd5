"""Frames on a byte stream (the node's Unix-domain socket, the mesh's TCP links).

ZeroMQ keeps message boundaries itself; a stream socket does not, so each message travels as

    u32 header length | u32 payload length | header bytes | payload bytes   (little-endian)

``FrameDecoder`` is sans-I/O. Two ways in, the same frames out:

- ``feed(data)``: whatever ``recv`` returned, in any pieces;
- ``get_buffer()`` / ``buffer_updated(n)``: the ``asyncio.BufferedProtocol`` pair, so the
  socket reads straight into the decoder's memory (``recv_into``), with no chunk object.

Payloads come out as memoryviews, valid for as long as their holder keeps them (no later read
writes into them), so a node forwards them without a copy:

- a frame that arrives whole in one read (every small message) is cut out of one immutable
  ``bytes`` copy of that read: one copy for the whole read, none per frame;
- a *large* payload (``LARGE_PAYLOAD`` bytes or more) that does not arrive whole gets its own
  buffer, allocated once at the announced size, and the socket reads the rest of it straight
  into that buffer; the payload handed on is a view of it. No reassembly, no copy-out: the
  only user-space copy is of the first piece, which arrived with the prefix.

Memory rules (what a hostile peer can make a node hold; docs/limits.md):

1. Memory grows with the bytes that arrived, never with the length a prefix declares: a large
   payload's buffer is an anonymous private mapping, reserved at the announced size and
   committed by the kernel page by page as bytes are written into it.
2. Lengths are checked before any buffering: a connection holds at most one maximal frame
   (``max_payload``, which a node keeps small until the handshake: ``set_max_payload``).
3. Bytes held across connections are charged to a shared ``PendingBudget``; past it the
   connection that asked for more is refused (the caller closes it), not the node.
4. A partial frame that makes no progress is the driver's to time out: ``received`` counts
   every byte fed, so "nothing arrived since the last look" needs no clock here.
5. ``reset()`` gives every byte back (a closed connection must not wait for the GC).
6. The read buffer ``get_buffer`` returns between large payloads is one per thread, shared by
   every decoder of that thread: idle connections hold none. Nothing keeps a view of it past
   ``buffer_updated`` (frames are copied out before any handler runs).
7. A thread keeps up to ``KEPT_BYTES`` of large-payload buffers (each at most
   ``KEPT_LARGEST``) to reuse once nothing refers to them: a fixed amount, whatever peers
   declare; a buffer still viewed anywhere is never reused.
"""

from __future__ import annotations

import mmap
import struct
import sys
import threading

from typing_extensions import Buffer

from ..errors import PayloadTooLarge, RemoteProtocolError
from ._wire import MAX_HEADER_BYTES

__all__ = [
    "LARGE_PAYLOAD",
    "PREFIX_SIZE",
    "READ_SIZE",
    "FrameDecoder",
    "PendingBudget",
    "frame_prefix",
]

_PREFIX = struct.Struct("<II")
PREFIX_SIZE = _PREFIX.size

#: Payloads of at least this many bytes that span reads get a buffer of their own (smaller ones
#: are reassembled by copying, which costs less than mapping memory for them).
LARGE_PAYLOAD = 64 * 1024
#: Bytes of the shared read buffer: one ``recv_into`` takes at most this much between large
#: payloads (what uvloop reads at once for a plain Protocol).
READ_SIZE = 256 * 1024

#: Large-payload buffers a thread keeps for reuse, in bytes (rule 7), and the largest kept.
KEPT_BYTES = 8 * 1024 * 1024
KEPT_LARGEST = 4 * 1024 * 1024

_local = threading.local()


def _read_buffer() -> memoryview:
    """This thread's read buffer (rule 6)."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(READ_SIZE))
    return view


class _PayloadBuffers:
    """Large-payload buffers of one thread, reused once nothing refers to them (rule 7).

    A fresh mapping costs a page fault per 4 KiB written (measured: 1 MiB into a fresh mapping
    ~480 µs, into one already touched ~50 µs), so the few that fit ``KEPT_BYTES`` are kept and
    handed out again once no view of them is left anywhere (the application dropped its
    message, the transport wrote it): every view holds a reference to its mapping, so the
    reference count says so exactly."""

    __slots__ = ("_kept", "_kept_bytes")

    def __init__(self) -> None:
        self._kept: list[mmap.mmap] = []
        self._kept_bytes = 0

    def take(self, size: int) -> memoryview:
        """A writable buffer of exactly ``size`` bytes."""
        best: mmap.mmap | None = None
        for kept in self._kept:
            # 3: the list, this loop's name, getrefcount's argument: no view of it exists.
            free = sys.getrefcount(kept) == 3
            if free and size <= len(kept) and (best is None or len(kept) < len(best)):
                best = kept
        if best is None:
            # MAP_PRIVATE: pages are committed as they are written (and not counted as shared).
            best = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
            if size <= KEPT_LARGEST and self._kept_bytes + size <= KEPT_BYTES:
                self._kept.append(best)
                self._kept_bytes += size
        return memoryview(best)[:size]


def _payload_buffers() -> _PayloadBuffers:
    buffers: _PayloadBuffers | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = _PayloadBuffers()
    return buffers


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
        #: Bytes charged to the budget (what was held after the last feed).
        self._charged = 0
        #: Every byte ever fed (a driver compares it over time to spot a stalled frame).
        self.received = 0
        #: Bytes of a frame that began in an earlier read (small frames, or a prefix/header).
        self._buf = bytearray()
        # Size of the frame being assembled, once its prefix has been read.
        self._need_header = -1
        self._need_payload = -1
        # A large payload being read into its own buffer: the header, the buffer, and how
        # many of its bytes have arrived.
        self._big_header = b""
        self._big: memoryview | None = None
        self._big_filled = 0
        # Taken once: a decoder is read in the thread that made it (the thread of its link's
        # event loop), like the link itself.
        self._scratch = _read_buffer()
        self._buffers = _payload_buffers()

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf) + self._big_filled

    @property
    def partial(self) -> bool:
        """Whether a frame has begun and not ended."""
        return bool(self._buf) or self._big is not None or self._need_header >= 0

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
        self._big = None
        self._big_header = b""
        self._big_filled = 0
        if self._budget is not None and self._charged:
            self._budget.give(self._charged)
        self._charged = 0

    # -- reading into the decoder (asyncio.BufferedProtocol) -----------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next read should go: the rest of a large payload, or the read buffer.
        Valid until ``buffer_updated``. (``sizehint`` is asyncio's, and unused: a large
        payload's rest is read whole, anything else at most ``READ_SIZE`` at a time.)"""
        big = self._big
        if big is not None:
            return big[self._big_filled :]
        return self._scratch

    def buffer_updated(self, n: int) -> list[tuple[bytes, memoryview]]:
        """``n`` bytes were written at the start of ``get_buffer()``'s buffer; return every
        frame now complete, in order. Raises as ``feed`` does."""
        self.received += n
        big = self._big
        if big is not None:
            self._big_filled += n
            frames: list[tuple[bytes, memoryview]] = []
            if self._big_filled == len(big):
                frames.append(self._big_done(big))
        elif self._buf or self._need_header >= 0:
            # A frame began in an earlier read (perhaps only its prefix, which left nothing
            # held): these bytes continue it.
            frames = self._feed(self._scratch[:n])
        else:
            # Nothing held before these bytes: the frames that arrived whole leave in one
            # ``bytes`` copy of them; the start of a large payload goes from the read buffer
            # straight into that payload's own buffer (_feed, on the rest).
            scratch = self._scratch
            if n <= LARGE_PAYLOAD:
                # Too short to hold a large payload's first piece worth not copying twice:
                # skip the look for where the whole frames end (most reads, on most hops).
                frames = self._feed(scratch[:n].tobytes())
                if self._budget is not None:
                    self._charge()
                return frames
            pos = 0
            while n - pos >= PREFIX_SIZE:
                header_len, payload_len = _PREFIX.unpack_from(scratch, pos)
                end = pos + PREFIX_SIZE + header_len + payload_len
                if end > n:
                    break
                pos = end  # lengths are checked by _feed
            if pos == n:
                frames = self._feed(scratch[:n].tobytes())
            else:
                frames = self._feed(scratch[:pos].tobytes()) if pos else []
                frames += self._feed(scratch[pos:n])
        if self._budget is not None:
            self._charge()
        return frames

    # -- feeding received bytes ----------------------------------------------------------

    def feed(self, data: Buffer) -> list[tuple[bytes, memoryview]]:
        """Add received bytes; return every frame now complete, in order.

        Raises:
            PayloadTooLarge: a prefix declares more than ``max_payload``.
            RemoteProtocolError: a bad header length, or the budget cannot hold the rest.
        """
        view = memoryview(data)
        self.received += view.nbytes
        frames: list[tuple[bytes, memoryview]] = []
        big = self._big
        if big is not None:
            take = min(len(big) - self._big_filled, view.nbytes)
            big[self._big_filled : self._big_filled + take] = view[:take]
            self._big_filled += take
            if self._big_filled == len(big):
                frames.append(self._big_done(big))
            data = view[take:]
        if len(data):  # type: ignore[arg-type]  # byte-format buffers
            frames += self._feed(data)
        if self._budget is not None:
            self._charge()
        return frames

    def _charge(self) -> None:
        held = len(self._buf) + self._big_filled
        if held != self._charged and self._budget is not None:
            if held > self._charged and not self._budget.take(held - self._charged):
                raise RemoteProtocolError(
                    f"the node holds {self._budget.used} bytes of partial frames already "
                    f"(limit {self._budget.limit}); refusing {held - self._charged} more"
                )
            if held < self._charged:
                self._budget.give(self._charged - held)
            self._charged = held

    def _big_done(self, big: memoryview) -> tuple[bytes, memoryview]:
        # Read-only, like every other payload view (and so hashable, and not for writing).
        frame = (self._big_header, big.toreadonly())
        self._big = None
        self._big_header = b""
        self._big_filled = 0
        return frame

    def _feed(self, data: Buffer) -> list[tuple[bytes, memoryview]]:
        # Views of ``data`` may be handed on only when it is immutable bytes nobody reuses.
        if self._buf:
            self._buf += data
            src: Buffer = self._buf
            owned = False
        else:
            src = data
            owned = type(data) is bytes
        frames: list[tuple[bytes, memoryview]] = []
        view = memoryview(src)
        pos = 0
        end = view.nbytes
        while True:
            if self._need_header < 0:
                if end - pos < PREFIX_SIZE:
                    break
                header_len, payload_len = _PREFIX.unpack_from(view, pos)
                if header_len == 0 or header_len > MAX_HEADER_BYTES:
                    raise RemoteProtocolError(f"frame header length {header_len} out of range")
                if payload_len > self._max_payload:
                    raise PayloadTooLarge(size=payload_len, limit=self._max_payload)
                self._need_header, self._need_payload = header_len, payload_len
                pos += PREFIX_SIZE
            total = self._need_header + self._need_payload
            if end - pos < total:
                if self._need_payload >= LARGE_PAYLOAD and end - pos >= self._need_header:
                    pos = self._begin_big(view, pos, end)
                break
            start = pos + self._need_header
            header = bytes(view[pos:start])
            payload = view[start : start + self._need_payload]
            if not owned:
                # The source is reused (a bytearray compacted below, the read buffer): the
                # payload needs its own bytes.
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

    def _begin_big(self, view: memoryview, pos: int, end: int) -> int:
        """The header of a large frame is here and its payload is not all here: give the
        payload its own buffer (rule 1) and copy what came of it. Returns ``end``."""
        start = pos + self._need_header
        self._big_header = bytes(view[pos:start])
        size = self._need_payload
        big = self._buffers.take(size)
        have = end - start
        big[:have] = view[start:end]
        self._big = big
        self._big_filled = have
        self._need_header = self._need_payload = -1
        return end
