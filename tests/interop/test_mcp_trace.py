"""An MCP call's ``_meta.traceparent`` joins the fabric's trace (console exporter, one process)."""

from __future__ import annotations

import json

import pytest
from mcp import Client
from pydantic import BaseModel

from sdk import connect
from sdk.mcp import ToolCall, fabric_mcp_server, fabric_transport, serve_mcp, serve_tools, tool

pytestmark = pytest.mark.timeout(60)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Ping(BaseModel):
    text: str


@tool("ping", "Answers pong and the traceparent it saw.", Ping)
async def ping(args: Ping, call: ToolCall) -> str:
    return f"pong {call.traceparent}"


def _spans(text: str) -> list[dict]:  # type: ignore[type-arg]
    spans, depth, buf = [], 0, []
    for line in text.splitlines():
        if line.startswith("{") and depth == 0:
            buf = []
        buf.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0 and buf and buf[0].startswith("{"):
            spans.append(json.loads("\n".join(buf)))
            buf = []
    return spans


async def test_traceparent_in_meta_parents_the_fabric_spans(node, monkeypatch, capsys):  # type: ignore[no-untyped-def]
    pytest.importorskip("opentelemetry.sdk")
    monkeypatch.setenv("FABRIC_TRACING", "console")
    async with (
        connect("tool-agent", node.url) as tool_agent,
        connect("mcp-host", node.url) as host_agent,
        connect("mcp-user", node.url) as user,
    ):
        await serve_tools(tool_agent, ping)
        await serve_mcp(host_agent, fabric_mcp_server(host_agent), host="traced")
        async with Client(fabric_transport(user, "traced")) as client:
            meta = {"traceparent": TRACEPARENT}
            result = await client.call_tool("ping", {"text": "x"}, meta=meta)
    assert result.content[0].text == f"pong {TRACEPARENT}"  # type: ignore[union-attr]
    spans = {s["name"]: s for s in _spans(capsys.readouterr().out)}
    request, handled = spans["request mcp.tool.ping"], spans["handle mcp.tool.ping"]
    assert request["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert handled["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert handled["parent_id"] == request["context"]["span_id"]
