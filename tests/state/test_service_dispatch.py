"""``StateService`` dispatches ``$state.*`` calls by their protocol definitions, on every
backend: arguments decoded and answers encoded by the definition, identities from the node,
and bad arguments refused with ``RemoteProtocolError`` before the backend is touched."""

from __future__ import annotations

import pytest

from fabric.errors import Fenced, NotFound, RemoteProtocolError
from fabric.protocol import (
    STATE_ACQUIRE,
    STATE_CALLS,
    STATE_GET,
    STATE_PUT,
    STATE_RELEASE,
    STATE_STATS,
    AcquireRequest,
    KeyRequest,
    ReleaseRequest,
    WriteRequest,
)
from fabric.state import StateBackend, StateService


async def test_calls_go_through_their_definitions(backend: StateBackend) -> None:
    service = StateService(backend)

    async def call(definition, request, payload=b""):  # type: ignore[no-untyped-def]
        headers = definition.encode_request(request)
        out, data = await service.call(definition.op, "planner", "1", headers, payload)
        return definition.decode_answer(out), data

    put, _ = await call(STATE_PUT, WriteRequest("notes"), b"v1")
    got, data = await call(STATE_GET, KeyRequest("notes"))
    assert got.version == put.version and bytes(data) == b"v1"
    lease, _ = await call(STATE_ACQUIRE, AcquireRequest("notes", 30_000))
    await call(STATE_ACQUIRE, AcquireRequest("notes", 30_000))  # a new instance fences it
    with pytest.raises(Fenced):
        await call(STATE_PUT, WriteRequest("notes", token=lease.token), b"stale")
    released, _ = await call(STATE_RELEASE, ReleaseRequest("notes", lease.token))
    assert released.released is False
    stats, _ = await call(STATE_STATS, STATE_STATS.request())
    assert stats.keys >= 1
    # Keys are the agent's own: another agent does not see them.
    with pytest.raises(NotFound):
        await service.call("get", "other", "2", {"key": "notes"}, b"")


@pytest.mark.parametrize(
    ("op", "headers", "message"),
    [
        ("explode", {"key": "k"}, "unknown state operation 'explode'"),
        ("put", {}, "$state.put needs header 'key'"),
        ("put", {"key": "k", "expect": "x"}, "header 'expect' of $state.put must be an integer"),
        ("renew", {"key": "k", "token": "1"}, "$state.renew needs header 'ttl_ms'"),
        ("release", {"key": "k", "token": "1.5"}, "header 'token' of $state.release"),
        ("open_blob", {"ref": ""}, "$state.open_blob needs header 'ref'"),
    ],
)
async def test_bad_arguments_are_remote_protocol_errors(
    op: str, headers: dict[str, str], message: str
) -> None:
    from fabric.state import EmbeddedBackend

    service = StateService(EmbeddedBackend())
    try:
        with pytest.raises(RemoteProtocolError) as caught:
            await service.call(op, "planner", "1", headers, b"")
        assert message in str(caught.value)
    finally:
        await service.aclose()


def test_every_state_call_has_a_handler() -> None:
    from fabric.state import _service

    assert set(_service._DISPATCH) == set(STATE_CALLS)
