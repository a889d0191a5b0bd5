"""Two cloud node processes dial each other; the duplicate link is resolved while requests
flow both ways.

The order is forced, not hoped for: c1 dials c2 through a relay that refuses connections at
first, so c2's link (through an open relay) is the only one and carries the traffic; then the
relay opens, c1's link comes up and wins (c1 is the lower name), and both nodes switch to it
while requests are in flight. Whatever the interleaving of the REFUSE and the WELCOME (the
pure machine's orderings are explored in test_peer_link_machine.py), no request may meet "no
responders" or be lost, and the loser must not dial again while the peer is up (it once
redialled every 5 s, and each new link was refused again).
"""

from __future__ import annotations

import asyncio

import pytest
from delay_proxy import DelayProxy

from sdk import Agent, connect

from .conftest import MeshNodes, eventually, free_port

pytestmark = pytest.mark.timeout(120)

#: The loser's old redial period was max(5 s, 2 x mesh_dead_after): watch for longer.
_WATCH_S = 6.0


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _ask(client: Agent, subject: str, stop: asyncio.Event, answered: list[str]) -> None:
    """Requests one after another until ``stop``; any failure fails the test."""
    i = 0
    while not stop.is_set():
        i += 1
        reply = await client.request(subject, str(i), timeout=10)
        assert reply.text() == str(i)
        answered.append(reply.text())


async def test_a_duplicate_link_switch_loses_no_request_and_is_not_redialled(
    mesh_nodes: MeshNodes,
) -> None:
    m = mesh_nodes
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    to_c2 = await DelayProxy(("127.0.0.1", _port(m.cluster["c2"])), 0.0).start()
    to_c1 = await DelayProxy(("127.0.0.1", _port(m.cluster["c1"])), 0.0).start()
    to_c2.cut()  # c1 cannot reach c2 yet
    base = 'site = "cloud"\nmesh_heartbeat = 0.25\nmesh_dead_after = 2.0\n'
    try:
        await asyncio.gather(
            m.start("c1", base + f'cluster = "{m.cluster["c1"]}"\nseeds = ["{to_c2.url}"]\n'),
            m.start("c2", base + f'cluster = "{m.cluster["c2"]}"\nseeds = ["{to_c1.url}"]\n'),
        )
        await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})
        assert not (await m.peers_of("c1"))["c2"]["dialed"]  # c2's link, the only one
        async with (
            connect("echo2", m.url("c2")) as echo2,
            connect("echo1", m.url("c1")) as echo1,
            connect("client1", m.url("c1")) as client1,
            connect("client2", m.url("c2")) as client2,
        ):

            async def answer(msg):  # type: ignore[no-untyped-def]
                return bytes(msg.data)

            await echo2.serve("svc.at2", answer)
            await echo1.serve("svc.at1", answer)
            await echo2.flush()
            await echo1.flush()
            await m.wait_interest("c1", "svc.at2")
            await m.wait_interest("c2", "svc.at1")
            stop = asyncio.Event()
            via1: list[str] = []
            via2: list[str] = []
            askers = [
                asyncio.ensure_future(_ask(client1, "svc.at2", stop, via1)),
                asyncio.ensure_future(_ask(client2, "svc.at1", stop, via2)),
            ]
            try:
                async def flowing() -> bool:
                    return len(via1) > 20 and len(via2) > 20

                await eventually(flowing, 30, "requests answered both ways")
                to_c2.heal()  # c1's next dial gets through: its link wins at both ends

                async def switched() -> bool:
                    c1, c2 = await m.peers_of("c1"), await m.peers_of("c2")
                    return c1["c2"]["dialed"] and not c2["c1"]["dialed"]

                await eventually(switched, 30, "both nodes on c1's link")
                before = (len(via1), len(via2))
                # Not a synchronisation: an observation window, requests flowing, in which
                # the old code's loser dialled again.
                await asyncio.sleep(_WATCH_S)
                assert len(via1) > before[0] and len(via2) > before[1]
            finally:
                stop.set()
                await asyncio.gather(*askers)  # re-raises a NoResponders or a Timeout
        # One connection each way: c1's (kept) and c2's (refused once, never dialled again).
        assert (to_c2.connections, to_c1.connections) == (1, 1)
        assert set(await m.peers_of("c1")) == {"c2"} and set(await m.peers_of("c2")) == {"c1"}
    finally:
        await to_c2.aclose()
        await to_c1.aclose()
