"""Fabric agents as A2A agents through the gateway, driven by the official a2a-sdk client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from a2a.client import A2AClientError, Client, ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.helpers import get_artifact_text
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotFoundError

from .interop_support import A2A_MAX, Swarm, text_request

pytestmark = [pytest.mark.asyncio(loop_scope="package"), pytest.mark.timeout(90)]



@pytest_asyncio.fixture(loop_scope="package")
async def http(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        yield client


async def a2a_client(gateway: str, name: str, *, streaming: bool = True) -> Client:
    factory = ClientFactory(ClientConfig(streaming=streaming))
    return await factory.create_from_url(f"{gateway}/a2a/{name}/")


async def test_card_lists_the_http_and_the_fabric_binding(gateway: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        card = await A2ACardResolver(client, f"{gateway}/a2a/llm/").get_agent_card()
    assert card.name == "llm"
    assert card.capabilities.streaming
    bindings = [(i.protocol_binding, i.url) for i in card.supported_interfaces]
    assert bindings[0] == ("JSONRPC", f"{gateway}/a2a/llm/")
    assert ("FABRIC", "fabric:llm") in bindings


async def test_send_message_completes_a_task(gateway: str) -> None:
    client = await a2a_client(gateway, "llm", streaming=False)
    try:
        events = [e async for e in client.send_message(text_request("hello tokens=5"))]
    finally:
        await client.close()
    task = events[-1].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert len(get_artifact_text(task.artifacts[0]).split()) == 5


async def test_stream_delivers_tokens_in_order(gateway: str) -> None:
    client = await a2a_client(gateway, "llm")
    tokens: list[str] = []
    states: list[int] = []
    try:
        async for event in client.send_message(text_request("order please tokens=30")):
            if event.HasField("artifact_update"):
                tokens += [p.text for p in event.artifact_update.artifact.parts if p.text]
            if event.HasField("status_update"):
                states.append(event.status_update.status.state)
    finally:
        await client.close()
    from .examples_words import expected_tokens

    assert tokens == expected_tokens("order please tokens=30")
    assert states[-1] == TaskState.TASK_STATE_COMPLETED


async def test_get_and_cancel_task(gateway: str, swarm: Swarm) -> None:
    client = await a2a_client(gateway, "llm", streaming=False)
    try:
        events = [
            e async for e in client.send_message(
                text_request("gw-cancel tokens=5000", immediately=True)
            )
        ]
        task_id = events[-1].task.id
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert got.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)
        cancelled = await client.cancel_task(CancelTaskRequest(id=task_id))
        assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
        await swarm.agents["llm"].wait_line("tokens of: gw-cancel")
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert got.status.state == TaskState.TASK_STATE_CANCELED
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id="no-such-task"))
    finally:
        await client.close()


async def test_client_leaving_mid_stream_cancels_the_responder(
    gateway: str, swarm: Swarm, http: httpx.AsyncClient
) -> None:
    body = {
        "jsonrpc": "2.0", "id": 7, "method": "SendStreamingMessage",
        "params": {"message": {"role": "ROLE_USER", "messageId": "m1",
                               "parts": [{"text": "leave early tokens=5000"}]}},
    }
    task_id = ""
    async with http.stream("POST", "/a2a/llm/", json=body, headers={"A2A-Version": "1.0"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        seen = 0
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                task_id = task_id or event["result"].get("task", {}).get("id", "")
                seen += 1
                if seen == 5:
                    break  # leave: the response is closed with the stream half read
    await swarm.agents["llm"].wait_line("tokens of: leave early")
    client = await a2a_client(gateway, "llm", streaming=False)
    try:
        got = await client.get_task(GetTaskRequest(id=task_id))
        assert got.status.state == TaskState.TASK_STATE_CANCELED
        # ... and the agent and the gateway still serve.
        events = [e async for e in client.send_message(text_request("again tokens=3"))]
        assert events[-1].task.status.state == TaskState.TASK_STATE_COMPLETED
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", -32700),
        (b"[]", -32600),
        (b'{"jsonrpc": "1.0", "id": 1, "method": "GetTask"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "NoSuchMethod", "params": {}}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": [1]}}', -32602),
    ],
)
async def test_malformed_json_rpc_gets_its_error_code(
    http: httpx.AsyncClient, content: bytes, code: int
) -> None:
    r = await http.post("/a2a/llm/", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert r.json()["error"]["code"] == code
    assert r.json()["jsonrpc"] == "2.0"


async def test_oversized_message_is_invalid_request(http: httpx.AsyncClient, gateway: str) -> None:
    request = text_request("x" * (A2A_MAX + 1))
    from google.protobuf.json_format import MessageToDict

    params = MessageToDict(request)
    body = {"jsonrpc": "2.0", "id": "big", "method": "SendMessage", "params": params}
    r = await http.post("/a2a/llm/", json=body)
    assert r.json()["error"]["code"] == -32600
    assert "too large" in r.json()["error"]["message"]
    client = await a2a_client(gateway, "llm", streaming=False)  # still serving
    try:
        events = [e async for e in client.send_message(text_request("ok tokens=2"))]
        assert events[-1].task.status.state == TaskState.TASK_STATE_COMPLETED
    finally:
        await client.close()


async def test_unknown_agent_is_404_for_card_and_rpc(http: httpx.AsyncClient, gateway: str) -> None:
    r = await http.get("/a2a/nobody/.well-known/agent-card.json")
    assert r.status_code == 404
    r = await http.post("/a2a/nobody/", json={"jsonrpc": "2.0", "id": 1, "method": "GetTask",
                                              "params": {"id": "t"}})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == -32600
    with pytest.raises(A2AClientError):
        await a2a_client(gateway, "nobody")


async def test_planner_fans_out_with_a_quorum_and_streams(gateway: str) -> None:
    client = await a2a_client(gateway, "planner")
    text = ""
    try:
        async with asyncio.timeout(30):
            async for event in client.send_message(text_request("ship the fabric")):
                if event.HasField("artifact_update"):
                    text += "".join(p.text for p in event.artifact_update.artifact.parts)
    finally:
        await client.close()
    reviews, words, summary = text.split("\n", 2)
    # The quorum returns the gather at the third answer; answers already read in the same
    # turn of the loop come along (3 or 4), the slow reviewer never does.
    assert reviews.startswith(("reviews (3 of 5)", "reviews (4 of 5)"))
    assert "reviewer-4" not in reviews  # the slow one missed the quorum
    assert json.loads(words.split(": ", 1)[1].replace("'", '"'))["words"] == 3
    assert len(summary.split()) == 12


async def test_subscribe_to_task_streams_and_errors_arrive_as_typed(gateway: str) -> None:
    from a2a.types.a2a_pb2 import SubscribeToTaskRequest

    client = await a2a_client(gateway, "llm")
    unary = await a2a_client(gateway, "llm", streaming=False)
    try:
        events = [
            e async for e in unary.send_message(
                text_request("gw-subscribe tokens=5000", immediately=True)
            )
        ]
        task_id = events[-1].task.id
        seen = 0
        async for _ in client.subscribe(SubscribeToTaskRequest(id=task_id)):
            seen += 1
            if seen == 3:
                break
        assert seen == 3
        await unary.cancel_task(CancelTaskRequest(id=task_id))
        # An error that comes as the stream's first event is an SSE `error` event, which the
        # official client raises as the typed error.
        with pytest.raises(TaskNotFoundError):
            async for _ in client.subscribe(SubscribeToTaskRequest(id="no-such-task")):
                pass
    finally:
        await client.close()
        await unary.close()


AUTH = """
[agents.alice]
credential = "alice-secret"
publish = { allow = ["a2a.>"] }
subscribe = { allow = ["events.>"] }

