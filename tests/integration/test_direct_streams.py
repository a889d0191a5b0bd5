"""Streams on the direct path: the stream-open, the chunks, the reader's credits and its cancel
travel agent to agent on the responder's socket; the node only answers the directory lookup.

Real node and agent processes, real sockets."""

from __future__ import annotations

import asyncio
import signal

import pytest

from sdk import ConnectionLost, NoResponders, connect

pytestmark = pytest.mark.timeout(90)


async def _frames_in(agent) -> int:  # type: ignore[no-untyped-def]
    return int((await agent.node_status())["stats"]["frames_in"])


async def test_stream_chunks_and_credits_bypass_the_node(node, agent_procs):
    await agent_procs("streamer", node.url)
    async with connect("reader", node.url) as agent:
        warm = [c.text() async for c in agent.stream("llm.generate", b"3", timeout=20)]
        assert warm == ["tok0", "tok1", "tok2"]
        before = await _frames_in(agent)
        # A small window: many credit grants go back to the responder during the stream.
        stream = agent.stream("llm.generate", b"2000", timeout=30, window=4)
        chunks = [c.text() async for c in stream]
        after = await _frames_in(agent)
    assert chunks == [f"tok{i}" for i in range(2000)]
    # Only the two $node.stats calls crossed the node: no open, chunk, credit or end.
    assert after - before <= 4


async def test_leaving_a_direct_stream_cancels_the_responder(node, agent_procs):
    streamer = await agent_procs("streamer", node.url)
    async with connect("reader", node.url) as agent:
        before = await _frames_in(agent)
        stream = agent.stream("llm.generate", b"100000", timeout=20, window=8)
        seen = 0
        async for chunk in stream:
            assert chunk.text() == f"tok{seen}"
            seen += 1
            if seen == 20:
                break
        await stream.aclose()
        line = await streamer.wait_line("cancelled")
        # The cancel took the direct link too (the generator's own publish of
        # events.stream is the one frame it sent through the node).
        assert await _frames_in(agent) - before <= 2 + 2 + 1
    assert 20 <= int(line.split()[1]) <= 20 + 8 + 1


async def test_direct_stream_backpressure_bounds_the_responder(node, agent_procs):
    streamer = await agent_procs("streamer", node.url)
    async with connect("reader", node.url) as agent:
        before = await _frames_in(agent)
        stream = agent.stream("llm.generate", b"100000", timeout=20, window=16)
        first = await stream.__anext__()
        assert first.text() == "tok0"
        # The reader stalls. Not a synchronisation sleep: it gives a responder that ignored
        # credits the time to run far ahead, which the bound below would catch.
        await asyncio.sleep(0.5)
        await stream.aclose()
        line = await streamer.wait_line("cancelled")
        assert await _frames_in(agent) - before <= 2 + 2 + 1
    assert int(line.split()[1]) <= 16 + 1


async def test_killed_reader_cancels_the_responders_generator(node, agent_procs):
    streamer = await agent_procs("streamer", node.url)
    reader = await agent_procs("stream-reader", node.url, "100000", "8")
    assert any("reading tok0" in line for line in reader.lines)
    reader.process.send_signal(signal.SIGKILL)
    # The direct link's close stops the generator at once, not at the stream's deadline.
    line = await streamer.wait_line("cancelled", timeout=20)
    assert int(line.split()[1]) <= 8 + 1


async def test_responder_killed_mid_stream_is_connection_lost(node, agent_procs):
    streamer = await agent_procs("streamer", node.url)
    async with connect("reader", node.url) as agent:
        stream = agent.stream("llm.generate", b"100000", timeout=30, window=8)
        for i in range(5):
            assert (await stream.__anext__()).text() == f"tok{i}"
        streamer.process.send_signal(signal.SIGKILL)

        async def drain() -> int:
            n = 0
            async for _ in stream:
                n += 1
            return n

        with pytest.raises(ConnectionLost):
            await asyncio.wait_for(drain(), 20)


async def test_stream_to_a_responder_that_left_says_no_responders(node):
    async with connect("reader", node.url) as reader, connect("server", node.url) as server:

        async def generate(msg):  # type: ignore[no-untyped-def]
            yield b"a"
            yield b"b"

        sub = await server.serve("svc.gen", generate)
        await server.flush()
        assert [c.data async for c in reader.stream("svc.gen", b"", timeout=10)] == [b"a", b"b"]
        await sub.aclose()
        await server.flush()
        with pytest.raises(NoResponders):
            async for _ in reader.stream("svc.gen", b"", timeout=10):
                pass


async def test_stale_direct_target_falls_back_to_the_node(node):
    async with (
        connect("reader", node.url) as reader,
        connect("gone", node.url) as gone,
        connect("stays", node.url, direct=False) as stays,
    ):

        async def generate(msg):  # type: ignore[no-untyped-def]
            yield b"x"
            yield b"y"

        sub = await gone.serve("svc.gen", generate, queue="g")
        await gone.flush()
        assert [c.data async for c in reader.stream("svc.gen", b"", timeout=10)] == [b"x", b"y"]
        direct = reader._core.direct
        assert direct is not None
        route = direct.cached("svc.gen")
        await stays.serve("svc.gen", generate, queue="g")
        await sub.aclose()
        await gone.flush()
        await stays.flush()
        await reader.flush()  # the node's invalidations reached us before its PONG
        # Pretend they had not: the old route is still used, its target answers "no
        # responders", and the stream goes through the node instead.
        direct._routes["svc.gen"] = route  # type: ignore[assignment]
        stream = reader.stream("svc.gen", b"", timeout=10)
        got = [c async for c in stream]
        assert [c.data for c in got] == [b"x", b"y"]
        assert stream._fell_back
        assert got[0].sender is not None and got[0].sender.agent == "stays"
