"""The typed control calls (fabric/protocol/_calls.py): every call's request and answer
survive the real wire, untrusted headers either decode or raise ``RemoteProtocolError``, the
bytes are those the node and SDK always sent, and every shared name is spelled once."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import RemoteProtocolError
from fabric.protocol import (
    AGENT_HOLD,
    CONTROL_CALLS,
    NODE_RESOLVE,
    NODE_STATS,
    POOL_ALLOC,
    STATE_ACQUIRE,
    STATE_GET,
    STATE_PUT,
    STATE_RELEASE,
    STATE_STATS,
    AcquireRequest,
    AllocRequest,
    ControlCall,
    DirectTarget,
    Empty,
    GetAnswer,
    Header,
    Kind,
    NodeStatus,
    PayloadMessage,
    ReleaseAnswer,
    ResolveAnswer,
    WriteRequest,
    control_call,
    decode_header,
    encode_header,
)
from fabric.protocol._codec import fields_of

ROOT = Path(__file__).resolve().parents[2]
CALLS = sorted(CONTROL_CALLS.values(), key=lambda c: c.subject)
IDS = [c.subject for c in CALLS]

_text = st.text(max_size=40)
_required_text = st.text(min_size=1, max_size=40)
_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)

_targets = st.lists(
    st.builds(DirectTarget, _required_text, st.integers(0, 2**32), _text, _text), max_size=4
).map(tuple)
_payload_strategies: dict[type, st.SearchStrategy[Any]] = {
    ResolveAnswer: st.one_of(
        st.builds(ResolveAnswer, st.just(False), st.just(()), st.none() | _text),
        st.builds(ResolveAnswer, st.just(True), _targets, st.none() | _text),
    ),
    NodeStatus: st.builds(NodeStatus, st.dictionaries(_text, _ints | _text, max_size=6)),
}


def messages(cls: type) -> st.SearchStrategy[Any]:
    """Any valid instance of a control message class, derived from its fields."""
    if cls in _payload_strategies:
        return _payload_strategies[cls]
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for spec in fields_of(cls):
        if spec.kind is str:
            base = _required_text if spec.required else _text
        elif spec.kind is bool:
            base = st.booleans()
        else:
            base = _ints
        fields[spec.name] = base if spec.required else st.just(spec.default) | base
    return st.builds(cls, **fields)


def _through_wire(call: ControlCall[Any, Any], headers: dict[str, str] | None) -> Header:
    sent = Header(Kind.CONTROL, subject=call.subject, msg_id=7, headers=headers)
    return decode_header(encode_header(sent))


@pytest.mark.parametrize("call", CALLS, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_request_round_trips_through_the_wire(call: ControlCall[Any, Any], data: Any) -> None:
    request = data.draw(messages(call.request))
    header = _through_wire(call, call.encode_request(request))
    assert call.decode_request(header.headers) == request


@pytest.mark.parametrize("call", CALLS, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_answer_round_trips_through_the_wire(call: ControlCall[Any, Any], data: Any) -> None:
    answer = data.draw(messages(call.answer))
    headers, payload = call.encode_answer(answer)
    header = _through_wire(call, headers)
    assert call.decode_answer(header.headers, memoryview(payload)) == answer


@pytest.mark.parametrize("call", CALLS, ids=IDS)
@settings(max_examples=80, deadline=None)
@given(headers=st.none() | st.dictionaries(st.sampled_from(
    ["key", "size", "ref", "token", "expect", "version", "fence", "ttl_ms", "subject",
     "traceparent", "expires_ms", "released", "offset", "length", "received", "x"]),
    _text | _ints.map(str), max_size=6))
def test_untrusted_headers_decode_or_raise_remote_protocol_error(
    call: ControlCall[Any, Any], headers: dict[str, str] | None
) -> None:
    for decode in (call.decode_request, call.decode_answer):
        try:
            decode(headers)
        except RemoteProtocolError as exc:
            assert call.subject in str(exc)


@pytest.mark.parametrize("call", [c for c in CALLS if issubclass(c.answer, PayloadMessage)])
@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=64) | st.recursive(
    st.none() | st.booleans() | _ints | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
).map(msgpack.packb))
def test_untrusted_payload_answers_decode_or_raise(call: ControlCall[Any, Any], raw: bytes) -> None:
    try:
        call.decode_answer(None, raw)
    except RemoteProtocolError:
        pass


def test_wire_bytes_are_those_always_sent() -> None:
    """The header maps the node and SDK built by hand before the definitions existed."""
    assert STATE_PUT.encode_request(WriteRequest("k")) == {"key": "k"}
    assert STATE_PUT.encode_request(WriteRequest("k", token=3, expect=0)) == {
        "key": "k", "token": "3", "expect": "0"
    }
    assert STATE_STATS.encode_request(Empty()) == {}  # $state.* always carries a map
    assert AGENT_HOLD.encode_request(Empty()) == None  # noqa: E711  (nil, not {})
    assert STATE_ACQUIRE.encode_request(AcquireRequest("k", 1500)) == {"key": "k", "ttl_ms": "1500"}
    assert POOL_ALLOC.encode_request(AllocRequest(4096)) == {"size": "4096"}
    assert STATE_GET.encode_answer(GetAnswer(4)) == ({"version": "4"}, b"")
    assert STATE_RELEASE.encode_answer(ReleaseAnswer(True)) == ({"released": "1"}, b"")
    not_direct = (None, msgpack.packb({"direct": False}))
    assert NODE_RESOLVE.encode_answer(ResolveAnswer(False)) == not_direct
    target = DirectTarget("\0p", 3, "", "w")
    assert NODE_RESOLVE.encode_answer(ResolveAnswer(True, (target,), "s"))[1] == msgpack.packb(
        {"direct": True, "targets": [("\0p", 3, "", "w")], "span": "s"}
    )
    assert NODE_STATS.encode_answer(NodeStatus({"a": 1}))[1] == msgpack.packb({"a": 1})


def test_bad_arguments_name_the_call_and_the_header() -> None:
    with pytest.raises(RemoteProtocolError, match=r"\$state.put needs header 'key'"):
        STATE_PUT.decode_request({"expect": "1"})
    with pytest.raises(RemoteProtocolError, match=r"header 'expect' of \$state.put must be an int"):
        STATE_PUT.decode_request({"key": "k", "expect": "one"})
    with pytest.raises(RemoteProtocolError, match=r"\$pool.alloc needs header 'size'"):
        POOL_ALLOC.decode_request(None)
    with pytest.raises(RemoteProtocolError, match="must be 0 or 1"):
        STATE_RELEASE.decode_answer({"released": "yes"})
    with pytest.raises(RemoteProtocolError, match="unknown control subject"):
        control_call("$node.reboot")


def test_every_message_field_has_a_wire_type() -> None:
    for call in CALLS:
        for cls in (call.request, call.answer):
            assert dataclasses.is_dataclass(cls)
            if not issubclass(cls, PayloadMessage):
                fields_of(cls)  # raises TypeError for a field the headers cannot carry


# -- docs/protocol.md lists exactly these calls ------------------------------------------


def _doc_rows() -> dict[str, list[str]]:
    text = (ROOT / "docs" / "protocol.md").read_text()
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`(\$[a-z]+\.[a-z_]+)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = [cell.strip() for cell in m.group(2).split("|")]
    return rows


def test_protocol_doc_table_matches_the_definitions() -> None:
    rows = _doc_rows()
    expected = {c.subject: c.doc_row() for c in CONTROL_CALLS.values()}
    table = "\n".join(f"| `{s}` | " + " | ".join(r) + " |" for s, r in expected.items())
    assert rows == expected, f"docs/protocol.md's control-call table should read:\n{table}"


# -- one spelling ------------------------------------------------------------------------

_SHARED = re.compile(
    r"^(\$(node|agent|pool|dir|state|mesh)\.|_INBOX\.|_FABRIC\.|fabric-(prefer|sender|chunks)$)"
)


def test_shared_names_are_spelled_only_in_fabric_protocol() -> None:
    offenders = []
    for package in ("fabric", "sdk", "gateways"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "fabric" / "protocol"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                value = node.value if isinstance(node, ast.Constant) else None
                if isinstance(value, str) and _SHARED.match(value):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {value!r}")
    assert offenders == []
