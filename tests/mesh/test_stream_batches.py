"""Batched stream chunks across two nodes: order, cancellation and backpressure."""

from __future__ import annotations

import asyncio

import pytest
from procs import start_agent

from sdk import connect

from .conftest import MeshNodes, cloud_toml, free_port

pytestmark = pytest.mark.timeout(120)


async def two_nodes(m: MeshNodes) -> None:
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    await asyncio.gather(*(m.start(n, cloud_toml(n, m.cluster)) for n in m.cluster))
    await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})


async def test_batched_stream_across_two_nodes(mesh_nodes: MeshNodes) -> None:
    m = mesh_nodes
    await two_nodes(m)
    streamer = await start_agent("streamer", m.url("c2"), m.env)
    try:
        await m.wait_interest("c1", "llm.generate")
        async with connect("reader", m.url("c1")) as reader:
            before = reader.stats.received
            chunks = [c.text() async for c in reader.stream("llm.generate", b"5000", timeout=30)]
            assert chunks == [f"tok{i}" for i in range(5000)]
            assert reader.stats.received - before < 5000 // 2

            # A stalled reader bounds the responder; leaving cancels it on the other node.
            stream = reader.stream("llm.generate", b"100000", timeout=30, window=32)
            taken = 0
            async for _ in stream:
                taken += 1
                if taken == 50:
                    break
            await asyncio.sleep(0.5)  # room for a responder ignoring credit to run ahead
            await stream.aclose()
            line = await streamer.wait_line("cancelled")
        assert 50 <= int(line.split()[1]) <= 50 + 32 + 1
    finally:
        await streamer.stop()
