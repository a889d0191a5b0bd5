"""Frames over ZeroMQ: DEALER on the agent side, ROUTER on the node side.

ZeroMQ keeps frame boundaries, so a message is a multipart ``[header, payload]`` (the ROUTER
prefixes the peer identity). Payload frames are received with ``copy=False`` and handed on as
memoryviews of the zmq frame, so a node forwards them without touching the bytes.

Flow control is truthful on both ends (docs/limits.md): every send is non-blocking; what
ZeroMQ will not take because its pipe to the peer is at the high-water mark waits in an
``_Outbox`` of ours, in order, and ``buffered()`` is the bytes held there. So a node sees a
stopped agent on ``tcp://`` exactly as on the Unix socket (and drops, counts and tells), and
an agent's ``drain()`` waits for a slow node. The ROUTER is ``ROUTER_MANDATORY``: it never
drops a frame on its own.

zmq errors never leave this module: they become ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable, Sequence

import zmq
import zmq.asyncio
from typing_extensions import Buffer

from ..errors import ConnectionLost
from ._base import Link, LinkHandler, settle

__all__ = ["ZmqDealerLink", "ZmqRouterListener", "open_zmq_link"]

#: Messages ZeroMQ queues per peer before refusing more (then our outbox takes them).
_HWM = 1_000
#: Seconds between attempts to hand an outbox to ZeroMQ again (it has no per-peer
#: "writable" event on a ROUTER).
_RETRY_S = 0.002
#: An agent's ``drain()`` returns once its outbox is under this.
_DRAIN_LOW = 1024 * 1024
#: How long the refused-port probe of open_zmq_link may take (loopback answers in µs).
_PROBE_TIMEOUT = 1.0


def _frame_bytes(frame: zmq.Frame) -> memoryview:
    return frame.buffer  # type: ignore[no-any-return]


def _try_send(sock: zmq.asyncio.Socket, frames: Sequence[Buffer]) -> bool:
    """Hand one message to ZeroMQ without waiting: True when taken, False at the high-water
    mark (or, on a ROUTER, while the peer is not connected).

    Raises:
        zmq.ZMQError: anything else (the socket is closed).
    """
    copy = len(frames[-1]) < 65536  # type: ignore[arg-type]
    done: asyncio.Future[object] = sock.send_multipart(  # type: ignore[assignment]
        frames, flags=zmq.DONTWAIT, copy=copy  # type: ignore[arg-type]
    )
    exc = done.exception()  # resolved at once: nothing else ever waits on this socket
    if exc is None:
        return True
    if isinstance(exc, zmq.Again) or (
        isinstance(exc, zmq.ZMQError) and exc.errno == zmq.EHOSTUNREACH
    ):
        return False
    raise exc


def _size(frames: tuple[Buffer, ...]) -> int:
    return sum(memoryview(f).nbytes for f in frames)


class _Outbox:
    """Messages ZeroMQ did not take yet, oldest first, and their size in bytes."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: deque[tuple[Buffer, ...]] = deque()
        self.size = 0

    def push(self, frames: tuple[Buffer, ...]) -> None:
        self.frames.append(frames)
        self.size += _size(frames)

    def pump(self, sock: zmq.asyncio.Socket) -> None:
        """Hand over what ZeroMQ takes now, in order.

        Raises:
            zmq.ZMQError: the socket failed.
        """
        frames = self.frames
        while frames:
            if not _try_send(sock, frames[0]):
                return
            self.size -= _size(frames.popleft())

    def clear(self) -> None:
        self.frames.clear()
        self.size = 0