[agents.carol]
credential = "carol-secret"
publish = { allow = ["mcp.tools", "mcp.tool.add"] }
subscribe = { allow = ["events.>"] }

[agents.bob]
credential = "bob-secret"
publish = { allow = ["events.>"] }
subscribe = { allow = ["events.>"] }
"""


async def test_auth_file_applies_to_a2a(swarm: Swarm) -> None:
    from gateways import GatewaySettings, serve_gateway

    path = swarm.tmp / "auth.toml"
    path.write_text(AUTH)
    settings = GatewaySettings(
        url=swarm.node.url, listen="127.0.0.1:0", auth_file=path, webrtc=False
    )
    async with serve_gateway(settings) as url, httpx.AsyncClient(base_url=url) as http:
        card_path = "/a2a/llm/.well-known/agent-card.json"
        assert (await http.get(card_path)).status_code == 401
        bob = {"authorization": "Bearer bob-secret"}
        assert (await http.get(card_path, headers=bob)).status_code == 403
        alice = {"authorization": "Bearer alice-secret"}
        r = await http.get(card_path, headers=alice)
        assert r.status_code == 200 and r.json()["name"] == "llm"
        body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}
        assert (await http.post("/a2a/llm/", json=body, headers=bob)).status_code == 403
        r = await http.post("/a2a/llm/", json=body, headers=alice)
        assert r.json()["error"]["code"] == -32001  # reached the agent: task not found
        await check_mcp_with_tokens(url)


async def check_mcp_with_tokens(url: str) -> None:
    """/mcp under an auth file: a token is required, and the token's agent's permissions hold
    for listing (``mcp.tools``) and for each call (``mcp.tool.NAME``)."""
    from mcp import Client
    from mcp.shared.exceptions import MCPError

    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/mcp", json={})).status_code == 401
        bad = {"authorization": "Bearer wrong"}
        assert (await http.post("/mcp", json={}, headers=bad)).status_code == 401

    def client(token: str) -> Client:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
        return Client(streamable_http_client(f"{url}/mcp", http_client=http))

    async with client("carol-secret") as carol:
        assert {t.name for t in (await carol.list_tools()).tools} == {"add", "wordcount"}
        assert (await carol.call_tool("add", {"a": 1, "b": 2})).content[0].text == "3"  # type: ignore[union-attr]
        with pytest.raises(MCPError) as refused:
            await carol.call_tool("wordcount", {"text": "x"})
        assert refused.value.code == -32001
    async with client("bob-secret") as bob:
        with pytest.raises(MCPError) as refused:
            await bob.list_tools()
        assert refused.value.code == -32001
