"""Liveness that a busy receiver passes (issue 15, finding 5): a subscriber that only receives
is never dropped as dead, on the Unix socket and over tcp:// (ZeroMQ)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from procs import start_node

from sdk import connect

pytestmark = [pytest.mark.timeout(90)]

#: The node drops a session silent for three heartbeats: 0.6 s here.
HEARTBEAT = 0.2
STREAM_SECONDS = 3.0
RATE = 500


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_a_pure_subscriber_on_a_steady_stream_is_never_dropped(
    transport: str, tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = await start_node(
        tmp_path / "n.sock",
        fabric_env,
        extra=["--heartbeat-interval", str(HEARTBEAT), "--listen", f"tcp://127.0.0.1:{port}"],
    )
    url = node.url if transport == "unix" else f"tcp://127.0.0.1:{port}"
    try:
        async with (
            connect("listener", url) as listener,
            connect("talker", node.url) as talker,
        ):
            sub = await listener.subscribe("stream.>")
            total = int(STREAM_SECONDS * RATE)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(total):
                await talker.publish("stream.x", str(i))
                # Paced load (500 msg/s), so the stream lasts five times the dead-after time.
                ahead = start + (i + 1) / RATE - loop.time()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            got = [int((await sub.next(timeout=10)).text()) for _ in range(total)]
            assert got == list(range(total)), "messages lost or reordered"
            assert listener.reconnects == 0 and talker.reconnects == 0
            status = await talker.node_status()
            assert status["stats"]["sessions_dropped"] == 0
    finally:
        await node.stop()
