"""The agent protocols at the gateway: A2A at ``/a2a/`` (``_a2a.py``) and MCP at ``/mcp``
(streamable HTTP, the official ``mcp`` server with the fabric's tools behind it).

Both need the ``[agents]`` extra; without it the gateway serves everything else and says why
in its log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI

from ._agents import AgentPool
from ._credentials import Credentials, Identity
from ._settings import GatewaySettings

__all__ = ["install_interop"]

log = logging.getLogger("gateways.interop")


def install_interop(
    app: FastAPI,
    pool: AgentPool,
    credentials: Credentials,
    settings: GatewaySettings,
    identity: Callable[..., Identity],
) -> None:
    """Add ``/a2a/`` and ``/mcp`` when their packages are installed."""
    try:
        from ._a2a import install_a2a
        from ._a2a_rest import install_a2a_rest
    except ImportError as exc:
        log.warning("A2A not served (install the agents extra): %s", exc)
    else:
        who = install_a2a(app, pool, credentials, settings, identity)
        install_a2a_rest(app, pool, credentials, settings, who)
    try:
        from starlette.routing import Route

        from ._mcp import McpEndpoint
    except ImportError as exc:
        log.warning("MCP not served (install the agents extra): %s", exc)
        return
    endpoint = McpEndpoint(pool, credentials, settings)
    app.state.lifespan_hooks.append(endpoint.running)
    app.router.routes.append(Route("/mcp", endpoint=endpoint))
