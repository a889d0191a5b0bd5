"""The agent protocols at the gateway: A2A at ``/a2a/`` (``_a2a.py``) and MCP at ``/mcp``
(streamable HTTP, the official ``mcp`` server with the fabric's tools behind it).

Both need the ``[agents]`` extra; without it the gateway serves everything else and says why
in its log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI

from fabric.errors import NotAuthorized
from sdk import Agent

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
    except ImportError as exc:
        log.warning("A2A not served (install the agents extra): %s", exc)
    else:
        install_a2a(app, pool, credentials, settings, identity)
    try:
        from mcp.server.streamable_http_manager import (
            StreamableHTTPASGIApp,
            StreamableHTTPSessionManager,
        )
        from starlette.routing import Route

        from sdk.mcp import fabric_mcp_server
    except ImportError as exc:
        log.warning("MCP not served (install the agents extra): %s", exc)
        return
    try:
        anonymous = credentials.identify(None)
    except NotAuthorized:
        # Every MCP call would need the caller's own agent; the streamable HTTP session runs
        # outside the request that carries the token, so this version serves /mcp open only.
        log.warning("MCP not served: /mcp is only available without an auth file")
        return

    async def agent() -> Agent:
        return await pool.get(anonymous)

    server = fabric_mcp_server(agent, call_timeout=settings.a2a_timeout)
    manager = StreamableHTTPSessionManager(app=server, max_request_body_size=settings.max_body)
    app.state.lifespan_hooks.append(manager.run)
    app.router.routes.append(Route("/mcp", endpoint=StreamableHTTPASGIApp(manager)))
