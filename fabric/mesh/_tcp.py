"""Plain TCP peer links: the same length-prefixed frames as the agents' Unix socket
(``StreamLink``), over TCP. Used between nodes when no CurveZMQ keys are configured. The
mesh holds these as plain ``Link``s, as it holds its ZeroMQ links (fabric/transports).

Why not ZeroMQ here too: a ping-pong between two processes on this machine measured 220 µs
p50 through ZeroMQ (each message is handed to and from libzmq's I/O threads) against 27 µs on
a plain asyncio TCP stream; a cross-node request crosses a peer link twice. With keys, links
stay on ZeroMQ for CURVE (docs/mesh.md). A dead peer's TCP close is also seen at once, where
ZeroMQ hides it behind reconnects until heartbeats run out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..errors import ConfigError
from ..framing import PendingBudget
from ..transports import StreamLink

__all__ = ["dial_tcp", "listen_tcp", "split_tcp_url"]


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
        link.transport = "tcp"
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
        loop.create_connection(lambda: _tcp_link(max_payload), host, port), timeout
    )
    return link


def _tcp_link(max_payload: int) -> StreamLink:
    link = StreamLink(max_payload)
    link.transport = "tcp"
    return link
