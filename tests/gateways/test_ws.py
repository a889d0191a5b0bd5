"""WS /v1/subscribe and /v1/stream over real WebSocket connections."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from gateway_support import Fabric

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://", 1) + path


async def recv_json(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def test_subscribe_receives_what_http_publishes_in_order(gateway: str) -> None:
    async with websockets.connect(ws_url(gateway, "/v1/subscribe/events.ws.*")) as ws:
        assert await recv_json(ws) == {"subscribed": "events.ws.*", "queue": ""}
        async with httpx.AsyncClient(base_url=gateway) as c:
            for i in range(20):
                r = await c.post(
                    f"/v1/publish/events.ws.n{i % 3}", json={"text": str(i), "headers": {"i": "x"}}
                )
                assert r.status_code == 202
            r = await c.post("/v1/publish/events.other", json={"text": "not for us"})
        got = [await recv_json(ws) for _ in range(20)]
        assert [m["text"] for m in got] == [str(i) for i in range(20)]
        assert got[4]["subject"] == "events.ws.n1"
        assert got[0]["headers"] == {"i": "x"}


async def test_queue_subscribers_share_the_messages(gateway: str) -> None:
    path = "/v1/subscribe/events.q?queue=workers"
    async with (
        websockets.connect(ws_url(gateway, path)) as a,
        websockets.connect(ws_url(gateway, path)) as b,
    ):
        await recv_json(a)
        await recv_json(b)
        async with httpx.AsyncClient(base_url=gateway) as c:
            for i in range(10):
                await c.post("/v1/publish/events.q", json={"text": str(i)})
        seen: list[str] = []
        all_seen = asyncio.Event()

        async def drain(ws: Any) -> None:
            while True:
                seen.append((await recv_json(ws))["text"])
                if len(seen) >= 10:
                    all_seen.set()

        tasks = [asyncio.ensure_future(drain(ws)) for ws in (a, b)]
        await asyncio.wait_for(all_seen.wait(), 10)
        for t in tasks:
            t.cancel()
        assert sorted(seen, key=int) == [str(i) for i in range(10)]  # each exactly once


@pytest.mark.parametrize(
    ("path", "close", "code"),
    [
        ("/v1/subscribe/events..x", 4400, "invalid_subject"),
        ("/v1/subscribe/a.>.b", 4400, "invalid_subject"),
    ],
)
async def test_subscribe_refusals_close_with_a_reason(
    gateway: str, path: str, close: int, code: str
) -> None:
    async with websockets.connect(ws_url(gateway, path)) as ws:
        assert (await recv_json(ws))["error"]["code"] == code
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == close


async def test_stream_delivers_every_chunk_then_end(gateway: str) -> None:
    async with websockets.connect(ws_url(gateway, "/v1/stream/llm.generate?timeout=10")) as ws:
        await ws.send(json.dumps({"text": "5"}))
        chunks = [await recv_json(ws) for _ in range(5)]
        assert [c["text"] for c in chunks] == [f"tok{i}" for i in range(5)]
        assert {c["subject"] for c in chunks} == {"llm.generate"}
        assert await recv_json(ws) == {"end": True}
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()


async def test_stream_errors_close_with_status_code(gateway: str) -> None:
    async with websockets.connect(ws_url(gateway, "/v1/stream/llm.nobody")) as ws:
        await ws.send(json.dumps({"text": "5"}))
        assert (await recv_json(ws))["error"]["code"] == "no_responders"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4503


async def test_stream_with_a_bad_body_is_refused(gateway: str) -> None:
    async with websockets.connect(ws_url(gateway, "/v1/stream/llm.generate")) as ws:
        await ws.send('{"text": 1}')
        assert (await recv_json(ws))["error"]["code"] == "invalid_body"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4422


async def test_leaving_a_stream_cancels_the_responder(gateway: str, fabric: Fabric) -> None:
    streamer = fabric.agents["streamer"]
    # max_queue=None: the client keeps reading while it closes; with a bounded queue it stops
    # reading and waits out its close timeout for a close frame queued behind unread chunks.
    url = ws_url(gateway, "/v1/stream/llm.generate?timeout=30")
    async with websockets.connect(url, max_queue=None) as ws:
        await ws.send(json.dumps({"text": "100000"}))
        assert (await recv_json(ws))["text"] == "tok0"
    line = await streamer.wait_line("cancelled", timeout=20)
    assert int(line.split()[1]) < 100000


async def test_nobody_reads_replies_through_the_gateway(gateway: str) -> None:
    """Issue 15, finding 1: a WebSocket client watching ``_INBOX.>`` read every reply meant for
    other clients' requests. Now the inbox pattern is refused, and ``>`` sees no reply."""
    async with websockets.connect(ws_url(gateway, "/v1/subscribe/_INBOX.>")) as ws:
        assert (await recv_json(ws))["error"]["code"] == "not_authorized"
        with pytest.raises(websockets.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4403
    async with websockets.connect(ws_url(gateway, "/v1/subscribe/>"), max_queue=None) as ws:
        assert (await recv_json(ws))["subscribed"] == ">"
        async with httpx.AsyncClient(base_url=gateway) as c:
            for i in range(20):
                r = await c.post("/v1/request/svc.echo", json={"text": f"secret-{i}"})
                assert r.status_code == 200 and r.json()["text"] == f"secret-{i}"
            r = await c.post("/v1/publish/events.canary", json={"text": "end"})
            assert r.status_code == 202
        seen = []
        while True:
            msg = await recv_json(ws)
            seen.append(msg["subject"])
            if msg["subject"] == "events.canary":
                break
        assert [s for s in seen if s.startswith("_INBOX.")] == []
        assert seen.count("svc.echo") == 20  # the requests themselves are not private
