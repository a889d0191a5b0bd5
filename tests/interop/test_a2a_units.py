"""The A2A binding's pure parts: the JSON-RPC request parser and the subject helpers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.a2a._dispatch import Call, RpcFailure, parse_call
from sdk.a2a._protocol import (
    card_subject,
    fabric_url,
    group_subject,
    name_from_url,
    rpc_subject,
)
from sdk.a2a._server import _is_final, _task_id

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def check(raw: bytes | str | object) -> None:
    """The parser's one rule: a Call, or RpcFailure holding a JSON-RPC 2.0 error response."""
    try:
        call = parse_call(raw)
    except RpcFailure as failure:
        response = failure.response
        assert response["jsonrpc"] == "2.0"
        assert isinstance(response["error"]["code"], int)
        assert response["error"]["message"]
        json.dumps(response)  # it can be sent as it is
    else:
        assert isinstance(call, Call)


@given(st.binary(max_size=256))
def test_any_bytes_parse_or_fail_with_a_json_rpc_error(raw: bytes) -> None:
    check(raw)


@given(json_values)
def test_any_json_value_parses_or_fails_with_a_json_rpc_error(value: object) -> None:
    check(json.dumps(value))


@given(
    st.sampled_from(["SendMessage", "SendStreamingMessage", "GetTask", "CancelTask", "X", ""]),
    json_values,
    st.one_of(st.none(), st.integers(), st.text(max_size=8), st.booleans()),
)
def test_envelopes_with_any_params(method: str, params: object, request_id: object) -> None:
    check({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff\xfe", -32700),
        (b"{", -32700),
        (b"[]", -32600),
        (b'{"jsonrpc": "2.0", "id": true, "method": "GetTask"}', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "Nope"}', -32601),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": {}}}', -32602),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "GetExtendedAgentCard"}', -32004),
    ],
)
def test_error_codes(raw: bytes, code: int) -> None:
    with pytest.raises(RpcFailure) as failure:
        parse_call(raw)
    assert failure.value.response["error"]["code"] == code


def test_streaming_methods_are_flagged() -> None:
    body = {"jsonrpc": "2.0", "id": "a", "method": "SendStreamingMessage", "params": {}}
    assert parse_call(json.dumps(body)).streaming
    body["method"] = "GetTask"
    assert not parse_call(json.dumps(body)).streaming


def test_subjects_and_urls() -> None:
    assert card_subject("llm") == "a2a.llm.card"
    assert rpc_subject("llm") == "a2a.llm.rpc"
    assert group_subject("reviewers") == "a2a.group.reviewers.rpc"
    assert name_from_url(fabric_url("llm")) == "llm"
    with pytest.raises(ValueError):
        name_from_url("http://x/")


def test_stream_end_and_task_id_detection() -> None:
    status = {"state": "TASK_STATE_WORKING"}
    working = {"result": {"statusUpdate": {"taskId": "t1", "status": status}}}
    done = {"result": {"task": {"id": "t1", "status": {"state": "TASK_STATE_COMPLETED"}}}}
    assert _task_id(working) == "t1" and not _is_final(working)
    assert _task_id(done) == "t1" and _is_final(done)
    assert _is_final({"error": {"code": -32603, "message": "x"}})
    assert _is_final({"result": {"message": {"messageId": "m"}}})
