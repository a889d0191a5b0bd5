"""A2A's HTTP+JSON (REST) binding at the gateway, translated to the JSON-RPC the fabric binding
carries: the agent serves one binding, the gateway offers both.

| REST | JSON-RPC on the fabric |
|---|---|
| ``POST /a2a/NAME/message:send`` | ``SendMessage`` |
| ``POST /a2a/NAME/message:stream`` | ``SendStreamingMessage`` (SSE: a ``StreamResponse`` each) |
| ``GET /a2a/NAME/tasks/ID`` | ``GetTask`` (``historyLength`` from the query) |
| ``POST /a2a/NAME/tasks/ID:cancel`` | ``CancelTask`` |
| ``GET or POST /a2a/NAME/tasks/ID:subscribe`` | ``SubscribeToTask`` (SSE) |
| ``GET /a2a/NAME/tasks`` | ``ListTasks`` (filters from the query) |

Errors take A2A's REST shape (``{"error": {"code", "status", "message", "details"}}``, with the
HTTP status of a2a-sdk's mapping), built from the JSON-RPC error by a2a-sdk's own helper.
"""

# No `from __future__ import annotations`: FastAPI resolves the route signatures at runtime.
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import (
    JSON_RPC_ERROR_CODE_MAP,
    A2AError,
    InternalError,
    InvalidRequestError,
)
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from fabric.errors import FabricError, InvalidSubject, NoResponders, Timeout
from sdk import Agent
from sdk.a2a import RpcFailure, parse_call, rpc_subject

from ._a2a import fabric_failure, relay, sse
from ._agents import AgentPool
from ._credentials import Credentials, Identity
from ._settings import GatewaySettings

__all__ = ["install_a2a_rest"]

_ERRORS: dict[int, type[A2AError]] = {code: cls for cls, code in JSON_RPC_ERROR_CODE_MAP.items()}


def rest_error(error: dict[str, Any]) -> JSONResponse:
    """A JSON-RPC error object as A2A's REST error response."""
    cls = _ERRORS.get(error.get("code", 0), InternalError)  # type: ignore[arg-type]
    payload = build_rest_error_payload(cls(str(error.get("message") or cls.__name__)))
    return JSONResponse(payload, status_code=int(payload["error"]["code"]))


def _fabric_rest_error(exc: FabricError, wait: float) -> JSONResponse:
    if isinstance(exc, NoResponders):
        payload = {"error": {"code": 404, "status": "NOT_FOUND", "message": str(exc)}}
        return JSONResponse(payload, status_code=404)
    if isinstance(exc, Timeout):
        message = f"the agent did not answer within {wait:g} s"
        payload = {"error": {"code": 504, "status": "DEADLINE_EXCEEDED", "message": message}}
        return JSONResponse(payload, status_code=504)
    return rest_error(fabric_failure(exc, None, wait)["error"])


def install_a2a_rest(
    app: FastAPI,
    pool: AgentPool,
    credentials: Credentials,
    settings: GatewaySettings,
    who_dependency: Callable[..., Awaitable[Identity]],
) -> None:
    """Add the HTTP+JSON routes under ``/a2a/NAME/``."""
    Who = Annotated[Identity, Depends(who_dependency)]
    wait = settings.a2a_timeout

    async def call(
        name: str, who: Identity, method: str, params: dict[str, Any]
    ) -> Response:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        if len(body) > settings.a2a_max_message:
            too_big = InvalidRequestError(message="Payload too large")
            payload = build_rest_error_payload(too_big)
            return JSONResponse(payload, status_code=int(payload["error"]["code"]))
        try:
            parsed = parse_call(body)
            subject = rpc_subject(name)
        except RpcFailure as failure:
            return rest_error(failure.response["error"])
        except InvalidSubject as exc:
            return _fabric_rest_error(NoResponders(str(exc)), wait)
        credentials.check_publish(who, subject)
        agent = await pool.get(who)
        if parsed.streaming:
            return await _stream(agent, subject, body.encode())
        try:
            reply = await agent.request(subject, body, timeout=wait)
        except FabricError as exc:
            return _fabric_rest_error(exc, wait)
        data = json.loads(relay(reply.data)[0])
        if "error" in data:
            return rest_error(data["error"])
        return JSONResponse(data["result"])

    async def _stream(agent: Agent, subject: str, body: bytes) -> Response:
        chunks = agent.stream(subject, body, timeout=wait)
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            return Response(status_code=204)
        except FabricError as exc:
            await chunks.aclose()
            return _fabric_rest_error(exc, wait)
        data = json.loads(relay(first.data)[0])
        if "error" in data:
            await chunks.aclose()
            return rest_error(data["error"])

        async def events() -> AsyncIterator[bytes]:
            try:
                yield sse(json.dumps(data["result"]).encode())
                async for chunk in chunks:
                    item = json.loads(relay(chunk.data)[0])
                    if "error" in item:
                        error = rest_error(item["error"]).body
                        yield sse(bytes(error), "error")
                        return
                    yield sse(json.dumps(item["result"]).encode())
            except FabricError as exc:
                yield sse(bytes(_fabric_rest_error(exc, wait).body), "error")
            finally:
                await chunks.aclose()  # a client that left cancels the agent's stream

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    async def json_body(request: Request) -> dict[str, Any] | JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as exc:
            return rest_error({"code": -32600, "message": f"the body is not JSON: {exc}"})
        if not isinstance(body, dict):
            return rest_error({"code": -32600, "message": "the body must be a JSON object"})
        return body

    # Routes with a verb after the id come first: `{task_id}` would match "ID:cancel" too.
    @app.post("/a2a/{name}/message:send", include_in_schema=False)
    async def message_send(name: str, request: Request, who: Who) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        return await call(name, who, "SendMessage", body)

    @app.post("/a2a/{name}/message:stream", include_in_schema=False)
    async def message_stream(name: str, request: Request, who: Who) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        return await call(name, who, "SendStreamingMessage", body)

    @app.post("/a2a/{name}/tasks/{task_id}:cancel", include_in_schema=False)
    async def cancel(name: str, task_id: str, request: Request, who: Who) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        return await call(name, who, "CancelTask", {**body, "id": task_id})

    @app.api_route(
        "/a2a/{name}/tasks/{task_id}:subscribe", methods=["GET", "POST"], include_in_schema=False
    )
    async def subscribe(name: str, task_id: str, who: Who) -> Response:
        return await call(name, who, "SubscribeToTask", {"id": task_id})

    @app.get("/a2a/{name}/tasks/{task_id}", include_in_schema=False)
    async def get_task(name: str, task_id: str, request: Request, who: Who) -> Response:
        params: dict[str, Any] = {"id": task_id}
        if "historyLength" in request.query_params:
            params["historyLength"] = request.query_params["historyLength"]
        return await call(name, who, "GetTask", params)

    @app.get("/a2a/{name}/tasks", include_in_schema=False)
    async def list_tasks(name: str, request: Request, who: Who) -> Response:
        return await call(name, who, "ListTasks", dict(request.query_params))
