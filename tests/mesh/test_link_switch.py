"""Two cloud nodes dial each other; the duplicate link is resolved while traffic flows.

A link is up at its acceptor on HELLO but at its dialer only on WELCOME, so one node can see
its kept link refused by the peer before the peer's kept link is up here. That is a switch,
not the peer's death: no request may be answered "no responders" meanwhile, and none may be
lost (a request sent on the link the peer had just refused once timed out here, about one run
in six; tests/mesh/test_link_drain.py forces that ordering every time).
"""

from __future__ import annotations

import asyncio

import pytest

from sdk import NoResponders, connect

from .conftest import MeshNodes, cloud_toml, free_port

pytestmark = pytest.mark.timeout(120)


async def test_requests_right_after_linking_never_meet_no_responders(mesh_nodes: MeshNodes):
    m = mesh_nodes
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    await asyncio.gather(*(m.start(n, cloud_toml(n, m.cluster)) for n in ("c1", "c2")))
    await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})
    async with connect("echo", m.url("c2")) as echo, connect("client", m.url("c1")) as client:

        async def answer(msg):  # type: ignore[no-untyped-def]
            return bytes(msg.data)

        await echo.serve("svc.echo", answer)
        await echo.flush()
        await m.wait_interest("c1", "svc.echo")
        refused = 0
        for i in range(3000):
            try:
                reply = await client.request("svc.echo", str(i), timeout=10)
            except NoResponders:
                refused += 1
                continue
            assert reply.text() == str(i)
        assert refused == 0
