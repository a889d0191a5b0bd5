"""Direct requests across hosts: a requester on node c1 reaches a responder on node c2 over
the responder's own TCP door, with a grant the nodes signed; both nodes stay out of the way.

Two real node processes in a cluster, real agent processes, real sockets (loopback stands in
for the cluster network)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from procs import start_agent

from sdk import ConnectionLost, NotAuthorized, Timeout, connect
from sdk._direct import DirectRoute

from .conftest import MeshNodes, cloud_toml, free_port

pytestmark = pytest.mark.timeout(120)


async def _two_nodes(m: MeshNodes, extra: str = "") -> None:
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    await asyncio.gather(*(m.start(n, cloud_toml(n, m.cluster, extra)) for n in ("c1", "c2")))
    await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})


def _tcp_env(m: MeshNodes) -> dict[str, str]:
    return {**m.env, "FABRIC_DIRECT_TCP": "127.0.0.1"}


async def _stats(url: str) -> dict[str, Any]:
    async with connect("probe", url, reconnect=False) as agent:
        status = await agent.node_status()
    return dict(status["stats"]) | {"mesh": status["mesh"]}


async def _forwarded(url: str) -> int:
    return int((await _stats(url))["mesh"]["stats"]["forwarded"])


async def test_requests_go_direct_and_in_order(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    await _two_nodes(m)
    await start_agent("echo", m.url("c2"), _tcp_env(m), "far-echo")
    await m.wait_interest("c1", "svc.echo", "echo")
    async with connect("client", m.url("c1")) as client:
        first = await client.request("svc.echo", b"warm-up", timeout=10)
        assert first.text() == "warm-up"
        assert first.sender == ("far-echo", "c2")
        c1_before, c2_before = await _forwarded(m.url("c1")), await _forwarded(m.url("c2"))
        in_before = (await _stats(m.url("c2")))["frames_in"]
        # Several in flight at once: each reply answers its own request.
        replies = await asyncio.gather(
            *(client.request("svc.echo", f"m{i}".encode(), timeout=10) for i in range(50))
        )
        assert [r.text() for r in replies] == [f"m{i}" for i in range(50)]
        for i in range(20):
            assert (await client.request("svc.echo", f"s{i}", timeout=10)).text() == f"s{i}"
        c1_after, c2_after = await _forwarded(m.url("c1")), await _forwarded(m.url("c2"))
        in_after = (await _stats(m.url("c2")))["frames_in"]
    # Neither node forwarded a request or a reply to its peer, and c2 read none of them.
    assert c1_after == c1_before
    assert c2_after == c2_before
    # Only the probes' own handshakes and stats calls (a few frames each), none of the 70
    # requests.
    assert in_after - in_before < 20
    assert (await _stats(m.url("c2")))["grants_issued"] >= 1
    assert (await _stats(m.url("c1")))["remote_resolves"] >= 1


async def test_without_tcp_door_requests_go_through_the_mesh(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    await _two_nodes(m)
    await start_agent("echo", m.url("c2"), m.env, "plain-echo")
    await m.wait_interest("c1", "svc.echo", "echo")
    async with connect("client", m.url("c1")) as client:
        before = await _forwarded(m.url("c1"))
        for i in range(5):
            assert (await client.request("svc.echo", f"m{i}", timeout=10)).text() == f"m{i}"
        assert await _forwarded(m.url("c1")) - before >= 5
    assert (await _stats(m.url("c2")))["grants_issued"] == 0


async def test_killed_responder_ends_in_a_typed_error(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    await _two_nodes(m)
    proc = await start_agent("echo", m.url("c2"), _tcp_env(m), "doomed")
    await m.wait_interest("c1", "svc.slow", "echo")
    async with connect("client", m.url("c1")) as client:
        assert (await client.request("svc.echo", b"x", timeout=10)).text() == "x"
        # svc.slow's route resolved and its direct link open, so the request below leaves
        # on that link within a few turns of this process's own loop (no other process).
        assert (await client.request("svc.slow", b"0", timeout=10)).text() == "slept"
        pending = asyncio.ensure_future(client.request("svc.slow", b"30", timeout=15))
        await asyncio.sleep(0.3)
        os.kill(proc.process.pid, signal.SIGKILL)
        with pytest.raises(ConnectionLost):  # the TCP link's close ends it at once
            await asyncio.wait_for(pending, 20)
        # A second responder takes over through the nodes' directory again.
        await start_agent("echo", m.url("c2"), _tcp_env(m), "heir")
        await m.wait_interest("c1", "svc.echo", "echo")

        async def answered() -> bool:
            try:
                return (await client.request("svc.who", b"", timeout=3)).text() == "heir"
            except (ConnectionLost, Timeout):
                return False

        for _ in range(40):
            if await answered():
                break
        else:
            pytest.fail("the heir never answered")


AUTH = """
[defaults]
publish = { allow = [">"] }
subscribe = { allow = [">"] }

