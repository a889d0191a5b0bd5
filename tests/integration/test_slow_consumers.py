"""Slow consumers, the same on every transport (issue 15, finding 3): an agent that stops
reading is detected by the bytes buffered for it, counted by the node per transport, and told
(``SlowConsumer`` with the count); nothing is dropped silently."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
from procs import start_node, until

from sdk import SlowConsumer, Timeout, connect

pytestmark = [pytest.mark.timeout(120), pytest.mark.faults]

MESSAGES = 30_000
PAYLOAD = b"x" * 1024


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_a_stopped_subscriber_is_counted_and_told(
    transport: str, tmp_path: Path, fabric_env: dict[str, str], agent_procs
) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(fabric_env, FABRIC_SLOW_CONSUMER_BYTES=str(1024 * 1024))
    # The subscriber stays stopped while 30,000 messages are published: on a loaded machine
    # that can take seconds, and a session silent for three heartbeats is (rightly) dropped.
    node = await start_node(
        tmp_path / "n.sock",
        env,
        extra=["--listen", f"tcp://127.0.0.1:{port}", "--heartbeat-interval", "10"],
    )
    try:
        url = node.url if transport == "unix" else f"tcp://127.0.0.1:{port}"
        slow = await agent_procs("counter", url, "load.>")
        # Not direct: the report request must pass the node, as every delivery does.
        async with connect("producer", node.url, direct=False) as producer:
            slow.kill(signal.SIGSTOP)
            try:
                for _ in range(MESSAGES):
                    await producer.publish("load.x", PAYLOAD)
                await producer.flush()
                stats = (await producer.node_status())["stats"]
                # A request to a responder that is this far behind: a typed error at once
                # that says so, not "no responders" and not a timeout.
                with pytest.raises(SlowConsumer) as behind:
                    await producer.request("counter.report", b"", timeout=5)
                assert behind.value.subject == "counter.report"
            finally:
                slow.kill(signal.SIGCONT)
            dropped = stats[f"dropped_slow_{transport}"]
            assert dropped > 0, stats
            assert stats["dropped_slow"] == dropped

            # Once caught up, the agent accounts for every message: received or reported lost.
            counts: dict[str, int] = {}

            async def accounted() -> bool:
                try:
                    reply = await producer.request("counter.report", b"", timeout=1)
                except (Timeout, SlowConsumer):
                    return False  # the request itself met the backlog; ask again
                counts.update(json.loads(reply.text()))
                return counts["received"] + counts["lost"] >= MESSAGES

            await until(accounted, 60, "the subscriber to account for every message")
            print(f"{transport}: node dropped {dropped}, agent received {counts['received']} "
                  f"and was told of {counts['lost']} lost in {counts['reports']} reports")
            assert counts["received"] + counts["lost"] == MESSAGES, counts
            assert counts["lost"] == dropped and counts["reports"] >= 1
            stats = (await producer.node_status())["stats"]
            assert stats["slow_notices"] >= 1
    finally:
        await node.stop()
