"""Every messaging pattern between agents in separate processes, through a real node."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from pydantic import BaseModel

from sdk import (
    InvalidSubject,
    NoResponders,
    PayloadTooLarge,
    PayloadValidationError,
    RemoteError,
    Timeout,
    connect,
)

pytestmark = pytest.mark.timeout(90)


async def test_publish_reaches_subscriber_in_another_process(node, agent_procs):
    sub = await agent_procs("subscriber", node.url, "events.*")
    async with connect("pub", node.url) as agent:
        await agent.publish("events.done", b"payload-1", headers={"k": "v"})
        line = await sub.wait_line("got")
    assert line == "got events.done payload-1"


async def test_wildcards_and_unsubscribe(node):
    async with connect("a", node.url) as a, connect("b", node.url) as b:
        one = await b.subscribe("metrics.*.cpu")
        rest = await b.subscribe("metrics.>")
        await b.flush()
        await a.publish("metrics.host1.cpu", b"1")
        await a.publish("metrics.host1.mem.free", b"2")
        assert bytes((await one.next(timeout=5)).data) == b"1"
        got = {bytes((await rest.next(timeout=5)).data) for _ in range(2)}
        assert got == {b"1", b"2"}
        await one.aclose()
        await b.flush()
        await a.publish("metrics.host2.cpu", b"3")
        assert bytes((await rest.next(timeout=5)).data) == b"3"
        # A closed subscription ends its iteration instead of receiving more.
        with pytest.raises(StopAsyncIteration):
            await one.next(timeout=1)


async def test_request_reply_across_processes(node, agent_procs):
    await agent_procs("echo", node.url)
    async with connect("client", node.url) as agent:
        reply = await agent.request("svc.echo", b"hello", timeout=5)
        assert bytes(reply.data) == b"hello"


async def test_no_responders_is_immediate(node):
    async with connect("client", node.url) as agent:
        start = time.monotonic()
        with pytest.raises(NoResponders) as info:
            await agent.request("svc.nobody", b"x", timeout=10)
        assert time.monotonic() - start < 5, "NoResponders must not wait for the timeout"
        assert info.value.subject == "svc.nobody"


async def test_timeout_when_responder_is_slow(node, agent_procs):
    await agent_procs("echo", node.url)
    async with connect("client", node.url) as agent:
        with pytest.raises(Timeout) as info:
            await agent.request("svc.slow", b"30", timeout=0.3)
        assert info.value.subject == "svc.slow"


async def test_deadline_travels_and_nested_requests_inherit_it(node, agent_procs):
    await agent_procs("echo", node.url)
    async with connect("client", node.url) as agent:
        start = time.monotonic()
        # svc.nested makes an inner request to svc.slow (30 s) with no timeout of its own:
        # it must give up when our 0.5 s deadline is spent, not after its default 5 s.
        with pytest.raises(Timeout):
            await agent.request("svc.nested", b"", timeout=0.5)
        assert time.monotonic() - start < 3


async def test_handler_error_becomes_typed_remote_error(node, agent_procs):
    await agent_procs("echo", node.url)
    async with connect("client", node.url) as agent:
        with pytest.raises(RemoteError) as info:
            await agent.request("svc.fail", b"x", timeout=5)
        assert "refused this input" in str(info.value)


async def test_queue_group_delivers_each_message_once(node, agent_procs):
    for i in range(3):
        await agent_procs("echo", node.url, f"echo-{i}", "echo")
    async with connect("client", node.url) as agent:
        answers = Counter()
        for _ in range(30):
            answers[(await agent.request("svc.who", b"", timeout=5)).text()] += 1
    assert sum(answers.values()) == 30
    assert set(answers) == {"echo-0", "echo-1", "echo-2"}, "every member takes a share"


async def test_gather_returns_as_soon_as_all_answered(node, agent_procs):
    await agent_procs("reviewers", node.url, "8", "left")
    await agent_procs("reviewers", node.url, "8", "right")
    async with connect("parent", node.url) as agent:
        start = time.monotonic()
        replies = await agent.gather("review.essay", b"essay", deadline=20)
        elapsed = time.monotonic() - start
    assert replies.reached == 16
    assert sorted(m.text() for m in replies) == sorted(
        [f"left-{i}" for i in range(8)] + [f"right-{i}" for i in range(8)]
    )
    assert replies.complete and replies.missing == 0
    assert elapsed < 10, "gather must not wait out its 20 s deadline once all replied"


async def test_gather_quorum_and_deadline_partial(node, agent_procs):
    await agent_procs("reviewers", node.url, "4", "r", "r-0,r-1")
    async with connect("parent", node.url) as agent:
        quorum = await agent.gather("review.essay", b"", quorum=2, deadline=20)
        assert len(quorum) >= 2
        partial = await agent.gather("review.essay", b"", deadline=0.5)
        assert partial.reached == 4
        assert len(partial) == 2 and partial.missing == 2
        assert sorted(m.text() for m in partial) == ["r-2", "r-3"]


async def test_map_keeps_input_order_and_reports_per_item_errors(node, agent_procs):
    await agent_procs("echo", node.url, "echo-0")
    await agent_procs("echo", node.url, "echo-1")
    items = [f"item-{i}".encode() for i in range(40)]
    async with connect("mapper", node.url) as agent:
        results = await agent.map("svc.echo", items, timeout=10, concurrency=8)
        assert [bytes(r.data) for r in results] == items  # type: ignore[union-attr]
        failed = await agent.map("svc.fail", [b"a", b"b"], timeout=5)
        assert all(isinstance(r, RemoteError) for r in failed)


async def test_stream_delivers_every_chunk_in_order(node, agent_procs):
    await agent_procs("streamer", node.url)
    async with connect("reader", node.url) as agent:
        chunks = [c.text() async for c in agent.stream("llm.generate", b"500", timeout=20)]
    assert chunks == [f"tok{i}" for i in range(500)]


async def test_leaving_a_stream_early_cancels_the_responder(node, agent_procs):
    streamer = await agent_procs("streamer", node.url)
    async with connect("reader", node.url) as agent:
        seen = 0
        stream = agent.stream("llm.generate", b"100000", timeout=20, window=8)
        async for _ in stream:
            seen += 1
            if seen == 20:
                break
        await stream.aclose()
        line = await streamer.wait_line("cancelled")
    sent = int(line.split()[1])
    # Credit-based backpressure: the responder can be at most one window ahead.
    assert 20 <= sent <= 20 + 8 + 1


async def test_stream_backpressure_bounds_what_the_responder_sends(node, agent_procs):
    streamer = await agent_procs("streamer", node.url)
    async with connect("reader", node.url) as agent:
        stream = agent.stream("llm.generate", b"100000", timeout=20, window=16)
        first = await stream.__anext__()
        assert first.text() == "tok0"
        # The reader stalls. Not a synchronisation sleep: it gives a responder that ignored
        # credits the time to run far ahead, which the bound below would catch.
        await asyncio.sleep(0.5)
        await stream.aclose()
        line = await streamer.wait_line("cancelled")
    # At most the granted window, plus the one item the generator had produced.
    assert int(line.split()[1]) <= 16 + 1


async def test_typed_errors_before_sending(node):
    async with connect("client", node.url) as agent:
        with pytest.raises(InvalidSubject):
            await agent.publish("bad..subject", b"")
        with pytest.raises(InvalidSubject):
            await agent.publish("wild.*", b"")
        with pytest.raises(InvalidSubject):
            await agent.subscribe("a.>.b")
        with pytest.raises(PayloadTooLarge) as info:
            await agent.publish("big.one", b"\0" * (64 * 1024 * 1024 + 1))
        assert info.value.limit == 64 * 1024 * 1024


class Essay(BaseModel):
    title: str
    words: int


async def test_pydantic_payloads_validate_on_receipt(node):
    async with connect("a", node.url) as a, connect("b", node.url) as b:
        sub = await b.subscribe("essays.new")
        await b.flush()
        await a.publish("essays.new", Essay(title="On agents", words=900))
        await a.publish("essays.new", b"\x81\xa5title\xa3bad")  # msgpack {"title": "bad"}
        first = await sub.next(timeout=5)
        assert first.parse(Essay) == Essay(title="On agents", words=900)
        second = await sub.next(timeout=5)
        with pytest.raises(PayloadValidationError) as info:
            second.parse(Essay)
        assert "words" in str(info.value)


async def test_numpy_and_memoryview_payloads_travel_without_conversion(node):
    np = pytest.importorskip("numpy")
    async with connect("a", node.url) as a, connect("b", node.url) as b:
        sub = await b.subscribe("tensors.x")
        await b.flush()
        array = np.arange(1000, dtype=np.float32)
        await a.publish("tensors.x", array)
        msg = await sub.next(timeout=5)
        assert np.array_equal(np.frombuffer(msg.data, dtype=np.float32), array)
