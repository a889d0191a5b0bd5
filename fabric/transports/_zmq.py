"""Frames over ZeroMQ: the one ZeroMQ driver, for agents and for the mesh alike.

A DEALER dials (an agent to its node, a node to a peer); a ROUTER listens and hands out one
``Link`` per remote identity. ZeroMQ keeps frame boundaries, so a message is a multipart
``[header, payload]`` (the ROUTER prefixes the peer identity). Payload frames are received
with ``copy=False`` and handed on as memoryviews of the zmq frame, so a node forwards them
without touching the bytes.

The sockets are plain (not ``zmq.asyncio``) and driven by the event loop's reader callback on
``ZMQ_FD``: one callback drains every queued message with NOBLOCK receives, so a burst costs no
future or task per message (measured: the asyncio wrapper cost about a third of a cross-node
round trip). ``ZMQ_FD`` is edge-triggered and any send may consume an edge, so after each send
the socket's EVENTS are checked and a drain is scheduled if input is waiting.

Flow control is truthful (docs/limits.md): every send is non-blocking; what ZeroMQ will not
take because its pipe to the peer is at the high-water mark (or, on a DEALER, because it is
not connected yet) waits in an ``_Outbox`` of ours, in order, and ``buffered()`` is the bytes
held there. So a node sees a stopped agent on ``tcp://`` exactly as on the Unix socket (and
drops, counts and tells), an agent's ``drain()`` waits for a slow node, and a peer link's
``try_send`` refuses past its limit. At most ``HWM`` messages more sit inside libzmq, where
no byte count can be had. The ROUTER is ``ROUTER_MANDATORY``: it never drops a frame on its own.

ZeroMQ shows no per-peer close: the end that closes sees ``link_lost``; the other learns it
from heartbeats (the protocol's liveness rules), not from the link.

zmq errors never leave this module: they become ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable

import zmq
from typing_extensions import Buffer

from ..errors import ConnectionLost
from ._base import Link, LinkHandler, settle

__all__ = [
    "HWM",
    "ZmqDealerLink",
    "ZmqPeerLink",
    "ZmqRouterListener",
    "dial_zmq",
    "open_zmq_link",
]

log = logging.getLogger("fabric.transports")

#: Messages ZeroMQ queues per peer before refusing more (then our outbox takes them).
HWM = 1_000
#: Seconds between attempts to hand an outbox to ZeroMQ again, besides the socket's own
#: events (which wake the driver when a pipe takes messages again); doubled up to
#: ``_RETRY_MAX_S`` while nothing moves, so a dialer waiting for its peer does not spin.
_RETRY_S = 0.002
_RETRY_MAX_S = 0.05
#: A dialer's ``drain()`` returns once its outbox is under this.
_DRAIN_LOW = 1024 * 1024
#: Payloads at least this large are handed to ZeroMQ by reference, smaller ones copied.
_COPY_LIMIT = 65536
#: Messages handled per reader callback before yielding to the loop (fairness).
_BATCH = 256
#: How long the refused-port probe of open_zmq_link may take (loopback answers in µs).
_PROBE_TIMEOUT = 1.0

Configure = Callable[["zmq.Socket[bytes]"], None]

_context: zmq.Context[zmq.Socket[bytes]] | None = None


def _default_context() -> zmq.Context[zmq.Socket[bytes]]:
    """The agents' context (the mesh has its own, for its ZAP handler)."""
    global _context
    if _context is None or _context.closed:
        _context = zmq.Context()
    return _context


def _size(frames: tuple[Buffer, ...]) -> int:
    return sum(memoryview(f).nbytes for f in frames)


class _Outbox:
    """Messages ZeroMQ did not take yet for one destination, oldest first, and their bytes."""

    __slots__ = ("frames", "on_drained", "size")

    def __init__(self, on_drained: Callable[[], None] | None = None) -> None:
        self.frames: deque[tuple[Buffer, ...]] = deque()
        self.size = 0
        #: Called after a pump made progress (a dialer wakes its drain() waiters).
        self.on_drained = on_drained

    def push(self, frames: tuple[Buffer, ...]) -> None:
        self.frames.append(frames)
        self.size += _size(frames)

    def clear(self) -> None:
        self.frames.clear()
        self.size = 0


