"""A2A at the gateway: every fabric agent served with ``sdk.a2a.serve_a2a`` becomes an A2A agent
over HTTP, in A2A's JSON-RPC binding.

* ``GET /a2a/NAME/.well-known/agent-card.json``: the card the agent serves on the fabric, with the
  gateway's JSON-RPC URL put first in ``supportedInterfaces`` (the fabric one stays listed).
* ``POST /a2a/NAME/``: one JSON-RPC request. Unary methods (``SendMessage``, ``GetTask``,
  ``CancelTask``, ``ListTasks``) are one fabric request; ``SendStreamingMessage`` and
  ``SubscribeToTask`` are one fabric stream, relayed as Server-Sent Events in order. A client that
  disconnects cancels the fabric stream, and the agent cancels the task it was reading.

The gateway checks the JSON-RPC envelope itself (parse error -32700, invalid request -32600,
unknown method -32601, bad params -32602, a message over ``a2a_max_message`` -32600), so bad
input never reaches an agent; the agent's a2a-sdk request handler does the rest. Fabric errors
become the protocol's: an unknown agent is HTTP 404 (the URL names nothing), a deadline -32603.
"""

# No `from __future__ import annotations`: FastAPI resolves the route signatures at runtime.
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from a2a.server.jsonrpc_models import InternalError
from a2a.utils.errors import InvalidRequestError
from fastapi import Depends, FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from fabric.errors import FabricError, InvalidSubject, NoResponders, PayloadTooLarge, Timeout
from sdk import Agent
from sdk.a2a import RpcFailure, card_subject, error_response, parse_call, rpc_subject

from ._agents import AgentPool
from ._credentials import Credentials, Identity
from ._settings import GatewaySettings
from ._status import error_body

__all__ = ["fabric_failure", "install_a2a", "relay", "sse"]

Name = Annotated[str, Path(description="The agent's fabric name.", max_length=256)]


def _not_found(name: str, request_id: Any = None) -> JSONResponse:
    body = error_response(
        request_id, InvalidRequestError(message=f"no A2A agent named {name!r} on the fabric")
    )
    return JSONResponse(body, status_code=404)


def relay(raw: bytes | memoryview) -> tuple[bytes, bool]:
    """A fabric reply as the HTTP binding sends it (without the fabric's ``agent`` member), and
    whether it is an error response. An agent that answers something other than a JSON-RPC
    response gets -32603 in its place."""
    try:
        data = json.loads(bytes(raw))
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("jsonrpc") != "2.0":
        bad = InternalError(message="the agent answered with something other than JSON-RPC")
        return json.dumps(error_response(None, bad)).encode(), True
    data.pop("fabric", None)
    return json.dumps(data).encode(), "error" in data


def _strip(raw: bytes | memoryview) -> bytes:
    return relay(raw)[0]


def fabric_failure(exc: FabricError, request_id: Any, wait: float) -> dict[str, Any]:
    if isinstance(exc, PayloadTooLarge):
        return error_response(request_id, InvalidRequestError(message="Payload too large"))
    if isinstance(exc, Timeout):
        why = f"the agent did not answer within {wait:g} s"
        return error_response(request_id, InternalError(message=why, data={"fabric": exc.code}))
    return error_response(
        request_id, InternalError(message=str(exc), data={"fabric": exc.code})
    )


