"""``/dashboard``: a live page of the node behind the gateway (mesh graph, rates, latency,
pool and state use), fed over the ``/v1/dashboard`` WebSocket. Every asset is served here:
the page works without internet access.

The socket sends one JSON snapshot per interval (``dashboard_view``: counters, gauges, the
node's peers with round trips); the page derives rates from successive snapshots and keeps
the last five minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, Response

from fabric.errors import FabricError, NotAuthorized
from fabric.metrics._discover import crawl, mesh_graph

from ._agents import AgentPool
from ._credentials import Credentials, bearer_token
from ._status import error_body, status_for, ws_close_code

__all__ = ["dashboard_view", "install_dashboard"]

#: Seconds between snapshots (the page may ask for 0.2 to 10 with ?interval=).
DEFAULT_INTERVAL = 1.0
_COUNTERS = ("messages_in", "messages_out", "bytes_in", "bytes_out", "requests",
             "no_responders", "dropped_slow", "malformed", "state_operations", "state_errors",
             "migrations", "timeouts")


def dashboard_view(status: dict[str, Any], now: float) -> dict[str, Any]:
    """The part of a node status the page draws (no session names or subjects)."""
    stats = status.get("stats", {})
    sessions = status.get("sessions", [])
    mesh = status.get("mesh")
    return {
        "t": now,
        "node": status.get("node"),
        "site": status.get("site"),
        "counters": {k: stats.get(k, 0) for k in _COUNTERS},
        "sessions": len(sessions),
        "subscriptions": sum(
            1 for s in sessions for sub in s.get("subscriptions", [])
            if not str(sub.get("subject", "")).startswith("_")
        ),
        "pool": status.get("pool"),
        "latency": status.get("latency"),
        "mesh": None
        if mesh is None
        else {
            "role": mesh.get("role"),
            "peers": [
                {k: p.get(k) for k in ("name", "kind", "site", "state", "rtt_ms", "forwarded")}
                for p in mesh.get("peers", [])
            ],
        },
    }


def install_dashboard(app: FastAPI, pool: AgentPool, credentials: Credentials) -> None:
    """Add ``GET /dashboard``, its script, and ``WS /v1/dashboard`` to ``app``."""
    static = resources.files("gateways").joinpath("static")

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(static.joinpath("dashboard.html").read_text())

    @app.get("/dashboard.js", include_in_schema=False)
    async def script() -> Response:
        return Response(
            static.joinpath("dashboard.js").read_text(), media_type="text/javascript"
        )

    @app.websocket("/v1/dashboard")
    async def feed(ws: WebSocket) -> None:
        await ws.accept()
        token = bearer_token(ws.headers.get("authorization")) or ws.query_params.get("token")
        try:
            client = credentials.identify(token)
            interval = float(ws.query_params.get("interval") or DEFAULT_INTERVAL)
        except NotAuthorized as exc:
            await _fail(ws, 401, "unauthenticated", exc.message)
            return
        except ValueError:
            interval = -1.0
        if not 0.2 <= interval <= 10.0:
            await _fail(ws, 422, "invalid_body", "interval must be within [0.2, 10] seconds")
            return
        gone = asyncio.ensure_future(_until_disconnect(ws))
        try:
            while not gone.done():
                try:
                    agent = await pool.get(client)
                    status = await agent.node_status()
                    view = dashboard_view(status, time.time())
                    view["graph"] = await _graph(status, min(interval, 2.0))
                    await ws.send_json(view)
                except FabricError as exc:
                    # Keep the page up and say why; the next round tries again.
                    await ws.send_json(error_body(exc.code, exc.message, status=status_for(exc)))
                await asyncio.wait((gone,), timeout=interval)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            gone.cancel()


async def _graph(status: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The whole mesh as far as peers announce their monitoring ports (``metrics`` label),
    else this node and its own peers."""
    known = {str(status.get("node")): status}
    found, failed = await crawl(known, timeout)
    graph = mesh_graph(known | found)
    for node in graph["nodes"]:
        node["unreachable"] = node["name"] in failed
    graph["self"] = status.get("node")
    return graph


async def _fail(ws: WebSocket, status: int, code: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json(error_body(code, message))
        await ws.close(ws_close_code(status))


async def _until_disconnect(ws: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
