"""One factory per ``Link`` implementation, each making a connected pair over real sockets.

The conformance tests (test_conformance.py) take a ``LinkPair`` and never ask which transport
it is, except for what a transport documents it cannot do (``peer_sees_close``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from fabric.mesh._tcp import dial_tcp, listen_tcp
from fabric.transports import (
    Link,
    StreamLink,
    ZmqPeerLink,
    ZmqRouterListener,
    dial_zmq,
    open_unix_link,
)

MAX_PAYLOAD = 64 * 1024 * 1024


class Collector:
    """A LinkHandler that records frames and lets a test await them."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.lost_calls = 0
        self._changed = asyncio.Event()

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self.frames.append((header, bytes(payload)))
        self._changed.set()

    def link_lost(self, exc: BaseException | None) -> None:
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)

    async def wait_for(self, count: int, timeout: float = 60.0) -> list[tuple[bytes, bytes]]:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.frames


def _nothing() -> None:
    pass


@dataclass
class End:
    link: Link
    got: Collector
    #: Stop / restart taking frames in, as a stopped process would.
    pause: Callable[[], None] = _nothing
    resume: Callable[[], None] = _nothing


@dataclass
class LinkPair:
    name: str
    a: End
    b: End
    #: Whether the other end hears ``link_lost`` when one end closes. ZeroMQ shows no
    #: per-peer close: there the protocol's heartbeats tell (docs/architecture.md).
    peer_sees_close: bool = True
    #: Whether frames sent just before ``close()`` still reach the peer. A ZeroMQ link closes
    #: with linger 0 unless asked (``close(linger_ms=...)``, as the mesh does after REFUSE);
    #: a WebRTC data channel's close resets its stream.
    close_flushes: bool = True
    cleanups: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)

    def ends(self, direction: str) -> tuple[End, End]:
        """(sender, receiver) for ``a>b`` or ``b>a``."""
        return (self.a, self.b) if direction == "a>b" else (self.b, self.a)

    async def aclose(self) -> None:
        for end in (self.a, self.b):
            end.link.close()
        for cleanup in self.cleanups:
            result = cleanup()
            if result is not None:
                await result


def _stream_end(link: StreamLink, got: Collector) -> End:
    return End(link, got, link.pause_reading, link.resume_reading)


async def unix_pair(tmp: Path) -> LinkPair:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[StreamLink] = loop.create_future()
    b_got = Collector()

    def factory() -> StreamLink:
        link = StreamLink(MAX_PAYLOAD, b_got)
        accepted.set_result(link)
        return link

    path = tmp / "l.sock"
    server = await loop.create_unix_server(factory, str(path))
    a_got = Collector()
    a = await open_unix_link(path, MAX_PAYLOAD, a_got)
    b = await asyncio.wait_for(accepted, 10)
    pair = LinkPair("unix", _stream_end(a, a_got), _stream_end(b, b_got))
    pair.cleanups.append(server.close)
    return pair


async def tcp_pair(tmp: Path) -> LinkPair:
    """The mesh's plain-TCP peer link."""
    accepted: asyncio.Future[StreamLink] = asyncio.get_running_loop().create_future()
    b_got = Collector()

    def on_accept(link: StreamLink) -> None:
        link.handler = b_got
        accepted.set_result(link)

    server, endpoint = await listen_tcp("tcp://127.0.0.1:0", MAX_PAYLOAD, on_accept)
    a = await dial_tcp(endpoint, MAX_PAYLOAD, 10)
    a_got = Collector()
    a.handler = a_got
    b = await asyncio.wait_for(accepted, 10)
    assert a.transport == b.transport == "tcp"
    pair = LinkPair("tcp", _stream_end(a, a_got), _stream_end(b, b_got))
    pair.cleanups.append(server.close)
    return pair


async def zmq_pair(tmp: Path) -> LinkPair:
    """A DEALER dialling a ROUTER: an agent and its node, or two nodes of the mesh."""
    accepted: asyncio.Future[ZmqPeerLink] = asyncio.get_running_loop().create_future()
    b_got = Collector()

    def on_link(link: ZmqPeerLink) -> None:
        link.handler = b_got
        accepted.set_result(link)

    listener = ZmqRouterListener("tcp://127.0.0.1:0", on_link)
    a_got = Collector()
    a = dial_zmq(listener.endpoint, a_got)
    a.send(b"hello")  # a ROUTER knows a dialer by its first frame
    b = await asyncio.wait_for(accepted, 10)
    await b_got.wait_for(1)
    b_got.frames.clear()
    pair = LinkPair(
        "zmq",
        End(a, a_got, a.pause_reading, a.resume_reading),
        End(b, b_got, listener.pause_reading, listener.resume_reading),
        peer_sees_close=False,
        close_flushes=False,
    )
    pair.cleanups.append(listener.close)
    return pair


async def webrtc_pair(tmp: Path) -> LinkPair:
    """Two real aiortc peers on loopback, signalled in memory."""
    from fabric.transports import WebRtcLink, accept_webrtc_link, open_webrtc_link

    accepted: asyncio.Future[WebRtcLink] = asyncio.get_running_loop().create_future()
    b_got = Collector()

    def on_link(link: WebRtcLink) -> None:
        link.handler = b_got
        accepted.set_result(link)

    async def signal(offer: str) -> str:
        return await accept_webrtc_link(offer, on_link, max_payload=MAX_PAYLOAD, timeout=20)

    a_got = Collector()
    a = await open_webrtc_link(signal, a_got, max_payload=MAX_PAYLOAD, timeout=20)
    b = await asyncio.wait_for(accepted, 20)
    # aiortc offers no way to stop reading a channel; its SCTP moves a few MB/s here, far
    # below what a sending loop writes, so the sender's buffer grows all the same.
    # Closing a data channel resets its SCTP stream: what was still queued is not delivered.
    pair = LinkPair("webrtc", End(a, a_got), End(b, b_got), close_flushes=False)
    pair.cleanups += [a.aclose, b.aclose]
    return pair


FACTORIES: dict[str, Callable[[Path], Awaitable[LinkPair]]] = {
    "unix": unix_pair,
    "tcp": tcp_pair,
    "zmq": zmq_pair,
    "webrtc": webrtc_pair,
}