def install_a2a(
    app: FastAPI,
    pool: AgentPool,
    credentials: Credentials,
    settings: GatewaySettings,
    identity: Callable[..., Identity],
) -> Callable[..., Awaitable[Identity]]:
    """Add the ``/a2a/`` JSON-RPC routes to the gateway app; returns the caller-identity
    dependency they use (the HTTP+JSON routes of ``_a2a_rest`` share it)."""

    async def who_async(authorization: Annotated[str | None, Header()] = None) -> Identity:
        # The shared dependency is a plain function, which FastAPI runs in a worker thread;
        # it does no I/O, so calling it here saves a thread hop on every A2A call.
        return identity(authorization)

    Who = Annotated[Identity, Depends(who_async)]

    # Not in the gateway's OpenAPI description: A2A describes these endpoints itself (the
    # Agent Card and the A2A specification's JSON-RPC binding), and their answers follow it
    # (JSON-RPC errors at HTTP 200), not the REST shapes of /v1/.
    @app.get("/a2a/{name}/.well-known/agent-card.json", include_in_schema=False)
    async def card(name: Name, request: Request, who: Who) -> Response:
        try:
            subject = card_subject(name)
        except InvalidSubject:
            return _not_found(name)
        credentials.check_publish(who, subject)
        agent = await pool.get(who)
        try:
            reply = await agent.request(subject, b"", timeout=settings.default_timeout)
        except NoResponders:
            return JSONResponse(
                error_body("not_found", f"no A2A agent named {name!r}", subject=subject), 404
            )
        try:
            data = json.loads(bytes(reply.data))
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            why = f"agent {name!r} served a card that is not a JSON object: {exc}"
            return JSONResponse(error_body("bad_card", why, subject=subject), 502)
        here = f"{str(request.base_url).rstrip('/')}/a2a/{name}/"
        listed = data.get("supportedInterfaces")
        others = [  # the agent's own non-HTTP interfaces (the fabric one); HTTP ones are ours
            i
            for i in (listed if isinstance(listed, list) else [])
            if isinstance(i, dict) and i.get("protocolBinding") not in ("JSONRPC", "HTTP+JSON")
        ]
        data["supportedInterfaces"] = [
            {"url": here, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": here.rstrip("/"), "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
            *others,
        ]
        return JSONResponse(data)

    async def rpc(name: str, request: Request, who: Identity) -> Response:
        body = await request.body()  # BodyLimit already capped it at max_body
        if len(body) > settings.a2a_max_message:
            too_big = InvalidRequestError(
                message=f"Payload too large: {len(body)} bytes, limit {settings.a2a_max_message}"
            )
            return JSONResponse(error_response(None, too_big))
        try:
            call = parse_call(body)
        except RpcFailure as failure:
            return JSONResponse(failure.response)
        try:
            subject = rpc_subject(name)
        except InvalidSubject:
            return _not_found(name, call.request_id)
        credentials.check_publish(who, subject)
        agent = await pool.get(who)
        wait = settings.a2a_timeout
        if call.streaming:
            return await _stream(agent, subject, name, body, call.request_id, wait)
        try:
            reply = await agent.request(subject, body, timeout=wait)
        except NoResponders:
            return _not_found(name, call.request_id)
        except FabricError as exc:
            return JSONResponse(fabric_failure(exc, call.request_id, wait))
        return Response(_strip(reply.data), media_type="application/json")

    @app.post("/a2a/{name}/", include_in_schema=False)
    async def rpc_slash(name: Name, request: Request, who: Who) -> Response:
        return await rpc(name, request, who)

    @app.post("/a2a/{name}", include_in_schema=False)
    async def rpc_bare(name: Name, request: Request, who: Who) -> Response:
        return await rpc(name, request, who)

    return who_async


async def _stream(
    agent: Agent, subject: str, name: str, body: bytes, request_id: Any, wait: float
) -> Response:
    chunks = agent.stream(subject, body, timeout=wait)
    try:
        # The first chunk decides between an HTTP error and a stream (an unknown agent is
        # a 404, not an SSE stream holding one error).
        first = await chunks.__anext__()
    except StopAsyncIteration:
        first = None
    except NoResponders:
        await chunks.aclose()
        return _not_found(name, request_id)
    except FabricError as exc:
        await chunks.aclose()
        return JSONResponse(fabric_failure(exc, request_id, wait))

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is None:
                return
            yield _event(first.data)
            async for chunk in chunks:
                yield _event(chunk.data)
        except FabricError as exc:
            yield sse(json.dumps(fabric_failure(exc, request_id, wait)).encode(), "error")
        finally:
            # Runs on the end, on an error, and when the client went away (Starlette cancels
            # this generator): the cancel reaches the agent, which cancels the task.
            await chunks.aclose()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(raw: bytes | memoryview) -> bytes:
    # As a2a-sdk's own server does: an error response goes out as an `error` event, which
    # its client raises as the typed error.
    data, error = relay(raw)
    return sse(data, "error" if error else "")


def sse(data: bytes, event: str = "") -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"