[agents.stranger]
credential = "s3cret"
publish = { allow = ["other.>"] }
subscribe = { allow = [">"] }
"""


async def test_permissions_refused_issue_no_grant(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    auth = m.tmp / "auth.toml"
    auth.write_text(AUTH)
    await _two_nodes(m, f'auth_file = "{auth}"\n')
    await start_agent("echo", m.url("c2"), _tcp_env(m), "far-echo")
    await m.wait_interest("c1", "svc.echo", "echo")
    async with connect("stranger", m.url("c1"), credential="s3cret") as stranger:
        for _ in range(3):
            with pytest.raises(NotAuthorized):
                await stranger.request("svc.echo", b"let me in", timeout=10)
    assert (await _stats(m.url("c2")))["grants_issued"] == 0
    assert (await _stats(m.url("c1")))["remote_resolves"] == 0
    async with connect("client", m.url("c1")) as client:
        assert (await client.request("svc.echo", b"ok", timeout=10)).text() == "ok"
    assert (await _stats(m.url("c2")))["grants_issued"] >= 1


async def test_grants_run_out_and_the_requester_resolves_again(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    await _two_nodes(m, "direct_grant_ttl = 1.0\n")
    await start_agent("echo", m.url("c2"), _tcp_env(m), "far-echo")
    await m.wait_interest("c1", "svc.echo", "echo")
    async with connect("client", m.url("c1")) as client:

        async def c1() -> dict[str, Any]:
            # Asked by the client itself: a probe agent coming and going would change
            # interest, and every change makes the client resolve again anyway.
            status = await client.node_status()
            return dict(status["stats"]) | {"forwarded": status["mesh"]["stats"]["forwarded"]}

        assert (await client.request("svc.echo", b"first", timeout=10)).text() == "first"
        before = await c1()
        sent = 0
        give_up = time.monotonic() + 60
        # Grants run out every second: the requester resolves again shortly before (a fresh
        # grant); should the responder see a stale one all the same (clocks apart), it
        # refuses it, that request goes through the mesh and the next one resolves again.
        while (await c1())["remote_resolves"] < before["remote_resolves"] + 3:
            assert (await client.request("svc.echo", f"r{sent}", timeout=10)).text() == f"r{sent}"
            sent += 1
            assert time.monotonic() < give_up, "the requester never resolved again"
        after = await c1()
    resolves = after["remote_resolves"] - before["remote_resolves"]
    fallbacks = after["forwarded"] - before["forwarded"]
    # At most one request through the mesh per grant, never more: the rest went direct.
    assert fallbacks <= resolves
    assert sent > 3 * fallbacks


async def test_a_responder_refuses_a_stale_grant_and_the_requester_recovers(
    mesh_nodes: MeshNodes,
) -> None:
    m = mesh_nodes
    await _two_nodes(m, "direct_grant_ttl = 1.0\n")
    async with connect("server", m.url("c2"), direct_tcp="127.0.0.1") as server:
        await server.serve("svc.ok", lambda msg: b"ok")
        await server.flush()
        await m.wait_interest("c1", "svc.ok")
        door = server._core.direct.door  # type: ignore[union-attr]
        assert door is not None
        async with connect("client", m.url("c1")) as client:
            assert (await client.request("svc.ok", b"", timeout=10)).text() == "ok"
            route = client._core.direct.cached("svc.ok")  # type: ignore[union-attr]
            assert route and route is not True
            # The requester's clock says "still good" (as if the responder's ran ahead).
            route.renew_at = time.time() + 3600
            refused = door.refused
            give_up = time.monotonic() + 60
            while door.refused == refused:
                assert (await client.request("svc.ok", b"", timeout=10)).text() == "ok"
                # Interest changes elsewhere (the probes leaving) may have made it resolve
                # again: hold whatever route it has now past its renewal too.
                route = client._core.direct.cached("svc.ok")  # type: ignore[union-attr]
                if isinstance(route, DirectRoute):
                    route.renew_at = time.time() + 3600
                assert time.monotonic() < give_up, "the responder never refused"
            # Refused, answered through the mesh; the next request resolves and goes direct.
            assert client._core.direct.cached("svc.ok") is False  # type: ignore[union-attr]
            assert (await client.request("svc.ok", b"", timeout=10)).text() == "ok"
            assert door.refused == refused + 1


async def test_closing_the_direct_link_mid_request_is_a_typed_error(
    mesh_nodes: MeshNodes,
) -> None:
    m = mesh_nodes
    await _two_nodes(m)
    async with connect("server", m.url("c2"), direct_tcp="127.0.0.1") as server:
        started = asyncio.Event()

        async def slow(msg: Any) -> bytes:
            started.set()
            await asyncio.sleep(30)
            return b"late"

        await server.serve("svc.hang", slow)
        await server.serve("svc.ok", lambda msg: b"ok")
        await server.flush()
        await m.wait_interest("c1", "svc.hang")
        async with connect("client", m.url("c1")) as client:
            assert (await client.request("svc.ok", b"", timeout=10)).text() == "ok"
            pending = asyncio.ensure_future(client.request("svc.hang", b"", timeout=20))
            await asyncio.wait_for(started.wait(), 10)
            door = server._core.direct.door  # type: ignore[union-attr]
            assert door is not None
            for link in list(door._grants):
                link.close()
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(pending, 15)
            # The next request dials again, presents its grant again, and is answered.
            assert (await client.request("svc.ok", b"", timeout=10)).text() == "ok"


async def test_gather_reaches_responders_on_both_nodes_directly(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    await _two_nodes(m)
    await start_agent("reviewers", m.url("c2"), _tcp_env(m), "2", "far")
    await start_agent("reviewers", m.url("c1"), _tcp_env(m), "1", "near")
    await m.wait_interest("c1", "review.essay", peers=1)
    async with connect("client", m.url("c1")) as client:
        before = await _forwarded(m.url("c1"))
        for _ in range(3):
            replies = await client.gather("review.essay", b"essay", deadline=10)
            expected = [("far-0", "c2"), ("far-1", "c2"), ("near-0", "c1")]
            assert sorted(r.sender for r in replies) == expected
            assert sorted(replies.expected or []) == expected
        assert await _forwarded(m.url("c1")) == before


async def test_streams_go_direct_across_hosts(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    await _two_nodes(m)
    streamer = await start_agent("streamer", m.url("c2"), _tcp_env(m))
    try:
        await _stream_direct(m, streamer)
    finally:
        await streamer.stop()


async def _stream_direct(m: MeshNodes, streamer: Any) -> None:
    await m.wait_interest("c1", "llm.generate")
    async with connect("reader", m.url("c1")) as reader:
        warm = [c.text() async for c in reader.stream("llm.generate", b"3", timeout=10)]
        assert warm == ["tok0", "tok1", "tok2"]
        c1_before, c2_before = await _forwarded(m.url("c1")), await _forwarded(m.url("c2"))
        in_before = (await _stats(m.url("c2")))["frames_in"]
        # A small window: credit grants go back to the responder throughout.
        stream = reader.stream("llm.generate", b"1000", timeout=30, window=4)
        chunks = [c.text() async for c in stream]
        assert chunks == [f"tok{i}" for i in range(1000)]
        # Leaving early: the cancel reaches the generator over the same TCP link.
        seen = 0
        early = reader.stream("llm.generate", b"100000", timeout=30, window=8)
        async for _ in early:
            seen += 1
            if seen == 10:
                break
        await early.aclose()
        line = await streamer.wait_line("cancelled", timeout=20)
        assert 10 <= int(line.split()[1]) <= 10 + 8 + 1
        c1_after, c2_after = await _forwarded(m.url("c1")), await _forwarded(m.url("c2"))
        in_after = (await _stats(m.url("c2")))["frames_in"]
    # No open, chunk, credit or cancel crossed either node (the generator's one publish of
    # events.stream is all c2 forwarded, had anyone on c1 been interested: nobody was).
    assert c1_after == c1_before
    assert c2_after == c2_before
    assert in_after - in_before < 20


async def test_responder_killed_mid_stream_across_hosts(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    await _two_nodes(m)
    streamer = await start_agent("streamer", m.url("c2"), _tcp_env(m))
    await m.wait_interest("c1", "llm.generate")
    async with connect("reader", m.url("c1")) as reader:
        stream = reader.stream("llm.generate", b"100000", timeout=30, window=8)
        for i in range(5):
            assert (await stream.__anext__()).text() == f"tok{i}"
        os.kill(streamer.process.pid, signal.SIGKILL)

        async def drain() -> None:
            async for _ in stream:
                pass

        with pytest.raises(ConnectionLost):  # the TCP link's close ends it at once
            await asyncio.wait_for(drain(), 20)