class ZmqDealerLink(Link):
    """The agent's end of a ZeroMQ link to a node."""

    transport = "tcp"

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, handler: LinkHandler) -> None:
        self.handler = handler
        self._endpoint = endpoint
        self._sock = ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, _HWM)
        self._sock.setsockopt(zmq.RCVHWM, _HWM)
        # Queue nothing for a peer that is not connected yet: sends fail fast instead.
        self._sock.setsockopt(zmq.IMMEDIATE, 1)
        self._sock.setsockopt(zmq.IDENTITY, os.urandom(12))
        self._sock.connect(endpoint)
        self._closed = False
        self._outbox = _Outbox()
        self._retry: asyncio.TimerHandle | None = None
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        exc: BaseException | None = None
        try:
            while True:
                frames = await self._sock.recv_multipart(copy=False)
                if len(frames) != 2:
                    continue  # not ours; a DEALER only ever hears from the node it dialled
                if self.handler is not None:
                    self.handler.frame_received(frames[0].bytes, _frame_bytes(frames[1]))
        except asyncio.CancelledError:
            pass
        except zmq.ZMQError as err:
            exc = ConnectionLost(f"zmq link to {self._endpoint} failed: {err}")
        self._lose(exc)

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        if self._closed:
            raise ConnectionLost(f"link to {self._endpoint} is closed")
        outbox = self._outbox
        try:
            if not outbox.frames and _try_send(self._sock, (header, payload)):
                return
        except zmq.ZMQError as err:
            raise ConnectionLost(f"zmq send to {self._endpoint} failed: {err}") from None
        outbox.push((header, payload))  # after what waits already: order is kept
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(_RETRY_S, self._pump)

    def _pump(self) -> None:
        self._retry = None
        if self._closed:
            return
        try:
            self._outbox.pump(self._sock)
        except zmq.ZMQError as err:
            self._lose(ConnectionLost(f"zmq send to {self._endpoint} failed: {err}"))
            return
        if self._outbox.size <= _DRAIN_LOW:
            waiters, self._drain_waiters = self._drain_waiters, []
            settle(waiters, None)
        if self._outbox.frames:
            self._retry = asyncio.get_running_loop().call_later(_RETRY_S, self._pump)

    def buffered(self) -> int:
        """Bytes ZeroMQ has not taken yet (its pipe to the node is full)."""
        return self._outbox.size

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionLost(f"link to {self._endpoint} is closed")
        if self._outbox.size <= _DRAIN_LOW:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self) -> None:
        if not self._closed:
            self._reader.cancel()
            self._lose(None)

    def _lose(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._outbox.clear()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        waiters, self._drain_waiters = self._drain_waiters, []
        settle(waiters, ConnectionLost(f"link to {self._endpoint} is closed"))
        with contextlib.suppress(zmq.ZMQError):
            self._sock.close(linger=0)
        if self.handler is not None:
            self.handler.link_lost(exc)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> str:
        return self._endpoint


async def open_zmq_link(endpoint: str, handler: LinkHandler) -> ZmqDealerLink:
    """Dial a node over ZeroMQ (``tcp://host:port``).

    ZeroMQ connects lazily; liveness is established by the handshake that follows. A closed
    port would only show as a handshake timeout, so one plain TCP connect first tells a
    refused connection at once.

    Raises:
        ConnectionLost: the port refused the connection, or the endpoint is invalid.
    """
    if await _refused(endpoint):
        raise ConnectionLost(
            f"connection refused: is a node running at {endpoint}? "
            f"(a node listens for agents with `fabric node --listen {endpoint}`)"
        )
    try:
        return ZmqDealerLink(zmq.asyncio.Context.instance(), endpoint, handler)
    except zmq.ZMQError as err:
        raise ConnectionLost(f"cannot dial {endpoint}: {err}") from None


async def _refused(endpoint: str) -> bool:
    """Whether nothing listens at a ``tcp://HOST:PORT`` endpoint (False when unsure)."""
    if not endpoint.startswith("tcp://"):
        return False
    host, _, port = endpoint[len("tcp://") :].rpartition(":")
    if not port.isdigit() or not host:
        return False
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), _PROBE_TIMEOUT
        )
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError):
        return False  # unreachable or filtered: let ZeroMQ's handshake decide
    writer.close()
    return False


