"""POST /v1/publish and /v1/request over real HTTP, against a real node and real agents."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from gateway_support import MAX_BODY, NODE_MAX_PAYLOAD, Fabric

from gateways import GatewaySettings, serve_gateway

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


@pytest_asyncio.fixture(loop_scope="module")
async def client(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as c:
        yield c


async def test_request_round_trips_text_binary_and_json(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/request/svc.echo", json={"text": "héllo"})
    assert r.status_code == 200
    assert r.json() == {"subject": "svc.echo", "text": "héllo", "headers": {}, "reply": ""}

    blob = os.urandom(4096) + b"\xff\xfe"  # not UTF-8: must come back as base64
    r = await client.post("/v1/request/svc.echo", json={"base64": base64.b64encode(blob).decode()})
    assert r.status_code == 200
    assert base64.b64decode(r.json()["base64"]) == blob

    r = await client.post("/v1/request/svc.echo", json={"json": {"a": [1, 2]}})
    assert json.loads(r.json()["text"]) == {"a": [1, 2]}


async def test_reply_headers_and_timeout_header(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/request/svc.slow", json={"text": "0"}, headers={"x-fabric-timeout": "5"}
    )
    assert r.status_code == 200
    assert r.json()["text"] == "slept"


async def test_publish_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/publish/events.http", json={"text": "x" * 10})
    assert r.status_code == 202
    assert r.json() == {"subject": "events.http", "size": 10}


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/request/svc.nobody", {"text": "x"}, 503, "no_responders"),
        ("/v1/request/svc..echo", {"text": "x"}, 400, "invalid_subject"),
        ("/v1/request/svc.*", {"text": "x"}, 400, "invalid_subject"),
        ("/v1/publish/events.>", {"text": "x"}, 400, "invalid_subject"),
        ("/v1/request/svc.fail", {"text": "x"}, 502, "remote_error"),
        ("/v1/request/svc.slow?timeout=0.3", {"text": "30"}, 408, "timeout"),
    ],
)
async def test_fabric_errors_map_to_status_codes(
    client: httpx.AsyncClient, path: str, body: dict[str, str], status: int, code: str
) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert error["message"]
    if code not in ("invalid_subject",):
        assert error["subject"] == path.split("/")[3].split("?")[0]


@pytest.mark.parametrize(
    ("content", "status", "code", "needle"),
    [
        (b"{not json", 400, "invalid_json", ""),
        (b'{"text": "a", "base64": "AA=="}', 422, "invalid_body", "one way only"),
        (b'{"base64": "***"}', 422, "invalid_body", "base64"),
        (b'{"text": "a", "colour": "red"}', 422, "invalid_body", "colour"),
        (b'{"text": 5}', 422, "invalid_body", "text"),
        (b'{"headers": {"bad name": "v"}}', 422, "invalid_body", "bad name"),
        (b"[1, 2]", 422, "invalid_body", ""),
    ],
)
async def test_bad_bodies_get_clear_4xx(
    client: httpx.AsyncClient, content: bytes, status: int, code: str, needle: str
) -> None:
    r = await client.post(
        "/v1/request/svc.echo", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert needle in error["message"] + json.dumps(error.get("details"))


@pytest.mark.parametrize("query", ["timeout=0", "timeout=-1", "timeout=abc", "timeout=100000"])
async def test_bad_timeouts_are_refused(client: httpx.AsyncClient, query: str) -> None:
    r = await client.post(f"/v1/request/svc.echo?{query}", json={"text": "x"})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["loc"] == ["query", "timeout"]


async def test_oversized_body_with_content_length_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/publish/events.big", content=b"x" * (MAX_BODY + 1))
    assert r.status_code == 413
    assert r.json()["error"] == {
        "code": "payload_too_large",
        "message": r.json()["error"]["message"],
        "limit": MAX_BODY,
    }


async def test_oversized_chunked_body_is_cut_off_with_413(client: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(MAX_BODY // 65536 + 8):
            sent += 65536
            yield b"x" * 65536

    r = await client.post("/v1/publish/events.big", content=chunks())
    assert "content-length" not in r.request.headers  # really chunked
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_payload_over_the_node_limit_is_413(fabric: Fabric) -> None:
    settings = GatewaySettings(url=fabric.tcp_url, listen="127.0.0.1:0", max_body=MAX_BODY)
    data = base64.b64encode(b"\0" * (NODE_MAX_PAYLOAD + 1)).decode()  # the body fits MAX_BODY
    async with serve_gateway(settings) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/request/svc.echo", json={"base64": data})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        assert r.json()["error"]["limit"] == NODE_MAX_PAYLOAD


async def test_unknown_route_uses_the_error_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "http_404"


async def test_health_reports_the_node(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["node"] == "gw-node"


async def test_unreachable_node_is_504_and_degraded(fabric: Fabric) -> None:
    settings = GatewaySettings(url=f"unix://{fabric.tmp}/nothing.sock", listen="127.0.0.1:0")
    async with serve_gateway(settings) as url, httpx.AsyncClient(base_url=url) as c:
        r = await c.post("/v1/request/svc.echo", json={"text": "x"})
        assert r.status_code == 504
        assert r.json()["error"]["code"] == "connection_lost"
        r = await c.get("/v1/health")
        assert r.status_code == 503
        assert r.json()["status"] == "degraded"


async def test_openapi_describes_every_http_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert set(spec["paths"]) >= {
        "/v1/publish/{subject}",
        "/v1/request/{subject}",
        "/v1/health",
        "/v1/webrtc/offer",
    }
    responses = spec["paths"]["/v1/request/{subject}"]["post"]["responses"]
    assert {"200", "400", "401", "403", "408", "413", "422", "502", "503", "504"} <= set(responses)
