"""An MCP server whose tools are the fabric's: ``tools/list`` is one gather over ``mcp.tools``,
``tools/call`` one request to ``mcp.tool.NAME``. The same server runs behind the gateway's
``/mcp`` (streamable HTTP), ``fabric mcp`` (stdio) and fabric sessions (``_session.py``)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError

from fabric.errors import FabricError, NoResponders, NotAuthorized
from sdk import Agent

from ._protocol import LIST_SUBJECT, TRACEPARENT, tool_subject

__all__ = ["NOT_AUTHORIZED", "fabric_mcp_server"]

log = logging.getLogger("sdk.mcp")

#: JSON-RPC error code of a call the bridge refused for lack of permission.
NOT_AUTHORIZED = -32001


@contextlib.contextmanager
def _joined_trace(traceparent: str) -> Iterator[None]:
    """Make ``traceparent`` the current OpenTelemetry context (when OpenTelemetry is there),
    so the fabric request's spans are children of the MCP client's span."""
    if not traceparent:
        yield
        return
    try:
        from opentelemetry import context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        yield
        return
    token = context.attach(TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent}))
    try:
        yield
    finally:
        context.detach(token)


def fabric_mcp_server(
    agent: Agent | Callable[[], Awaitable[Agent]],
    *,
    name: str = "agent-fabric",
    list_deadline: float = 0.5,
    call_timeout: float = 30.0,
    authorize: Callable[[str], None] | None = None,
) -> Server[Any]:
    """An MCP ``Server`` listing and calling the tools fabric agents serve (``serve_tools``).

    ``list_deadline`` bounds the gather that lists tools (it returns earlier when every
    serving agent answered). A call to a tool nobody serves is the JSON-RPC error -32602; a
    tool that fails, times out or rejects its arguments is a result with ``isError``.
    ``agent`` may be a coroutine function returning the agent (opened on first use).
    ``authorize(subject)``, when given, runs before each fabric call and raises
    ``NotAuthorized`` to refuse it (the gateway checks its caller's permissions so): the MCP
    client gets the JSON-RPC error -32001 (implementation-defined server error range).
    """

    def check(subject: str) -> None:
        if authorize is None:
            return
        try:
            authorize(subject)
        except NotAuthorized as exc:
            raise MCPError(NOT_AUTHORIZED, f"not authorized: {exc.message}") from None

    async def get_agent() -> Agent:
        return agent if isinstance(agent, Agent) else await agent()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        check(LIST_SUBJECT)
        try:
            replies = await (await get_agent()).gather(LIST_SUBJECT, b"", deadline=list_deadline)
        except NoResponders:
            return types.ListToolsResult(tools=[])
        seen: dict[str, types.Tool] = {}
        for reply in replies:
            try:
                listed = json.loads(bytes(reply.data))
                for item in listed:
                    found = types.Tool.model_validate(item)
                    seen.setdefault(found.name, found)
            except Exception as exc:  # one agent's bad listing does not hide the others
                log.warning("ignoring an undecodable tool listing: %s", exc)
        return types.ListToolsResult(tools=sorted(seen.values(), key=lambda t: t.name))

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            subject = tool_subject(params.name)
        except ValueError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc)) from None
        check(subject)
        meta = dict(params.meta or {})
        traceparent = str(meta.get(TRACEPARENT, "") or "")
        body = json.dumps({"arguments": params.arguments or {}, "_meta": meta}, default=str)
        headers = {TRACEPARENT: traceparent} if traceparent else None
        try:
            with _joined_trace(traceparent):
                reply = await (await get_agent()).request(
                    subject, body, timeout=call_timeout, headers=headers
                )
        except NoResponders:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}") from None
        except FabricError as exc:
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=f"{exc.code}: {exc.message}")],
                is_error=True,
            )
        return types.CallToolResult.model_validate(json.loads(bytes(reply.data)))

    return Server(name, version="1", on_list_tools=list_tools, on_call_tool=call_tool)
