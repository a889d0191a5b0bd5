"""Errors name what was called and say what to do next, on both sides of a request."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from typing import Any

import pytest
from pydantic import BaseModel

from fabric.errors import (
    BadHandlerResult,
    ConnectionLost,
    PayloadTooLarge,
    RemoteError,
    size_text,
)
from sdk import Msg, connect

pytestmark = pytest.mark.timeout(60)


class Answer(BaseModel):
    text: str


@pytest.mark.parametrize("direct", [True, False])
async def test_a_remote_error_names_the_called_subject_and_the_responder_logs_it(
    node, caplog, direct
):
    caplog.set_level(logging.WARNING, logger="sdk.agent")
    async with (
        connect("responder", node.url) as responder,
        connect("caller", node.url, direct=direct) as caller,
    ):

        async def fails(msg: Msg) -> bytes:
            raise ValueError("the model is not loaded")

        await responder.serve("tasks.summarise", fails)
        await responder.flush()
        with pytest.raises(RemoteError) as caught:
            await caller.request("tasks.summarise", b"x", timeout=5)
    error = caught.value
    assert error.subject == "tasks.summarise"
    assert "_INBOX" not in str(error)
    assert "ValueError: the model is not loaded" in str(error)
    assert "in agent responder" in str(error)
    logged = [r for r in caplog.records if r.name == "sdk.agent" and r.levelno >= logging.ERROR]
    assert logged, "the responder did not log its handler's exception"
    assert "tasks.summarise" in logged[0].getMessage() and "fails" in logged[0].getMessage()
    assert logged[0].exc_info is not None  # with the traceback, on the responder's side


async def test_gather_errors_name_the_called_subject(node):
    async with connect("responder", node.url) as responder, connect("caller", node.url) as caller:

        async def fails(msg: Msg) -> bytes:
            raise RuntimeError("boom")

        await responder.serve("review.essay", fails)
        await responder.flush()
        result = await caller.gather("review.essay", b"x", deadline=5)
        assert len(result.errors) == 1
        assert result.errors[0].subject == "review.essay"
        assert not result.complete or result.missing == 0


@pytest.mark.parametrize("returned", [{"a": 1}, [1, 2], 3.5])
async def test_a_handler_returning_a_dict_fails_at_the_handler_with_what_to_return(
    node, caplog, returned
):
    caplog.set_level(logging.WARNING, logger="sdk.agent")
    async with connect("responder", node.url) as responder, connect("caller", node.url) as caller:

        async def answer(msg: Msg) -> Any:
            return returned

        await responder.serve("svc.answer", answer)
        await responder.flush()
        with pytest.raises(BadHandlerResult) as caught:
            await caller.request("svc.answer", b"", timeout=5)
    text = str(caught.value)
    assert "return bytes, str or a pydantic model" in text
    assert f"returned a {type(returned).__name__}" in text and "answer" in text
    assert caught.value.subject == "svc.answer"
    assert any("return bytes, str or a pydantic model" in r.getMessage() for r in caplog.records)


async def test_models_str_and_bytes_are_still_fine(node):
    async with connect("responder", node.url) as responder, connect("caller", node.url) as caller:
        await responder.serve("svc.model", lambda m: Answer(text="ok"))
        await responder.serve("svc.none", lambda m: None)
        await responder.flush()
        assert (await caller.request("svc.model", timeout=5)).parse(Answer).text == "ok"
        assert bytes((await caller.request("svc.none", timeout=5)).data) == b""


def test_payload_too_large_speaks_in_units_and_says_how_to_raise_the_limit():
    error = PayloadTooLarge(subject="blobs.put", size=80 * 1024 * 1024 + 512, limit=64 << 20)
    text = str(error)
    assert "80 MiB" in text and "64 MiB" in text
    assert "FABRIC_MAX_PAYLOAD" in text and "--max-payload" in text
    assert size_text(512) == "512 B" and size_text(1536) == "1.5 KiB"


async def test_payload_too_large_from_the_sdk_before_sending(tmp_path, fabric_env):
    from procs import start_node

    node = await start_node(tmp_path / "small.sock", fabric_env, extra=["--max-payload", "1024"])
    try:
        async with connect("big", node.url) as agent:
            with pytest.raises(PayloadTooLarge) as caught:
                await agent.publish("x.y", b"z" * 2048)
        assert "2 KiB" in str(caught.value) and "1 KiB" in str(caught.value)
        assert "--max-payload" in str(caught.value)
    finally:
        await node.stop()


async def test_a_closed_tcp_port_is_refused_at_once_with_the_next_step():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens
    url = f"tcp://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as caught:
        async with connect("nobody", url, reconnect=False):
            pass
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, elapsed  # was a 5 s handshake timeout
    assert f"connection refused: is a node running at {url}?" in str(caught.value)


async def test_a_missing_unix_socket_says_how_to_start_a_node(tmp_path):
    with pytest.raises(ConnectionLost) as caught:
        async with connect("nobody", f"unix://{tmp_path}/none.sock", reconnect=False):
            pass
    assert "is a node running" in str(caught.value) and "fabric node" in str(caught.value)


async def test_fabric_status_without_a_node_says_it_once_with_the_next_step(tmp_path, fabric_env):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabric", "status", "--url", f"unix://{tmp_path}/none.sock",
        env=fabric_env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    assert process.returncode == 1
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].count("cannot reach node") == 1, lines[0]  # was said twice
    assert "start one with `fabric node`" in lines[0] and "--url" in lines[0]
