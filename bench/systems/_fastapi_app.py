"""The FastAPI application of the HTTP REST baseline (imported only in its workers).

No ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations at
runtime to see that they take the raw ``Request``.
"""

from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from bench._payloads import FAN_REPLY, big_ok, map_result
from bench.systems._http_common import stream_body

__all__ = ["build_app"]


def build_app() -> FastAPI:
    """The agent's REST API: raw bytes in, raw bytes out, no model validation on the way."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body())

    @app.post("/fan")
    async def fan(request: Request) -> Response:
        await request.body()
        return Response(FAN_REPLY)

    @app.post("/map")
    async def map_(request: Request) -> Response:
        return Response(map_result(await request.body()))

    @app.post("/big")
    async def big(request: Request) -> Response:
        return Response(big_ok(await request.body()))

    @app.post("/stream")
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(stream_body(await request.body()))

    return app
