"""Declaring fabric subjects as MCP tools: a name, a description and a pydantic model whose
JSON schema is the tool's ``inputSchema``."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from sdk import Agent, Msg, Subscription

from ._protocol import LIST_SUBJECT, TRACEPARENT, check_tool_name, tool_subject

__all__ = ["FabricTool", "ToolCall", "ToolService", "serve_tools", "tool"]

log = logging.getLogger("sdk.mcp")

M = TypeVar("M", bound=BaseModel)


@dataclass(slots=True)
class ToolCall:
    """What a tool function may want to know about the call besides its arguments."""

    #: The W3C trace context the MCP client sent in ``_meta`` ("" when none).
    traceparent: str
    #: The whole ``_meta`` object of the call.
    meta: dict[str, Any]


ToolFn = Callable[[Any, ToolCall], Awaitable[Any] | Any]


@dataclass(slots=True)
class FabricTool(Generic[M]):
    """One tool: ``fn(args: model, call: ToolCall)`` returns str, a dict, or a pydantic model
    (sent as text plus ``structuredContent``)."""

    name: str
    description: str
    model: type[M]
    fn: ToolFn

    def __post_init__(self) -> None:
        check_tool_name(self.name)

    def describe(self) -> dict[str, Any]:
        """The MCP ``Tool`` object (wire field names)."""
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.model.model_json_schema(),
        }


def tool(
    name: str, description: str, model: type[M]
) -> Callable[[ToolFn], FabricTool[M]]:
    """Decorator: ``@tool("add", "Adds two numbers", AddArgs)`` over ``async def add(args,
    call)``. Raises ValueError for a name MCP or a subject cannot carry."""

    def wrap(fn: ToolFn) -> FabricTool[M]:
        return FabricTool(name, description, model, fn)

    return wrap


def _text_result(text: str, *, error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": error}


class ToolService:
    """The tools one agent serves; ``aclose()`` stops serving them."""

    def __init__(self, agent: Agent, tools: Sequence[FabricTool[Any]]) -> None:
        self.agent = agent
        self.tools = {t.name: t for t in tools}
        self._listing = json.dumps([t.describe() for t in tools]).encode()
        self._subs: list[Subscription] = []
        #: Calls refused because their arguments failed the schema.
        self.rejected = 0

    async def _on_list(self, msg: Msg) -> bytes:
        return self._listing

    async def _on_call(self, msg: Msg) -> bytes:
        name = msg.subject.rsplit(".", 1)[-1]
        found = self.tools.get(name)
        if found is None:  # a subscription outlived its tool: say so, typed
            return json.dumps(_text_result(f"unknown tool {name!r}", error=True)).encode()
        try:
            body = json.loads(bytes(msg.data))
            arguments = body.get("arguments") or {}
            meta = body.get("_meta") or {}
            if not isinstance(meta, dict):
                meta = {}
            args = found.model.model_validate(arguments)
        except ValidationError as exc:
            # MCP (2025-11-25 on): arguments that fail the schema are a tool execution error the
            # model can read and correct, not a protocol error.
            self.rejected += 1
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors()
            )
            return json.dumps(_text_result(f"invalid arguments: {fields}", error=True)).encode()
        except (ValueError, AttributeError) as exc:
            self.rejected += 1
            return json.dumps(_text_result(f"malformed call: {exc}", error=True)).encode()
        traceparent = str(meta.get(TRACEPARENT) or msg.headers.get(TRACEPARENT, "") or "")
        try:
            result = found.fn(args, ToolCall(traceparent, meta))
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            log.info("tool %s failed: %r", name, exc)
            return json.dumps(_text_result(f"{type(exc).__name__}: {exc}", error=True)).encode()
        return json.dumps(_result(result)).encode()

    async def aclose(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.aclose()


def _result(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        out = _text_result(json.dumps(value))
        out["structuredContent"] = value
        return out
    return _text_result(str(value))


async def serve_tools(agent: Agent, *tools: FabricTool[Any]) -> ToolService:
    """Serve ``tools`` from ``agent``: listed to MCP clients (gateway ``/mcp``, ``fabric mcp``,
    fabric sessions) and callable by them.

    Raises:
        ValueError: two tools with one name. ConnectionLost: the node cannot be reached.
    """
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate tool names in {names}")
    service = ToolService(agent, tools)
    service._subs.append(await agent.serve(LIST_SUBJECT, service._on_list))
    for t in tools:
        service._subs.append(
            await agent.serve(tool_subject(t.name), service._on_call, queue=t.name)
        )
    await agent.flush()
    return service
