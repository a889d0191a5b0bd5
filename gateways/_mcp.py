"""``/mcp``: the fabric's tools in MCP's streamable HTTP transport, per caller.

Each authenticated agent name gets its own MCP session manager, whose server reaches the fabric
as that agent and checks that agent's permissions before every call (``mcp.tools`` to list,
``mcp.tool.NAME`` to call). A session id belongs to the manager that made it, so one caller can
never use another's session. Managers are made on first use (one per agent of the auth file at
most, or the single anonymous one) and run until the gateway stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.types import Receive, Scope, Send

from fabric.errors import NotAuthorized
from sdk import Agent
from sdk.mcp import fabric_mcp_server

from ._agents import AgentPool
from ._credentials import Credentials, Identity, bearer_token
from ._settings import GatewaySettings
from ._status import error_body

__all__ = ["McpEndpoint"]


class McpEndpoint:
    """The ASGI app mounted at ``/mcp``; ``running()`` is its lifetime (the app's lifespan)."""

    def __init__(
        self, pool: AgentPool, credentials: Credentials, settings: GatewaySettings
    ) -> None:
        self._pool = pool
        self._credentials = credentials
        self._settings = settings
        self._managers: dict[str, StreamableHTTPSessionManager] = {}
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._runners: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self._stop.set()
            for runner in list(self._runners):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization")
        try:
            who = self._credentials.identify(bearer_token(raw.decode("latin-1") if raw else None))
        except NotAuthorized as exc:
            await _refuse(send, 401, error_body("unauthenticated", exc.message))
            return
        manager = await self._manager(who)
        await manager.handle_request(scope, receive, send)

    async def _manager(self, who: Identity) -> StreamableHTTPSessionManager:
        found = self._managers.get(who.name)
        if found is not None:
            return found
        async with self._lock:
            found = self._managers.get(who.name)
            if found is not None:
                return found
            pool, credentials = self._pool, self._credentials

            async def agent() -> Agent:
                return await pool.get(who)

            def authorize(subject: str) -> None:
                credentials.check_publish(who, subject)

            server = fabric_mcp_server(
                agent, call_timeout=self._settings.a2a_timeout, authorize=authorize
            )
            manager = StreamableHTTPSessionManager(
                app=server, max_request_body_size=self._settings.max_body
            )
            started = asyncio.Event()

            async def run() -> None:
                # The manager's task group must be entered and left by one task: this one.
                async with manager.run():
                    started.set()
                    await self._stop.wait()

            runner = asyncio.ensure_future(run())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
            waiter = asyncio.ensure_future(started.wait())
            await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not started.is_set():
                waiter.cancel()
                runner.result()  # raises why the manager could not start
                raise RuntimeError("the MCP session manager stopped before it started")
            self._managers[who.name] = manager
            return manager


async def _refuse(send: Send, status: int, body: dict[str, object]) -> None:
    payload = json.dumps(body).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", b"Bearer"),
        ],
    })
    await send({"type": "http.response.body", "body": payload})
