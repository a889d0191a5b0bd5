"""A fan-out on one node: each receiver gets the message under its own subscription id (the
node encodes a MSG header once per distinct sid, not once per receiver)."""

from __future__ import annotations

import pytest

from fabric.wire import Kind

from .harness import Fabric

pytestmark = pytest.mark.timeout(10)


async def test_every_receiver_gets_its_own_sid_and_the_same_message() -> None:
    fab = Fabric()
    fab.node("n1")
    sids = [2, 2, 7, 2, 9, 9, 2]
    agents = [fab.agent("n1", f"r{i}") for i in range(len(sids))]
    for agent, sid in zip(agents, sids, strict=True):
        agent.sub("fan.out", sid=sid)
    sender = fab.agent("n1", "sender")
    await fab.pump()
    for n in range(3):
        msg_id = sender.pub("fan.out", f"m{n}".encode(), headers={"k": str(n)})
        await fab.pump()
        for agent, sid in zip(agents, sids, strict=True):
            (frame,) = agent.messages()
            header = frame.header
            assert (header.kind, header.sid, header.subject) == (Kind.MSG, sid, "fan.out")
            assert (header.msg_id, header.headers, frame.payload) == (
                msg_id, {"k": str(n)}, f"m{n}".encode()
            )
