"""Direct requests between agents on one host, with the node as directory."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections import Counter

import pytest

from fabric.framing import frame_prefix
from fabric.wire import Header, Kind, encode_header
from sdk import ConnectionLost, NoResponders, Timeout, connect

pytestmark = pytest.mark.timeout(90)


async def _frames_in(agent) -> int:  # type: ignore[no-untyped-def]
    return int((await agent.node_status())["stats"]["frames_in"])


async def test_requests_bypass_the_node_once_resolved(node, agent_procs):
    await agent_procs("echo", node.url)
    async with connect("client", node.url) as client:
        assert (await client.request("svc.echo", b"warm-up", timeout=5)).text() == "warm-up"
        before = await _frames_in(client)
        for i in range(50):
            assert (await client.request("svc.echo", f"m{i}", timeout=5)).text() == f"m{i}"
        after = await _frames_in(client)
    # Only the two $node.stats calls crossed the node, not the 100 request/reply frames.
    assert after - before <= 4


async def test_directory_follows_interest_changes(node, agent_procs):
    await agent_procs("echo", node.url, "echo-0")
    async with connect("client", node.url) as client:
        assert (await client.request("svc.who", b"", timeout=5)).text() == "echo-0"
        await agent_procs("echo", node.url, "echo-1")  # joins the queue group
        await client.flush()  # the node's invalidation reached us before its PONG
        seen = Counter()
        for _ in range(20):
            seen[(await client.request("svc.who", b"", timeout=5)).text()] += 1
        assert set(seen) == {"echo-0", "echo-1"}


async def test_unsubscribed_responder_falls_back_to_the_node(node):
    async with connect("client", node.url) as client, connect("server", node.url) as server:

        async def answer(msg):  # type: ignore[no-untyped-def]
            return b"yes"

        sub = await server.serve("svc.maybe", answer)
        await server.flush()
        assert (await client.request("svc.maybe", b"", timeout=5)).text() == "yes"
        await sub.aclose()
        await server.flush()
        with pytest.raises(NoResponders):
            await client.request("svc.maybe", b"", timeout=5)


async def test_responder_killed_mid_request_is_an_error_not_a_hang(node, agent_procs):
    echo = await agent_procs("echo", node.url)
    async with connect("client", node.url) as client:
        await client.request("svc.echo", b"", timeout=5)  # resolved, direct link open
        slow = asyncio.ensure_future(client.request("svc.slow", b"30", timeout=20))
        await asyncio.sleep(0.2)  # let the request reach the responder
        echo.kill(signal.SIGKILL)
        with pytest.raises((ConnectionLost, Timeout)):
            await asyncio.wait_for(slow, 30)
        assert slow.exception() is not None
        assert isinstance(slow.exception(), ConnectionLost), "the link loss ends it at once"


async def test_latency_mode_answers_correctly(node, agent_procs, monkeypatch):
    await agent_procs("echo", node.url)
    monkeypatch.setenv("FABRIC_LATENCY_MODE", "1")
    async with connect("eager", node.url) as client:
        for i in range(200):
            assert (await client.request("svc.echo", str(i), timeout=5)).text() == str(i)


async def test_direct_socket_refuses_other_users(node):
    if os.getuid() != 0:
        pytest.skip("needs root to start a process as another user")
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if system_python is None:
        pytest.skip("no system python3 that another user may run")
    async with connect("target", node.url) as target:

        async def answer(msg):  # type: ignore[no-untyped-def]
            return b"secret"

        await target.serve("svc.secret", answer)
        await target.flush()
        address = target._core.direct.address  # type: ignore[union-attr]
        header = encode_header(Header(Kind.MSG, subject="svc.secret", reply="x.y", sid=1))
        frame = frame_prefix(len(header), 0) + header
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.settimeout(10)\n"
            f"s.connect({chr(0)!r} + {address[1:]!r})\n"
            "try:\n"
            f"    s.sendall({frame!r})\n"
            "    print(len(s.recv(100)))\n"
            "except OSError:\n"
            "    print(0)\n"
        )
        out = await asyncio.to_thread(
            subprocess.run,
            [system_python, "-c", probe],
            capture_output=True,
            text=True,
            timeout=30,
            user=65534,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "0", "a foreign user's connection is closed unanswered"


async def test_gather_goes_direct_and_counts_from_the_directory(node, agent_procs):
    await agent_procs("reviewers", node.url, "4", "left")
    await agent_procs("reviewers", node.url, "4", "right")
    async with connect("parent", node.url) as parent:
        first = await parent.gather("review.essay", b"", deadline=20)
        assert first.reached == 8 and first.complete
        before = await _frames_in(parent)
        for _ in range(10):
            replies = await parent.gather("review.essay", b"", deadline=20)
            assert replies.reached == 8 and len(replies) == 8
        assert await _frames_in(parent) - before <= 4, "no request or reply crossed the node"
