"""kill -9 of a cloud node while agents are busy: agents move, leaves fail over, peers forget."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from sdk import Agent, FabricError, Msg, connect

from .conftest import MeshNodes, eventually, node_status

pytestmark = [pytest.mark.timeout(150), pytest.mark.faults]


@pytest.mark.parametrize(
    "mesh_extra", ["", 'mesh_transport = "zmq"\n'], ids=["tcp-links", "zmq-links"]
)
async def test_kill_node_agents_reconnect_and_traffic_flows(mesh5: MeshNodes) -> None:
    m = mesh5
    c1, c2, c3 = m.url("c1"), m.url("c2"), m.url("c3")
    outcomes: dict[str, int] = {"ok": 0, "typed": 0}
    stop = asyncio.Event()

    async def busy(agent: Agent, subject: str) -> None:
        while not stop.is_set():
            try:
                # A hang would blow the outer bound; the inner timeout must end every call.
                await asyncio.wait_for(agent.request(subject, b"x", timeout=2), 10)
                outcomes["ok"] += 1
            except FabricError:
                outcomes["typed"] += 1
                await asyncio.sleep(0.05)

    async with contextlib.AsyncExitStack() as stack:
        # r1 lives on c1 (falls back to c2) and alone serves svc.r1; r3 on c3.
        r1 = await stack.enter_async_context(connect("r1", f"{c1},{c2}"))
        r3 = await stack.enter_async_context(connect("r3", c3))

        async def me1(msg: Msg) -> str:
            return "r1"

        async def me3(msg: Msg) -> str:
            return "r3"

        await r1.serve("svc.r1", me1)
        await r1.serve("svc.any", me1, queue="any")
        await r3.serve("svc.any", me3, queue="any")
        await r1.flush()
        await r3.flush()
        client = await stack.enter_async_context(connect("client", f"{c1},{c3}"))
        edge = await stack.enter_async_context(connect("edge-client", m.url("e1")))
        await m.wait_interest("e1", "svc.r1")
        await m.wait_interest("c3", "svc.r1")
        assert (await edge.request("svc.r1", b"", timeout=5)).text() == "r1"

        loops = [
            asyncio.ensure_future(busy(a, s)) for a in (client, edge) for s in ("svc.r1", "svc.any")
        ]
        await eventually(lambda: _ge(outcomes, "ok", 20), 20, "traffic before the kill")
        m.nodes["c1"].kill()  # SIGKILL: no goodbye to anyone
        killed_at = time.monotonic()

        # agents of c1 reconnect elsewhere, subscriptions and handlers come back
        async def moved() -> bool:
            return r1.connected and client.connected and r1.node == "c2" and client.node == "c3"

        await eventually(moved, 30, "agents of c1 reconnected")
        assert r1.reconnects >= 1 and client.reconnects >= 1
        # peers drop the dead node; the edge fails over to its second hub
        await m.wait_links({"c2": {"c3", "e1"}, "c3": {"c2", "e2"}, "e1": {"c2"}}, timeout=30)
        for name in ("c2", "c3"):
            st = await node_status(m.url(name))
            assert "c1" not in {p["name"] for p in st["mesh"]["peers"]}
        # traffic flows again everywhere, including to the handler that moved
        await m.wait_interest("e1", "svc.r1")
        await m.wait_interest("c3", "svc.r1")
        before = outcomes["ok"]
        await eventually(lambda: _ge(outcomes, "ok", before + 20), 30, "traffic after the kill")
        assert (await edge.request("svc.r1", b"", timeout=5)).text() == "r1"
        assert (await client.request("svc.r1", b"", timeout=5)).text() == "r1"
        stop.set()
        # every loop ends: no request hung
        await asyncio.wait_for(asyncio.gather(*loops), 30)
        assert time.monotonic() - killed_at < 120
        assert outcomes["ok"] > 40


async def _ge(counts: dict[str, int], key: str, n: int) -> bool:
    return counts[key] >= n