class _RouterPeerLink(Link):
    """The node's view of one remote agent on the ROUTER socket."""

    transport = "tcp"

    def __init__(self, listener: ZmqRouterListener, identity: bytes) -> None:
        self._listener = listener
        self.identity = identity
        self._closed = False
        #: What ZeroMQ would not take for this agent yet (its pipe is full: it is slow).
        self.outbox = _Outbox()

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        if self._closed:
            raise ConnectionLost("link to agent is closed")
        self._listener.send(self, header, payload)

    def buffered(self) -> int:
        """Bytes for this agent that ZeroMQ has not taken yet."""
        return self.outbox.size

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionLost("link to agent is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.outbox.clear()
        self._listener.forget(self.identity)
        if self.handler is not None:
            self.handler.link_lost(None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> str:
        return f"zmq:{self.identity.hex()}"


class ZmqRouterListener:
    """A ROUTER socket: one ``Link`` per remote agent, created on its first frame."""

    def __init__(
        self, endpoint: str, on_link: Callable[[Link], None], *, max_message: int = -1
    ) -> None:
        ctx = zmq.asyncio.Context.instance()
        self._sock = ctx.socket(zmq.ROUTER)
        # libzmq drops a peer whose message part exceeds this before buffering it whole.
        self._sock.setsockopt(zmq.MAXMSGSIZE, max_message)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, _HWM)
        self._sock.setsockopt(zmq.RCVHWM, _HWM)
        # A reconnecting agent with the same identity takes over its old pipe.
        self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # Refuse (EAGAIN) rather than silently drop a frame for a peer that is full: the
        # frame goes to the peer's outbox, which the node's slow-consumer check sees.
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as err:
            self._sock.close(linger=0)
            raise ConnectionLost(f"cannot listen on {endpoint}: {err}") from None
        self.endpoint = bytes(self._sock.getsockopt(zmq.LAST_ENDPOINT)).decode()
        self._on_link = on_link
        self._peers: dict[bytes, _RouterPeerLink] = {}
        #: Peers whose outbox holds something, pumped every ``_RETRY_S`` until empty.
        self._backlogged: set[_RouterPeerLink] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, zmq.ZMQError):
            while True:
                frames = await self._sock.recv_multipart(copy=False)
                if len(frames) != 3:
                    continue  # malformed envelope: nothing to answer to
                identity = frames[0].bytes
                peer = self._peers.get(identity)
                if peer is None:
                    peer = self._peers[identity] = _RouterPeerLink(self, identity)
                    self._on_link(peer)
                if peer.handler is not None:
                    peer.handler.frame_received(frames[1].bytes, _frame_bytes(frames[2]))

    def send(self, peer: _RouterPeerLink, header: bytes, payload: Buffer) -> None:
        frames = (peer.identity, header, payload)
        outbox = peer.outbox
        try:
            if not outbox.frames and _try_send(self._sock, frames):
                return
        except zmq.ZMQError:
            return  # the socket is closing with the node
        outbox.push(frames)  # never dropped here: the node decides, by ``buffered()``
        self._backlogged.add(peer)
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(_RETRY_S, self._pump)

    def _pump(self) -> None:
        self._retry = None
        for peer in list(self._backlogged):
            try:
                peer.outbox.pump(self._sock)
            except zmq.ZMQError:
                return
            if not peer.outbox.frames:
                self._backlogged.discard(peer)
        if self._backlogged:
            self._retry = asyncio.get_running_loop().call_later(_RETRY_S, self._pump)

    def forget(self, identity: bytes) -> None:
        peer = self._peers.pop(identity, None)
        if peer is not None:
            self._backlogged.discard(peer)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._reader.cancel()
        for peer in list(self._peers.values()):
            peer.close()
        self._sock.close(linger=0)
