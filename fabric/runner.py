"""Run a node in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from .config import NodeSettings
from .node import Node

__all__ = ["install_uvloop", "run_node", "serve"]


def install_uvloop() -> None:
    """Use uvloop when it is installed (it is a dependency on Linux and macOS)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(settings: NodeSettings, *, announce: bool = True) -> None:
    """Start a node, print where it listens, and serve until a stop signal.

    Raises:
        ConnectionLost: when an endpoint cannot be bound.
    """
    node = Node(settings)
    await node.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if announce and node.monitoring is not None and node.monitoring.server is not None:
        print(f"metrics on http://{node.monitoring.server.address}/metrics", flush=True)
    if announce:
        # The line tests and `fabric up` wait for; keep "ready" and the endpoints in it.
        print(
            f"fabric node {settings.name} (site {settings.site}) ready: "
            + " ".join(node.endpoints),
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        await node.aclose()


def run_node(settings: NodeSettings) -> None:
    """Blocking entry point used by ``fabric node``."""
    install_uvloop()
    # Every line names the node that logged it: `fabric up` runs several in one terminal.
    name = settings.name.replace("%", "%%")
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"%(asctime)s [{name}] %(name)s %(message)s"
    )
    asyncio.run(serve(settings))
