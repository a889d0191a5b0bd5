"""Baseline: HTTP with an aiohttp server and the aiohttp client (keep-alive, uvloop)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bench._payloads import FAN_REPLY, big_ok, map_result
from bench._plan import ProcPlan
from bench.systems._base import Announce, Client, System, WorkerInfo
from bench.systems._http_common import MAX_BODY, HttpClient, bind_loopback, stream_body

__all__ = ["AiohttpSystem"]


class AiohttpSystem(System):
    name = "aiohttp"
    label = "HTTP: aiohttp server + client"
    hint = "pip install 'agent-fabric[bench]' (or: pip install aiohttp)"
    modules = ("aiohttp",)
    packages = ("aiohttp",)

    async def serve(
        self, plan: ProcPlan, env: dict[str, Any], announce: Announce, stop: asyncio.Event
    ) -> None:
        from aiohttp import web

        async def echo(request: web.Request) -> web.Response:
            return web.Response(body=await request.read())

        async def fan(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=FAN_REPLY)

        async def map_(request: web.Request) -> web.Response:
            return web.Response(body=map_result(await request.read()))

        async def big(request: web.Request) -> web.Response:
            return web.Response(body=big_ok(await request.read()))

        async def stream(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            async for chunk in stream_body(await request.read()):
                await response.write(chunk)
            await response.write_eof()
            return response

        runners: list[web.AppRunner] = []
        ports: dict[str, int] = {}
        try:
            for agent in plan.agents:
                app = web.Application(client_max_size=MAX_BODY)
                app.router.add_post("/echo", echo)
                app.router.add_post("/fan", fan)
                app.router.add_post("/map", map_)
                app.router.add_post("/big", big)
                app.router.add_post("/stream", stream)
                runner = web.AppRunner(app, access_log=None, handle_signals=False)
                await runner.setup()
                runners.append(runner)
                sock = bind_loopback()
                await web.SockSite(runner, sock).start()
                ports[agent.name] = sock.getsockname()[1]
            announce({"ports": ports})
            await stop.wait()
        finally:
            for runner in runners:
                await runner.cleanup()

    async def open_client(
        self, env: dict[str, Any], layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo]
    ) -> Client:
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=120),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        return _AiohttpClient(layout, infos, session)


class _AiohttpClient(HttpClient):
    def __init__(
        self, layout: Sequence[ProcPlan], infos: Sequence[WorkerInfo], session: Any
    ) -> None:
        super().__init__(layout, infos)
        self._session = session

    async def post(self, url: str, body: bytes) -> bytes:
        async with self._session.post(url, data=body) as response:
            response.raise_for_status()
            data: bytes = await response.read()
            return data

    async def post_stream(self, url: str, body: bytes) -> int:
        received = 0
        async with self._session.post(url, data=body) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_any():
                received += len(chunk)
        return received

    async def aclose(self) -> None:
        await self._session.close()
