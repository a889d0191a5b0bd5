"""MCP tools on the fabric, driven by the official ``mcp`` client: streamable HTTP at the
gateway's /mcp, stdio with ``fabric mcp``, and the fabric transport."""

from __future__ import annotations

import sys

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from sdk import connect
from sdk.mcp import fabric_transport

from .interop_support import Swarm

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.timeout(90)]

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def check_tools(client: Client) -> None:
    listed = await client.list_tools()
    by_name = {t.name: t for t in listed.tools}
    assert set(by_name) == {"add", "wordcount"}
    assert by_name["add"].input_schema["required"] == ["a", "b"]
    result = await client.call_tool("add", {"a": 2, "b": 40})
    assert not result.is_error
    assert result.content[0].text == "42"  # type: ignore[union-attr]
    result = await client.call_tool(
        "wordcount", {"text": "one two three"}, meta={"traceparent": TRACEPARENT}
    )
    assert result.structured_content == {"words": 3, "traceparent": TRACEPARENT}


async def check_bad_input(client: Client) -> None:
    # Arguments that fail the schema: a tool error the model can read (MCP 2025-11-25 on).
    result = await client.call_tool("add", {"a": "not a number"})
    assert result.is_error
    text = result.content[0].text  # type: ignore[union-attr]
    assert "invalid arguments" in text and "a" in text and "b" in text
    # A tool nobody serves: the protocol's invalid-params error.
    with pytest.raises(MCPError) as err:
        await client.call_tool("nosuchtool", {})
    assert err.value.code == -32602
    # ... and the session still serves.
    assert (await client.call_tool("add", {"a": 1, "b": 1})).content[0].text == "2"  # type: ignore[union-attr]


async def test_streamable_http_at_the_gateway(gateway: str) -> None:
    async with Client(f"{gateway}/mcp") as client:
        await check_tools(client)
        await check_bad_input(client)


async def test_stdio_with_fabric_mcp(swarm: Swarm) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "fabric", "mcp", "--url", swarm.node.url],
        env=swarm.env,
    )
    async with Client(params) as client:
        await check_tools(client)
        await check_bad_input(client)


async def test_fabric_transport_session(swarm: Swarm) -> None:
    async with connect("mcp-tester", swarm.node.url) as agent:
        async with Client(fabric_transport(agent, "tools")) as client:
            await check_tools(client)
            await check_bad_input(client)
        # A second session after the first one ended: the host cleaned up and still serves.
        async with Client(fabric_transport(agent, "tools")) as client:
            assert len((await client.list_tools()).tools) == 2


async def test_malformed_json_rpc_at_mcp_keeps_the_gateway_serving(gateway: str) -> None:
    import httpx

    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        r = await http.post("/mcp", content=b"{not json", headers=headers)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == -32700
        r = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1}, headers=headers)
        assert r.status_code >= 400
    async with Client(f"{gateway}/mcp") as client:
        assert len((await client.list_tools()).tools) == 2


async def test_malformed_message_on_a_fabric_session(swarm: Swarm) -> None:
    import json

    from sdk.mcp import host_subject

    async with connect("mcp-raw", swarm.node.url) as agent:
        sid = "raw0001"
        stream = agent.stream(host_subject("tools"), sid, timeout=30)
        assert bytes((await stream.__anext__()).data) == b""  # ready
        target = f"{host_subject('tools')}.{sid}"
        assert (await agent.request(target, b"{garbage", timeout=10)).text() == "malformed"
        ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
        assert (await agent.request(target, json.dumps(ping), timeout=10)).text() == "ok"
        async for chunk in stream:
            message = json.loads(bytes(chunk.data))
            if message.get("id") == 9:
                assert "result" in message or "error" in message
                break
        await stream.aclose()
        # Unknown session: a typed error, the host still serves.
        from fabric.errors import RemoteError

        with pytest.raises(RemoteError):
            await agent.request(f"{host_subject('tools')}.nosession", b"{}", timeout=10)
    async with (
        connect("mcp-after", swarm.node.url) as agent,
        Client(fabric_transport(agent, "tools")) as client,
    ):
        assert len((await client.list_tools()).tools) == 2
