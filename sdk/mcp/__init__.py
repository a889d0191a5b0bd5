"""MCP (Model Context Protocol) on the fabric, with the official ``mcp`` package.

    from sdk.mcp import serve_tools, tool

    @tool("add", "Add two integers", AddArgs)
    async def add(args: AddArgs, call: ToolCall) -> str:
        return str(args.a + args.b)

    await serve_tools(agent, add)

Tools served so are listed and called by any MCP client: through the gateway's ``/mcp``
(streamable HTTP), over stdio with ``fabric mcp``, and over the fabric itself with
``fabric_transport`` (an MCP client transport) against a host started by ``serve_mcp``.
``_meta.traceparent`` of a call reaches the tool and joins the fabric's trace.

Needs the ``[agents]`` extra; ``import sdk`` never imports this package.
"""

from ._protocol import LIST_SUBJECT, host_subject, tool_subject
from ._server import fabric_mcp_server
from ._session import McpHost, fabric_transport, serve_mcp
from ._stdio import run_stdio, serve_stdio
from ._tools import FabricTool, ToolCall, ToolService, serve_tools, tool

__all__ = [
    "LIST_SUBJECT",
    "FabricTool",
    "McpHost",
    "ToolCall",
    "ToolService",
    "fabric_mcp_server",
    "fabric_transport",
    "host_subject",
    "run_stdio",
    "serve_mcp",
    "serve_stdio",
    "serve_tools",
    "tool",
    "tool_subject",
]
