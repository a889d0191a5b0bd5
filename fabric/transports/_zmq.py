"""Frames over ZeroMQ: DEALER on the agent side, ROUTER on the node side.

ZeroMQ keeps frame boundaries, so a message is a multipart ``[header, payload]`` (the ROUTER
prefixes the peer identity). Payload frames are received with ``copy=False`` and handed on as
memoryviews of the zmq frame, so a node forwards them without touching the bytes.

zmq errors never leave this module: they become ``ConnectionLost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

import zmq
import zmq.asyncio
from typing_extensions import Buffer

from ..errors import ConnectionLost
from ._base import Link, LinkHandler

__all__ = ["ZmqDealerLink", "ZmqRouterListener", "open_zmq_link"]

_HWM = 10_000


def _frame_bytes(frame: zmq.Frame) -> memoryview:
    return frame.buffer  # type: ignore[no-any-return]


class ZmqDealerLink(Link):
    """The agent's end of a ZeroMQ link to a node."""

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
        try:
            self._sock.send_multipart((header, payload), copy=len(payload) < 65536)  # type: ignore[arg-type]
        except zmq.ZMQError as err:
            raise ConnectionLost(f"zmq send to {self._endpoint} failed: {err}") from None

    def buffered(self) -> int:
        return 0  # zmq queues internally, bounded by the high-water mark

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionLost(f"link to {self._endpoint} is closed")

    def close(self) -> None:
        if not self._closed:
            self._reader.cancel()
            self._lose(None)

    def _lose(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
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

    ZeroMQ connects lazily; liveness is established by the handshake that follows.
    """
    try:
        return ZmqDealerLink(zmq.asyncio.Context.instance(), endpoint, handler)
    except zmq.ZMQError as err:
        raise ConnectionLost(f"cannot dial {endpoint}: {err}") from None


class _RouterPeerLink(Link):
    """The node's view of one remote agent on the ROUTER socket."""

    def __init__(self, listener: ZmqRouterListener, identity: bytes) -> None:
        self._listener = listener
        self.identity = identity
        self._closed = False

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        if self._closed:
            raise ConnectionLost("link to agent is closed")
        self._listener.send(self.identity, header, payload)

    def buffered(self) -> int:
        return 0

    async def drain(self) -> None:
        if self._closed:
            raise ConnectionLost("link to agent is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as err:
            self._sock.close(linger=0)
            raise ConnectionLost(f"cannot listen on {endpoint}: {err}") from None
        self.endpoint = bytes(self._sock.getsockopt(zmq.LAST_ENDPOINT)).decode()
        self._on_link = on_link
        self._peers: dict[bytes, _RouterPeerLink] = {}
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

    def send(self, identity: bytes, header: bytes, payload: Buffer) -> None:
        # ROUTER drops frames for a peer past its high-water mark instead of blocking the node.
        with contextlib.suppress(zmq.ZMQError):
            self._sock.send_multipart((identity, header, payload), copy=len(payload) < 65536)  # type: ignore[arg-type]

    def forget(self, identity: bytes) -> None:
        self._peers.pop(identity, None)

    def close(self) -> None:
        self._reader.cancel()
        for peer in list(self._peers.values()):
            peer.close()
        self._sock.close(linger=0)
