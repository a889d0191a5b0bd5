"""JSON-RPC 2.0 for A2A without HTTP: one request object in, one response (or a stream of
responses) out, through a2a-sdk's ``RequestHandler``.

The same checks and codes as a2a-sdk's own HTTP dispatcher (``a2a.server.routes``), which needs
a Starlette request: -32700 parse error, -32600 invalid request (batches included), -32601
unknown method, -32602 params that do not parse, and every ``A2AError`` mapped by
``build_error_response``. Nothing here does I/O; the fabric driver is ``_server.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.jsonrpc_models import InternalError, JSONRPCError, MethodNotFoundError
from a2a.server.request_handlers import RequestHandler, build_error_response
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    SendMessageRequest,
    SendMessageResponse,
    SubscribeToTaskRequest,
    Task,
)
from a2a.utils import proto_utils
from a2a.utils.errors import (
    A2AError,
    InvalidParamsError,
    InvalidRequestError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.message import Message as Proto

from ._protocol import STREAMING_METHODS

__all__ = ["Call", "RpcDispatcher", "error_response", "parse_call"]

_MODELS: dict[str, type[Proto]] = {
    "SendMessage": SendMessageRequest,
    "SendStreamingMessage": SendMessageRequest,
    "GetTask": GetTaskRequest,
    "ListTasks": ListTasksRequest,
    "CancelTask": CancelTaskRequest,
    "SubscribeToTask": SubscribeToTaskRequest,
}
#: Methods of the spec this binding answers with UnsupportedOperation (push notifications
#: need an HTTP callback; the extended card needs authentication the fabric does per agent).
_UNSUPPORTED = frozenset({
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
})

RequestId = str | int | None


class RpcFailure(Exception):
    """A request that gets an error response instead of a dispatch."""

    def __init__(self, response: dict[str, Any]) -> None:
        super().__init__(response["error"].get("message", ""))
        self.response = response


class Call:
    """One parsed JSON-RPC request: its id, method and proto params."""

    __slots__ = ("method", "params", "request_id")

    def __init__(self, request_id: RequestId, method: str, params: Proto) -> None:
        self.request_id = request_id
        self.method = method
        self.params = params

    @property
    def streaming(self) -> bool:
        return self.method in STREAMING_METHODS


def error_response(request_id: RequestId, error: A2AError | JSONRPCError) -> dict[str, Any]:
    """A JSON-RPC error response object for ``error``."""
    return build_error_response(request_id, error)


def parse_call(raw: bytes | memoryview | str | Any) -> Call:
    """Parse and check one JSON-RPC request (bytes, text, or an already decoded object).

    Raises:
        RpcFailure: holding the JSON-RPC error response to send back.
    """
    body: Any = raw
    if isinstance(raw, bytes | memoryview | str):
        try:
            body = json.loads(bytes(raw) if isinstance(raw, memoryview) else raw)
        except (ValueError, UnicodeDecodeError) as exc:
            parse_error = JSONRPCError(code=-32700, message=f"Parse error: {exc}")
            raise RpcFailure(error_response(None, parse_error)) from None
    if not isinstance(body, dict):
        why = "batch requests are not supported" if isinstance(body, list) else "not an object"
        raise RpcFailure(error_response(None, InvalidRequestError(message=why)))
    request_id = body.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | None):
        raise RpcFailure(
            error_response(None, InvalidRequestError(message="id must be a string or integer"))
        )
    method = body.get("method")
    if body.get("jsonrpc") != "2.0" or not isinstance(method, str) or not method:
        raise RpcFailure(
            error_response(
                request_id,
                InvalidRequestError(message="'jsonrpc' must be '2.0' and 'method' a string"),
            )
        )
    if method in _UNSUPPORTED:
        raise RpcFailure(
            error_response(request_id, UnsupportedOperationError(message=f"{method}: unsupported"))
        )
    model = _MODELS.get(method)
    if model is None:
        raise RpcFailure(error_response(request_id, MethodNotFoundError()))
    params = body.get("params", {})
    try:
        # Unknown fields are ignored, as a2a-sdk's HTTP dispatcher does (forward compatible).
        parsed = ParseDict(params, model(), ignore_unknown_fields=True)
    except Exception as exc:
        raise RpcFailure(
            error_response(request_id, InvalidParamsError(data={"parseError": str(exc)}))
        ) from None
    return Call(request_id, method, parsed)


def _ok(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


class RpcDispatcher:
    """Runs parsed calls against an a2a-sdk ``RequestHandler``."""

    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler

    def _context(self, call: Call) -> ServerCallContext:
        context = ServerCallContext()
        context.state["method"] = call.method
        context.state["request_id"] = call.request_id
        context.tenant = getattr(call.params, "tenant", "")
        return context

    async def call(self, call: Call) -> dict[str, Any]:
        """The response object of a unary method (an error response for any failure)."""
        try:
            return _ok(call.request_id, await self._unary(call))
        except A2AError as exc:
            return error_response(call.request_id, exc)
        except Exception as exc:
            return error_response(call.request_id, InternalError(message=str(exc)))

    async def _unary(self, call: Call) -> Any:
        handler, context, params = self.handler, self._context(call), call.params
        if call.method == "SendMessage":
            assert isinstance(params, SendMessageRequest)
            result = await handler.on_message_send(params, context)
            if isinstance(result, Task):
                return MessageToDict(SendMessageResponse(task=result))
            return MessageToDict(SendMessageResponse(message=result))
        if call.method == "GetTask":
            assert isinstance(params, GetTaskRequest)
            task = await handler.on_get_task(params, context)
        elif call.method == "CancelTask":
            assert isinstance(params, CancelTaskRequest)
            task = await handler.on_cancel_task(params, context)
        elif call.method == "ListTasks":
            assert isinstance(params, ListTasksRequest)
            return MessageToDict(await handler.on_list_tasks(params, context))
        else:
            raise UnsupportedOperationError(message=f"{call.method} is a streaming method")
        if task is None:
            raise TaskNotFoundError
        return MessageToDict(task)

    async def stream(self, call: Call) -> AsyncIterator[dict[str, Any]]:
        """Response objects of a streaming method, in order; an error ends the stream."""
        handler, context, params = self.handler, self._context(call), call.params
        try:
            if call.method == "SendStreamingMessage":
                assert isinstance(params, SendMessageRequest)
                events = handler.on_message_send_stream(params, context)
            elif call.method == "SubscribeToTask":
                assert isinstance(params, SubscribeToTaskRequest)
                events = handler.on_subscribe_to_task(params, context)
            else:
                raise UnsupportedOperationError(message=f"{call.method} does not stream")
            async for event in events:
                yield _ok(call.request_id, MessageToDict(proto_utils.to_stream_response(event)))
        except A2AError as exc:
            yield error_response(call.request_id, exc)
        except Exception as exc:
            yield error_response(call.request_id, InternalError(message=str(exc)))
