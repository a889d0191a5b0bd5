"""Plain TCP peer links: the same length-prefixed frames as the agents' Unix socket
(``StreamLink``), over TCP. Used between nodes when no CurveZMQ keys are configured.

Why not ZeroMQ here too: a ping-pong between two processes on this machine measured 220 µs
p50 through ZeroMQ (each message is handed to and from libzmq's I/O threads) against 27 µs on
a plain asyncio TCP stream; a cross-node request crosses a peer link twice. With keys, links
stay on ZeroMQ for CURVE (docs/mesh.md). A dead peer's TCP close is also seen at once, where
ZeroMQ hides it behind reconnects until heartbeats run out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from typing_extensions import Buffer

from ..errors import ConfigError, FabricError
from ..framing import PendingBudget
from ..transports import StreamLink

__all__ = ["TcpEnd", "dial_tcp", "listen_tcp", "split_tcp_url"]


def split_tcp_url(url: str) -> tuple[str, int]:
    """``tcp://host:port`` -> (host, port).

    Raises:
        ConfigError: not a tcp:// URL with a numeric port.
    """
    if not url.startswith("tcp://"):
        raise ConfigError(f"peer URL {url!r} must be tcp://HOST:PORT")
    host, sep, port = url[len("tcp://") :].rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"peer URL {url!r} must be tcp://HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class TcpEnd:
    """Adapts one ``StreamLink`` to the mesh: frames in, a bounded non-blocking send out."""

    def __init__(
        self,
        link: StreamLink,
        limit: int,
        on_frame: Callable[[TcpEnd, bytes, memoryview], None],
        on_lost: Callable[[TcpEnd], None],
    ) -> None:
        self.link = link
        self._limit = limit
        self._on_frame = on_frame
        self._on_lost = on_lost
        link.handler = self

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self._on_frame(self, header, payload)

    def link_lost(self, exc: BaseException | None) -> None:
        self._on_lost(self)

    def send(self, header: bytes, payload: Buffer = b"") -> bool:
        """False when the link is closed or the peer is too far behind (memory stays bounded)."""
        link = self.link
        if link.closed or link.buffered() > self._limit:
            return False
        try:
            link.send(header, payload)
        except FabricError:
            return False
        return True

    def close(self) -> None:
        self.link.close()


async def listen_tcp(
    url: str,
    max_payload: int,
    on_accept: Callable[[StreamLink], None],
    *,
    budget: PendingBudget | None = None,
    stall_timeout: float | None = None,
) -> tuple[asyncio.AbstractServer, str]:
    """Listen for peer links; returns the server and the bound ``tcp://`` endpoint.

    Raises:
        ConfigError: malformed URL. OSError: cannot bind.
    """
    host, port = split_tcp_url(url)

    def factory() -> StreamLink:
        link = StreamLink(max_payload, budget=budget, stall_timeout=stall_timeout)
        on_accept(link)
        return link

    server = await asyncio.get_running_loop().create_server(factory, host, port)
    bound = server.sockets[0].getsockname()
    return server, f"tcp://{bound[0]}:{bound[1]}"


async def dial_tcp(url: str, max_payload: int, timeout: float) -> StreamLink:
    """Open a peer link.

    Raises:
        ConfigError: malformed URL. OSError, TimeoutError: nobody answered.
    """
    host, port = split_tcp_url(url)
    loop = asyncio.get_running_loop()
    _, link = await asyncio.wait_for(
        loop.create_connection(lambda: StreamLink(max_payload), host, port), timeout
    )
    return link
