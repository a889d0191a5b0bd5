"""Frames over a stream socket (Unix domain): the lean local path between agents and node.

Measured against ZeroMQ ``ipc://`` on the same host, a plain Unix stream driven by uvloop's
protocol callbacks saves a poller hop and a task switch per message (docs/architecture.md).

The link is an ``asyncio.BufferedProtocol``: the event loop reads into the decoder's memory
(``recv_into``), so the rest of a large payload lands in the one buffer the application (or
the next hop) gets a view of (fabric/protocol/_framing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path
from typing import cast

from typing_extensions import Buffer

from ..errors import ConnectionLost, FabricError, RemoteProtocolError
from ..framing import FrameDecoder, PendingBudget
from ._base import Link, LinkHandler, settle
from ._batch import FrameBatch

__all__ = ["StreamLink", "open_unix_link"]

_UNIX_SNDBUF = 1 << 20


class StreamLink(asyncio.BufferedProtocol, Link):
    """An asyncio protocol that speaks length-prefixed frames."""

    transport = "unix"

    def __init__(
        self,
        max_payload: int,
        handler: LinkHandler | None = None,
        *,
        budget: PendingBudget | None = None,
        stall_timeout: float | None = None,
    ) -> None:
        self.handler = handler
        self._decoder = FrameDecoder(max_payload, budget)
        #: A partial frame that gets no new byte for this long closes the link (None: never).
        self._stall_timeout = stall_timeout
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stall_mark = 0
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._peer = "unix"
        self._poll_sock: socket.socket | None = None
        self._batch = FrameBatch()
        #: close() was called; connection_lost (and link_lost) follows from the loop.
        self._closing = False
        self._flush_scheduled = False
        self._vectored = False
        self._loop = asyncio.get_event_loop()
        # The loop asks the decoder where to read, with no call in between (once per read).
        self.get_buffer = self._decoder.get_buffer  # type: ignore[method-assign]

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        # uvloop (and asyncio from 3.12) write a list with one writev; 3.11's asyncio joins
        # it, which would copy a large payload, so there two writes are cheaper.
        self._vectored = type(transport).__module__.startswith("uvloop") or (
            sys.version_info >= (3, 12)
        )
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _UNIX_SNDBUF)
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = f"{self.transport}:{peer}"

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._decoder.get_buffer()  # replaced per instance in __init__

    def buffer_updated(self, nbytes: int) -> None:
        decoder = self._decoder
        try:
            frames = decoder.buffer_updated(nbytes)
        except FabricError as exc:
            # The stream is out of sync: no later byte can be trusted. Report and drop it.
            self._lose(exc)
            return
        # _deliver, inlined: this runs once per read on every hop.
        if self._stall_timer is None and self._stall_timeout is not None and decoder.partial:
            self._stall_mark = decoder.received
            self._stall_timer = self._loop.call_later(self._stall_timeout, self._check_stall)
        handler = self.handler
        if handler is None:
            return
        for header, payload in frames:
            if self._closed:
                return
            handler.frame_received(header, payload)

    def data_received(self, data: Buffer) -> None:
        """Bytes read by someone else (tests, a plain-Protocol caller)."""
        try:
            frames = self._decoder.feed(data)
        except FabricError as exc:
            self._lose(exc)
            return
        self._deliver(frames)

    def _deliver(self, frames: list[tuple[bytes, memoryview]]) -> None:
        decoder = self._decoder
        if self._stall_timer is None and self._stall_timeout is not None and decoder.partial:
            self._stall_mark = decoder.received
            self._stall_timer = self._loop.call_later(self._stall_timeout, self._check_stall)
        handler = self.handler
        if handler is None:
            return
        for header, payload in frames:
            if self._closed:
                return
            handler.frame_received(header, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(exc)

    def _check_stall(self) -> None:
        """A frame is partial: close the link if no byte came during a whole interval."""
        self._stall_timer = None
        decoder = self._decoder
        if self._closed or not decoder.partial or self._stall_timeout is None:
            return
        if decoder.received == self._stall_mark:
            self._lose(
                RemoteProtocolError(
                    f"a partial frame got no byte for {self._stall_timeout:g}s "
                    f"({decoder.buffered} bytes held)"
                )
            )
            return
        self._stall_mark = decoder.received
        self._stall_timer = self._loop.call_later(self._stall_timeout, self._check_stall)

    def set_max_payload(self, max_payload: int) -> None:
        """Raise (or lower) the largest frame accepted from now on (after a handshake)."""
        self._decoder.set_max_payload(max_payload)

    def pause_reading(self) -> None:
        """Stop delivering frames until ``resume_reading``: the kernel's buffers fill and the
        sender meets backpressure (what a stopped process does)."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drainers(None)

    # -- Link ---------------------------------------------------------------------------

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        transport = self._transport
        if self._closed or self._closing or transport is None:
            raise ConnectionLost("link to peer is closed")
        now = self._batch.add(header, payload)
        if now is None:
            # Frames sent in one loop iteration leave in one write (fabric/transports/_batch.py).
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
            return
        joined = self._batch.take()
        if not len(now):  # type: ignore[arg-type]
            transport.write(joined)
        elif self._vectored:
            # A large payload leaves with what was gathered, by reference, in one writev (the
            # transport keeps what the kernel did not take).
            transport.writelines([joined, now])  # type: ignore[list-item]
        else:
            transport.write(joined)
            transport.write(now)  # type: ignore[arg-type]

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._batch:
            data = self._batch.take()  # taken even when closed: nothing is held for nobody
            if self._transport is not None and not self._closed:
                self._transport.write(data)

    def flush_now(self) -> None:
        """Write what is queued at once, instead of at the end of this loop iteration (before
        busy-polling for a reply, which would otherwise wait for a write never made)."""
        self._flush()

    def poll(self) -> bool:
        """Read what the kernel holds for this link now, without waiting; frames are handled
        as if the event loop had delivered them. For latency mode, which busy-polls for a
        reply instead of paying a wake-up. Returns whether anything was read."""
        sock = self._poll_sock
        if sock is None:
            if self._transport is None or self._closed:
                return False
            # A second descriptor on the same socket: the transport's own object refuses
            # recv(), and reading through a dup is invisible to the event loop.
            fd = self._transport.get_extra_info("socket").fileno()
            sock = self._poll_sock = socket.socket(fileno=os.dup(fd))
        try:
            n = sock.recv_into(self._decoder.get_buffer(), 0, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False
        if not n:
            return False  # EOF: the event loop reports it through connection_lost
        self.buffer_updated(n)
        return True

    def buffered(self) -> int:
        """Bytes sent and not yet taken by the kernel: the transport's buffer and the frames
        of this loop iteration that are still to be written."""
        if self._transport is None:
            return self._batch.size
        return self._transport.get_write_buffer_size() + self._batch.size

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionLost("link to peer is closed")
        if not self._paused:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._flush()  # what was sent before close() still goes out
            self._closing = True
            self._transport.close()
        else:
            self._lose(None)

    def abort(self) -> None:
        """Drop the connection at once, discarding anything unsent."""
        if self._transport is not None:
            self._transport.abort()

    @property
    def closed(self) -> bool:
        return self._closed or self._closing

    @property
    def peer(self) -> str:
        return self._peer

    # -- internals ----------------------------------------------------------------------

    def _lose(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        # Give the partial frame's bytes back now: the link and its owner may form a cycle
        # that only a full garbage collection would free.
        self._decoder.reset()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._poll_sock is not None:
            self._poll_sock.close()
            self._poll_sock = None
        if self._transport is not None:
            if exc is not None:
                self._transport.abort()
            else:
                self._transport.close()
        self._wake_drainers(ConnectionLost("link to peer is closed"))
        if self.handler is not None:
            self.handler.link_lost(exc)

    def _wake_drainers(self, exc: BaseException | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        settle(waiters, exc)


async def open_unix_link(path: str | Path, max_payload: int, handler: LinkHandler) -> StreamLink:
    """Connect to a Unix socket: a path, or ``@name`` in the abstract namespace.

    Raises:
        ConnectionLost: when nothing listens at ``path``.
    """
    loop = asyncio.get_running_loop()
    address = str(path)
    try:
        if address.startswith("@"):
            # Linux abstract namespace: no file, no 108-byte path limit, gone with its owner.
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, "\0" + address[1:])
            except OSError:
                sock.close()
                raise
            _, link = await loop.create_unix_connection(
                lambda: StreamLink(max_payload, handler), sock=sock
            )
        else:
            _, link = await loop.create_unix_connection(
                lambda: StreamLink(max_payload, handler), address
            )
    except OSError as exc:
        raise ConnectionLost(
            f"cannot reach node at unix://{path}: {exc.strerror or exc}; is a node running "
            "there? start one with `fabric node`, or point FABRIC_URL / --url at yours"
        ) from None
    return link
