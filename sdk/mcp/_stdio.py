"""``fabric mcp``: the fabric's tools for a desktop MCP client, over stdio."""

from __future__ import annotations

import asyncio

from mcp.server.stdio import stdio_server

from sdk import connect

from ._server import fabric_mcp_server

__all__ = ["run_stdio", "serve_stdio"]


async def serve_stdio(url: str | None, name: str, call_timeout: float) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin.

    Raises:
        ConnectionLost, NotAuthorized: the node refused or cannot be reached.
    """
    async with connect(name, url, direct=True) as agent:
        server = fabric_mcp_server(agent, call_timeout=call_timeout)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


def run_stdio(url: str | None, name: str = "mcp-stdio", call_timeout: float = 30.0) -> None:
    """Blocking entry point of ``fabric mcp`` (stdout is the protocol: nothing else is printed
    there). Raises as ``serve_stdio``."""
    asyncio.run(serve_stdio(url, name, call_timeout))