class _Driver:
    """One plain zmq socket: read by the loop's reader on ``ZMQ_FD``, written with NOBLOCK,
    refused messages queued per destination in an ``_Outbox`` and pumped in order."""

    def __init__(
        self, sock: zmq.Socket[bytes], parts: int, dispatch: Callable[[list[zmq.Frame]], None]
    ) -> None:
        self.sock = sock
        self._parts = parts
        self._dispatch = dispatch
        self._loop = asyncio.get_running_loop()
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]
        self.closed = False
        self.paused = False
        self._pending = False
        #: Outboxes that hold something (a dict as an ordered set: fair, oldest first).
        self._backlogged: dict[_Outbox, None] = {}
        self._retry: asyncio.TimerHandle | None = None
        self._retry_s = _RETRY_S
        self._loop.add_reader(self._fd, self._ready)
        self._loop.call_soon(self._ready)  # input may already be waiting

    # -- reading ------------------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop taking messages in: ZeroMQ's receive pipe fills to its high-water mark, then
        TCP pushes back on the sender (what a stopped process does)."""
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False
        self._kick()

    def _ready(self) -> None:
        self._pending = False
        if self.closed:
            return
        sock = self.sock
        try:
            events: int = sock.getsockopt(zmq.EVENTS)  # type: ignore[assignment]
            if self._backlogged and events & zmq.POLLOUT:
                self._pump()
            for _ in range(_BATCH):
                if not events & zmq.POLLIN or self.paused:
                    return
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                if len(frames) == self._parts:
                    try:
                        self._dispatch(frames)
                    except Exception:  # one bad frame must not stop the link
                        log.exception("zmq: frame handling failed")
                    if self.closed:
                        return
                events = sock.getsockopt(zmq.EVENTS)  # type: ignore[assignment]
        except zmq.ZMQError:
            return
        self._kick()  # batch exhausted with input left: continue on the next loop turn

    def _kick(self) -> None:
        if not self._pending and not self.closed:
            self._pending = True
            self._loop.call_soon(self._ready)

    # -- writing ------------------------------------------------------------------------

    def _try(self, frames: tuple[Buffer, ...]) -> bool:
        """Hand one message to ZeroMQ now: True when taken, False at the high-water mark or
        while the destination is not connected.

        Raises:
            zmq.ZMQError: anything else (the socket is closed).
        """
        copy = memoryview(frames[-1]).nbytes < _COPY_LIMIT
        try:
            self.sock.send_multipart(frames, zmq.NOBLOCK, copy=copy)  # type: ignore[arg-type]
        except zmq.Again:
            return False
        except zmq.ZMQError as err:
            if err.errno == zmq.EHOSTUNREACH:
                return False  # ROUTER_MANDATORY: that identity is not connected (yet)
            raise
        return True

    def send(self, outbox: _Outbox, frames: tuple[Buffer, ...]) -> None:
        """Send at once, or queue behind what ``outbox`` already holds (order is kept).

        Raises:
            zmq.ZMQError: the socket failed.
        """
        if not outbox.frames and self._try(frames):
            try:
                if self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:  # type: ignore[operator,arg-type]
                    self._kick()  # the send may have eaten the FD's edge
            except zmq.ZMQError:
                pass
            return
        outbox.push(frames)
        self._backlogged[outbox] = None
        if self._retry is None:
            self._retry_s = _RETRY_S
            self._retry = self._loop.call_later(_RETRY_S, self._retry_pump)

    def discard(self, outbox: _Outbox) -> None:
        """Forget an outbox whose destination is gone."""
        outbox.clear()
        self._backlogged.pop(outbox, None)

    def _retry_pump(self) -> None:
        self._retry = None
        if self.closed:
            return
        try:
            moved = self._pump()
        except zmq.ZMQError:
            return
        if self._backlogged and self._retry is None:
            self._retry_s = _RETRY_S if moved else min(2 * self._retry_s, _RETRY_MAX_S)
            self._retry = self._loop.call_later(self._retry_s, self._retry_pump)
        self._kick()  # pumping touched the socket: input may be waiting behind a lost edge

    def _pump(self) -> bool:
        """Hand every outbox's messages to ZeroMQ while it takes them, in order; returns
        whether any message moved."""
        any_moved = False
        for outbox in list(self._backlogged):
            frames = outbox.frames
            moved = False
            while frames:
                if not self._try(frames[0]):
                    break
                outbox.size -= _size(frames.popleft())
                moved = True
            if not frames:
                self._backlogged.pop(outbox, None)
            if moved:
                any_moved = True
                if outbox.on_drained is not None:
                    outbox.on_drained()
        return any_moved

    def close(self, linger_ms: int = 0) -> None:
        if self.closed:
            return
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for outbox in self._backlogged:
            outbox.clear()
        self._backlogged.clear()
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        with contextlib.suppress(zmq.ZMQError):
            self.sock.close(linger=linger_ms)


def _tune(sock: zmq.Socket[bytes]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)


class ZmqDealerLink(Link):
    """A dialled ZeroMQ link (DEALER): an agent's to its node, or a node's to a peer."""

    transport = "tcp"

    def __init__(self, sock: zmq.Socket[bytes], endpoint: str, handler: LinkHandler | None) -> None:
        self.handler = handler
        self._endpoint = endpoint
        self._closed = False
        self._outbox = _Outbox(self._drained)
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._driver = _Driver(sock, 2, self._dispatch)

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        if self.handler is not None:
            self.handler.frame_received(frames[0].bytes, frames[1].buffer)

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        if self._closed:
            raise ConnectionLost(f"link to {self._endpoint} is closed")
        try:
            self._driver.send(self._outbox, (header, payload))
        except zmq.ZMQError as err:
            exc = ConnectionLost(f"zmq send to {self._endpoint} failed: {err}")
            self._lose(exc)
            raise exc from None

    def pause_reading(self) -> None:
        """Stop delivering frames until ``resume_reading`` (the sender meets backpressure)."""
        self._driver.pause_reading()

    def resume_reading(self) -> None:
        self._driver.resume_reading()

    def _drained(self) -> None:
        if self._outbox.size <= _DRAIN_LOW:
            waiters, self._drain_waiters = self._drain_waiters, []
            settle(waiters, None)

    def buffered(self) -> int:
        """Bytes ZeroMQ has not taken yet (its pipe to the other end is full)."""
        return self._outbox.size

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionLost(f"link to {self._endpoint} is closed")
        if self._outbox.size <= _DRAIN_LOW:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiters.append(waiter)
        await waiter

    def close(self, *, linger_ms: int = 0) -> None:
        """Close; with ``linger_ms``, what ZeroMQ already took still goes out for that long
        (in libzmq's I/O thread: this returns at once)."""
        self._lose(None, linger_ms)

    def _lose(self, exc: BaseException | None, linger_ms: int = 0) -> None:
        if self._closed:
            return
        self._closed = True
        self._driver.close(linger_ms)
        waiters, self._drain_waiters = self._drain_waiters, []
        settle(waiters, ConnectionLost(f"link to {self._endpoint} is closed"))
        if self.handler is not None:
            self.handler.link_lost(exc)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> str:
        return self._endpoint


def dial_zmq(
    endpoint: str,
    handler: LinkHandler | None = None,
    *,
    context: zmq.Context[zmq.Socket[bytes]] | None = None,
    configure: Configure | None = None,
) -> ZmqDealerLink:
    """A DEALER link to ``endpoint``; ZeroMQ connects (and reconnects) in the background.

    ``configure`` sets further options before connecting (the mesh's CURVE keys).

    Raises:
        ConnectionLost: the endpoint is invalid or ``configure`` refused.
    """
    sock = (context or _default_context()).socket(zmq.DEALER)
    try:
        _tune(sock)
        # Queue nothing inside ZeroMQ for a peer that is not connected: it waits in our
        # outbox, where ``buffered()`` sees it.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        sock.setsockopt(zmq.IDENTITY, os.urandom(12))
        if configure is not None:
            configure(sock)
        sock.connect(endpoint)
    except (zmq.ZMQError, ConnectionLost) as err:
        sock.close(linger=0)
        if isinstance(err, ConnectionLost):
            raise
        raise ConnectionLost(f"cannot dial {endpoint}: {err}") from None
    return ZmqDealerLink(sock, endpoint, handler)


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
    return dial_zmq(endpoint, handler)


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


class ZmqPeerLink(Link):
    """One remote identity on a ROUTER (an agent at its node, or a peer's dialled link)."""

    transport = "tcp"

    def __init__(self, listener: ZmqRouterListener, identity: bytes) -> None:
        self._listener = listener
        self.identity = identity
        self._closed = False
        #: What ZeroMQ would not take for this identity yet (its pipe is full: it is slow).
        self.outbox = _Outbox()

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        if self._closed:
            raise ConnectionLost(f"link to {self.peer} is closed")
        self._listener.send(self, header, payload)

    def buffered(self) -> int:
        """Bytes for this identity that ZeroMQ has not taken yet."""
        return self.outbox.size

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionLost(f"link to {self.peer} is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._listener.forget(self)
        if self.handler is not None:
            self.handler.link_lost(None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def peer(self) -> str:
        return f"zmq:{self.identity.hex()}"


class ZmqRouterListener:
    """A ROUTER socket: one ``ZmqPeerLink`` per remote identity, made on its first frame
    (``on_link`` is called before that frame reaches the link's handler)."""

    def __init__(
        self,
        endpoint: str,
        on_link: Callable[[ZmqPeerLink], None],
        *,
        max_message: int = -1,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        configure: Configure | None = None,
    ) -> None:
        sock = (context or _default_context()).socket(zmq.ROUTER)
        try:
            _tune(sock)
            # libzmq drops a peer whose message part exceeds this before buffering it whole.
            sock.setsockopt(zmq.MAXMSGSIZE, max_message)
            # A reconnecting dialer with the same identity takes over its old pipe.
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            # Refuse (EHOSTUNREACH/EAGAIN) rather than silently drop a frame for a peer that
            # is full or gone: it goes to that peer's outbox, which ``buffered()`` reports.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            if configure is not None:
                configure(sock)
            sock.bind(endpoint)
        except zmq.ZMQError as err:
            sock.close(linger=0)
            raise ConnectionLost(f"cannot listen on {endpoint}: {err}") from None
        self.endpoint = bytes(sock.getsockopt(zmq.LAST_ENDPOINT)).decode()  # type: ignore[arg-type]
        self._on_link = on_link
        self._peers: dict[bytes, ZmqPeerLink] = {}
        self._driver = _Driver(sock, 3, self._dispatch)

    def _dispatch(self, frames: list[zmq.Frame]) -> None:
        identity = frames[0].bytes
        peer = self._peers.get(identity)
        if peer is None:
            peer = self._peers[identity] = ZmqPeerLink(self, identity)
            self._on_link(peer)
        if peer.handler is not None and not peer.closed:
            peer.handler.frame_received(frames[1].bytes, frames[2].buffer)

    def send(self, peer: ZmqPeerLink, header: bytes, payload: Buffer) -> None:
        try:
            self._driver.send(peer.outbox, (peer.identity, header, payload))
        except zmq.ZMQError:
            pass  # the socket is closing with its owner; the owner's close follows

    def pause_reading(self) -> None:
        """Stop delivering frames from every identity until ``resume_reading``."""
        self._driver.pause_reading()

    def resume_reading(self) -> None:
        self._driver.resume_reading()

    def forget(self, peer: ZmqPeerLink) -> None:
        if self._peers.get(peer.identity) is peer:
            del self._peers[peer.identity]
        self._driver.discard(peer.outbox)

    def close(self) -> None:
        for peer in list(self._peers.values()):
            peer.close()
        self._driver.close()
