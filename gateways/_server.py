"""Serving the gateway with uvicorn, in-process (tests, embedding) or as ``fabric gateway``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Iterator

import uvicorn

from fabric.errors import ConfigError, ConnectionLost

from ._app import create_app
from ._credentials import Credentials
from ._settings import GatewaySettings

__all__ = ["parse_listen", "run_gateway", "serve_gateway"]


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (port 0 picks a free one).

    Raises:
        ConfigError: not HOST:PORT.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen address {listen!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _bind(host: str, port: int, listen: str) -> socket.socket:
    """A listening TCP socket on ``host:port``.

    Raises:
        ConfigError: naming the setting, when the address is in use or cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(
            f"gateway listen (--listen, FABRIC_GATEWAY_LISTEN) {listen!r}: {exc}"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(
            f"gateway listen (--listen, FABRIC_GATEWAY_LISTEN): cannot listen on {listen}: {why}"
        ) from None
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: whoever runs the loop owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_gateway(
    settings: GatewaySettings, credentials: Credentials | None = None
) -> AsyncIterator[str]:
    """Run the gateway on this event loop; yields its base URL (``http://host:port``).

    Raises:
        ConfigError: bad listen address or auth file. ConnectionLost: the port cannot be bound.
    """

    host, port = parse_listen(settings.listen)
    app = create_app(settings, credentials)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="on", ws="websockets-sansio"
    )
    # Bound here, not by uvicorn: a port in use is then one clear error naming the setting
    # (uvicorn would log it and raise SystemExit out of the event loop).
    sock = _bind(host, port, settings.listen)
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            sock.close()
            exc = None if task.cancelled() else task.exception()
            raise ConnectionLost(f"gateway could not listen on {settings.listen}: {exc}")
        await asyncio.sleep(0.01)  # uvicorn exposes no started event to await
    sock = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{sock[0]}:{sock[1]}"
    finally:
        server.should_exit = True
        await task


def run_gateway(settings: GatewaySettings) -> None:
    """Serve until SIGINT/SIGTERM; prints ``gateway ready URL`` once listening.

    Raises:
        ConfigError, ConnectionLost: as ``serve_gateway``.
    """
    import signal

    from fabric.runner import install_uvloop

    install_uvloop()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with serve_gateway(settings) as url:
            print(f"gateway ready {url} (node {settings.url or 'default'})", flush=True)
            await stop.wait()

    asyncio.run(main())
