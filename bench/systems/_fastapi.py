"""Baseline: HTTP REST with FastAPI on uvicorn (uvloop, httptools, access log off) and an
httpx ``AsyncClient`` with keep-alive.

Handlers take the raw ``Request`` and return a raw ``Response``: no pydantic model on the hot
path, the fastest way FastAPI serves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from bench._plan import ProcPlan
from bench.systems._base import Announce, Client, System, WorkerInfo
from bench.systems._http_common import HttpClient, bind_loopback

__all__ = ["FastapiSystem"]


class FastapiSystem(System):
    name = "fastapi"
    label = "HTTP: FastAPI/uvicorn + httpx"
    hint = "pip install 'agent-fabric[bench]' (or: pip install fastapi 'uvicorn[standard]' httpx)"
    modules = ("fastapi", "uvicorn", "httpx", "httptools", "uvloop")
    packages = ("fastapi", "uvicorn", "httpx", "httptools", "uvloop")

    async def serve(
        self, plan: ProcPlan, env: dict[str, Any], announce: Announce, stop: asyncio.Event
    ) -> None:
        import uvicorn

        from bench.systems._fastapi_app import build_app

        app = build_app()

        servers: list[uvicorn.Server] = []
        tasks: list[asyncio.Task[None]] = []
        ports: dict[str, int] = {}
        try:
            for agent in plan.agents:
                config = uvicorn.Config(
                    app,
                    loop="none",
                    http="httptools",
                    access_log=False,
                    log_level="warning",
                    lifespan="off",
                    timeout_keep_alive=120,
                )
                server = uvicorn.Server(config)
                sock = bind_loopback()
                ports[agent.name] = sock.getsockname()[1]
                servers.append(server)
                tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
            # The sockets are bound and listening already, so a client connecting before
            # uvicorn's accept loop runs waits in the backlog: the agents are reachable now.
            announce({"ports": ports})
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            for task in done:
                if task is not stopped:
                    task.result()  # a server that stopped on its own: surface why
        finally:
            for server in servers:
                server.should_exit = True
            for task in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 5)

    async def open_client(
        self, env: dict[str, Any], layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]
    ) -> Client:
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            timeout=30.0,
        )
        return _HttpxClient(layout, infos, client)


class _HttpxClient(HttpClient):
    def __init__(
        self, layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo], client: Any
    ) -> None:
        super().__init__(layout, infos)
        self._client = client

    async def post(self, url: str, body: bytes) -> bytes:
        response = await self._client.post(url, content=body)
        response.raise_for_status()
        data: bytes = response.content
        return data

    async def post_stream(self, url: str, body: bytes) -> int:
        received = 0
        async with self._client.stream("POST", url, content=body) as response:
            response.raise_for_status()
            async for chunk in response.aiter_raw():
                received += len(chunk)
        return received

    async def aclose(self) -> None:
        await self._client.aclose()
