"""Stream chunks coalesced into batches (sdk/_chunks.py) through a real node: order, the
old one-chunk-per-frame path, and backpressure and cancellation still holding."""

from __future__ import annotations

import asyncio

import pytest

from fabric.errors import RemoteProtocolError
from fabric.wire import Status
from sdk import Msg, connect
from sdk._chunks import BATCH_HEADER

pytestmark = pytest.mark.timeout(90)

BIG = 100 * 1024  # over the shared-memory threshold: goes alone, through a slot


@pytest.mark.parametrize("direct", [True, False], ids=["direct-link", "through-node"])
async def test_batched_chunks_arrive_in_order_across_pauses_and_large_chunks(node, direct):
    async with (
        connect("responder", node.url, direct=direct) as responder,
        connect("reader", node.url, direct=direct) as reader,
    ):

        async def chunks(msg: Msg):  # type: ignore[no-untyped-def]
            for i in range(3000):
                if i % 7 == 0:
                    await asyncio.sleep(0)  # the loop turns: what is gathered goes out
                yield (b"L" * BIG) if i % 500 == 250 else f"c{i}".encode()

        await responder.serve("gen.mixed", chunks)
        await responder.flush()
        before = reader.stats.received
        got: list[tuple[int, bytes]] = []
        shared = 0
        async for m in reader.stream("gen.mixed", timeout=30):
            got.append((m.seq, bytes(m.data)))
            shared += m.shared
        frames = reader.stats.received - before
    expected = [(i, (b"L" * BIG) if i % 500 == 250 else f"c{i}".encode()) for i in range(3000)]
    assert got == expected
    assert frames < 3000 // 2  # several chunks a frame, not one
    # Through the node, the large chunks went alone through shared memory.
    assert shared == (0 if direct else 6)


async def test_a_requester_that_did_not_ask_gets_one_chunk_per_frame(node, agent_procs):
    await agent_procs("streamer", node.url)
    async with connect("old-reader", node.url) as reader:
        stream = reader.stream("llm.generate", b"300", timeout=20)
        stream._headers.pop(BATCH_HEADER)  # what a requester from before batches sends
        before = reader.stats.received
        chunks = [c.text() async for c in stream]
        frames = reader.stats.received - before
    assert chunks == [f"tok{i}" for i in range(300)]
    assert frames == 300 + 1  # every chunk, then the end


async def test_a_stalled_reader_bounds_a_batching_responder(node, agent_procs):
    streamer = await agent_procs("streamer", node.url)
    async with connect("reader", node.url) as reader:
        stream = reader.stream("llm.generate", b"100000", timeout=20)  # default window
        taken = 0
        async for _ in stream:
            taken += 1
            if taken == 100:
                break
        # Not a synchronisation sleep: it gives a responder that ignored credits the time
        # to run far ahead, which the bound below would catch.
        await asyncio.sleep(0.5)
        await stream.aclose()
        line = await streamer.wait_line("cancelled")
    # Read 100: at most 100 + one window sent, plus the item the generator had produced.
    assert int(line.split()[1]) <= 100 + stream._credit.window + 1


async def test_an_error_after_batched_chunks_arrives_after_them(node):
    async with connect("responder", node.url) as responder, connect("reader", node.url) as reader:

        async def failing(msg: Msg):  # type: ignore[no-untyped-def]
            for i in range(10):
                yield f"c{i}"
            raise ValueError("boom")

        await responder.serve("gen.failing", failing)
        await responder.flush()
        got: list[str] = []
        with pytest.raises(Exception, match="boom"):
            async for m in reader.stream("gen.failing", timeout=20):
                got.append(m.text())
    assert got == [f"c{i}" for i in range(10)]


async def test_a_malformed_batch_fails_the_stream_and_cancels_the_responder(node):
    async with (
        connect("liar", node.url, direct=False) as liar,
        connect("reader", node.url, direct=False) as reader,
    ):
        cancelled = asyncio.Event()
        control = await liar.subscribe("liar.control")

        async def answer_badly(msg: Msg) -> None:
            # Claims two chunks of 100 bytes in a 12-byte payload.
            liar._core.send_pub(msg.reply, b"\x02\x00\x00\x00" + b"\x64\x00\x00\x00" * 2,
                                status=Status.STREAM_CHUNKS, reply="liar.control")

        async def watch() -> None:
            async for m in control:
                if m.status == Status.CANCELLED:
                    cancelled.set()

        await liar.subscribe("gen.liar", callback=answer_badly)
        await liar.flush()
        watcher = asyncio.create_task(watch())
        try:
            with pytest.raises(RemoteProtocolError):
                async for _ in reader.stream("gen.liar", timeout=20):
                    pass
            await asyncio.wait_for(cancelled.wait(), 20)
        finally:
            watcher.cancel()
