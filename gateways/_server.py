"""Serving the gateway with uvicorn, in-process (tests, embedding) or as ``fabric gateway``."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterator

import uvicorn

from fabric.errors import ConfigError, ConnectionLost
from fabric.paths import default_url

from ._app import create_app
from ._credentials import Credentials
from ._preflight import bind_listen, node_problem
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
    server = _Server(config)
    # Bound here, not by uvicorn: a port in use is then one ConnectionLost naming the setting,
    # not uvicorn's sys.exit inside a task ("Task exception was never retrieved").
    listener = bind_listen(host, port, settings.listen)
    task = asyncio.ensure_future(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            listener.close()
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
            # Asked once the port is ours: a port in use stays a one-line error.
            problem = node_problem(settings.url)
            if problem is not None:
                print(f"warning: {problem}", file=sys.stderr, flush=True)
            node = settings.url or default_url()
            state = "not reachable yet: /v1/health says degraded" if problem else "reachable"
            print(f"gateway ready {url} (node {node}, {state}; API docs {url}/docs)", flush=True)
            await stop.wait()

    asyncio.run(main())
