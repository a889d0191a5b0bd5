"""The MCP binding's pure parts: a tool's call handler against any payload, tool names."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sdk import Msg
from sdk.mcp import ToolCall, ToolService, tool, tool_subject
from sdk.mcp._protocol import check_tool_name


class Args(BaseModel):
    a: int
    b: int


@tool("add", "Adds.", Args)
async def add(args: Args, call: ToolCall) -> dict[str, Any]:
    return {"sum": args.a + args.b, "traceparent": call.traceparent}


SERVICE = ToolService(None, [add])  # type: ignore[arg-type]  # the handler never uses the agent


def call(payload: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    msg = Msg(tool_subject("add"), payload, headers=headers)
    return dict(json.loads(asyncio.run(SERVICE._on_call(msg))))


@settings(max_examples=200)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_payload_is_a_call_tool_result(payload: bytes) -> None:
    result = call(payload)
    assert isinstance(result["content"], list) and result["content"][0]["type"] == "text"
    assert isinstance(result["isError"], bool)


def test_valid_call_and_schema_failures() -> None:
    ok = call(json.dumps({"arguments": {"a": 1, "b": 2}}).encode(), {"traceparent": "tp"})
    assert ok["isError"] is False and ok["structuredContent"] == {"sum": 3, "traceparent": "tp"}
    bad = call(json.dumps({"arguments": {"a": "x"}}).encode())
    assert bad["isError"] is True
    assert "a:" in bad["content"][0]["text"] and "b:" in bad["content"][0]["text"]


@pytest.mark.parametrize("name", ["", "a.b", "a b", "x" * 65, "tool*", "é"])
def test_tool_names_that_a_subject_cannot_carry(name: str) -> None:
    with pytest.raises(ValueError):
        check_tool_name(name)
