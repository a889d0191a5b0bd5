"""Bearer tokens and permissions at the gateway (the node's auth file format)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import websockets

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

ALICE = {"authorization": "Bearer alice-secret"}
BOB = {"authorization": "Bearer bob-secret"}


@pytest_asyncio.fixture(loop_scope="module")
async def client(auth_gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=auth_gateway, timeout=30) as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer nope"}, {"authorization": "Basic YWxpY2U6eA=="}],
)
async def test_missing_or_unknown_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await client.post("/v1/request/svc.echo", json={"text": "x"}, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "unauthenticated"


async def test_allowed_agent_gets_through(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/request/svc.echo", json={"text": "from alice"}, headers=ALICE)
    assert r.status_code == 200
    assert r.json()["text"] == "from alice"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/request/svc.echo", BOB),  # bob may only publish on events.bob.>
        ("/v1/publish/events.alice", BOB),
        ("/v1/publish/admin.reset", ALICE),
    ],
)
async def test_agent_outside_its_permissions_is_403(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    r = await client.post(path, json={"text": "x"}, headers=headers)
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "not_authorized"
    assert error["subject"] == path.rsplit("/", 1)[1]


async def test_each_credential_is_its_own_agent_at_the_node(
    client: httpx.AsyncClient, auth_gateway: str
) -> None:
    assert (await client.post("/v1/publish/events.bob.x", json={}, headers=BOB)).status_code == 202
    r = await client.post("/v1/request/svc.echo", json={}, headers=ALICE)
    assert r.status_code == 200
    health = (await client.get("/v1/health")).json()
    assert health["agents"] >= 2


async def test_websocket_token_and_permissions(auth_gateway: str) -> None:
    base = auth_gateway.replace("http://", "ws://")
    async with websockets.connect(f"{base}/v1/subscribe/events.>") as ws:
        assert json.loads(await ws.recv())["error"]["code"] == "unauthenticated"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401
    async with websockets.connect(f"{base}/v1/subscribe/events.>?token=bob-secret") as ws:
        assert json.loads(await ws.recv())["error"]["code"] == "not_authorized"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4403
    headers = {"authorization": "Bearer bob-secret"}
    async with websockets.connect(
        f"{base}/v1/subscribe/events.bob.>", additional_headers=headers
    ) as ws:
        assert json.loads(await ws.recv()) == {"subscribed": "events.bob.>", "queue": ""}
        async with httpx.AsyncClient(base_url=auth_gateway) as c:
            await c.post("/v1/publish/events.bob.hi", json={"text": "hi"}, headers=BOB)
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert (msg["subject"], msg["text"]) == ("events.bob.hi", "hi")
