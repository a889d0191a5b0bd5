"""Unknown and malformed control calls against a real node: each is answered with a typed
error naming what is wrong, and the node keeps serving that session and everyone else."""

from __future__ import annotations

import asyncio
import socket

import msgpack
import pytest
from procs import raw_frame, read_raw_frame

from fabric.errors import RemoteProtocolError
from fabric.protocol import (
    DIR_INVALIDATE,
    NODE_STATS,
    POOL_ALLOC,
    STATE_ACQUIRE,
    STATE_GET,
    STATE_PUT,
    Header,
    Kind,
    encode_header,
)
from sdk import connect

pytestmark = pytest.mark.timeout(90)


def _raw_connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def _exchange(sock: socket.socket, header: Header, payload: bytes = b"") -> tuple[list, bytes]:
    sock.sendall(raw_frame(encode_header(header), payload))
    raw, body = read_raw_frame(sock)
    return msgpack.unpackb(raw), body


async def test_bad_control_calls_get_typed_errors_and_the_node_stays_up(node, agent_procs):
    await agent_procs("echo", node.url)
    hostile = await asyncio.to_thread(_raw_connect, str(node.socket))
    try:
        hello = Header(Kind.HELLO, msg_id=1)
        welcome, _ = await asyncio.to_thread(
            _exchange, hostile, hello, msgpack.packb({"name": "hostile", "labels": {}})
        )
        assert welcome[1] == Kind.WELCOME
        calls = [
            ("$node.reboot", None, "unknown control subject"),
            ("$state.explode", {"key": "k"}, "unknown control subject"),
            (STATE_PUT.subject, {"expect": "1"}, "$state.put needs header 'key'"),
            (STATE_PUT.subject, {"key": "k", "token": "seven"}, "header 'token' of $state.put"),
            (STATE_ACQUIRE.subject, {"key": "k", "ttl_ms": ""}, "needs header 'ttl_ms'"),
            (POOL_ALLOC.subject, {"size": "big"}, "header 'size' of $pool.alloc"),
            (DIR_INVALIDATE.subject, None, "not a call an agent makes"),
        ]
        for msg_id, (subject, headers, expected) in enumerate(calls, start=10):
            call = Header(Kind.CONTROL, subject=subject, msg_id=msg_id, headers=headers)
            answer, payload = await asyncio.to_thread(_exchange, hostile, call)
            assert answer[1] == Kind.ERR and answer[4] == msg_id, (subject, answer)
            code, message = msgpack.unpackb(payload)
            assert code == "remote_protocol_error" and expected in message, (subject, message)
        # The same session still gets answers.
        ok = Header(Kind.CONTROL, subject=NODE_STATS.subject, msg_id=99)
        answer, payload = await asyncio.to_thread(_exchange, hostile, ok)
        assert answer[1] == Kind.CONTROL and answer[4] == 99
        assert NODE_STATS.decode_answer(None, payload).status["stats"]["malformed"] >= len(calls)

        async with connect("client", node.url) as client:
            # Another agent never noticed, and the SDK gets the typed error for a bad call.
            assert (await client.request("svc.echo", b"fine", timeout=5)).text() == "fine"
            with pytest.raises(RemoteProtocolError, match="needs header 'key'"):
                await client._core.conn.call(STATE_GET.subject, {}, timeout=5)
            await client.state.put("k", b"v")
            assert bytes((await client.state.get("k"))[0]) == b"v"
    finally:
        hostile.close()
