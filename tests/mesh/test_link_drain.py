"""The orderings that lost messages while two cloud nodes resolved a duplicate link.

c1 and c2 both dial; the link dialled by c1 (the lower name) is kept, c2's is refused. Each node
switches when *it* sees the kept link up, so for a moment one side still sends on the link the
other side has just refused. These tests force each such ordering on two real nodes in this
process (real TCP peer links) by hooking the moment a node switches, and check that every
message sent on the refused link before its sender learned of the refusal is delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fabric.config import load_settings
from fabric.mesh._mesh import Mesh, _End
from fabric.mesh._peer import LinkState
from fabric.mesh._protocol import HELLO, WELCOME
from fabric.node import Node
from fabric.wire import Header, Kind, encode_header

from .conftest import free_port

pytestmark = pytest.mark.timeout(60)

#: Messages sent on the refused link in each test.
N = 200


async def _start(tmp_path: Path, name: str, transport: str) -> Node:
    settings = load_settings(
        mesh_transport=transport,
        name=name,
        site="cloud",
        socket=tmp_path / f"{name}.sock",
        cluster=f"tcp://127.0.0.1:{free_port()}",
        mesh_heartbeat=0.25,
        mesh_dead_after=2.0,
        shm=False,
    )
    node = Node(settings)
    await node.start()
    return node


@pytest.fixture
async def pair(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Mesh, Mesh]]:
    """Nodes c1 and c2 (peer transport: the test's parameter, else TCP), listening, with no
    seeds: the test dials, in the order it wants."""
    transport = getattr(request, "param", "tcp")
    c1 = await _start(tmp_path, "c1", transport)
    c2 = await _start(tmp_path, "c2", transport)
    try:
        assert c1.mesh is not None and c2.mesh is not None
        yield c1.mesh, c2.mesh
    finally:
        await c2.aclose()
        await c1.aclose()


def _pub(i: int) -> bytes:
    return encode_header(Header(Kind.PUB, subject="svc.lost", msg_id=i + 1))


Hook = Callable[[_End], None]


def _hook_link_up(mesh: Mesh, before: Hook, after: Hook) -> None:
    """Run ``before``/``after`` around ``mesh``'s handling of the HELLO or WELCOME that brings a
    link up, the machine's decision and its actions included (same loop turn)."""
    original = mesh._control

    def control(end: _End, header: Any, payload: Any, now: float) -> None:
        up = header.subject in (HELLO, WELCOME) and end.state.state is LinkState.HANDSHAKE
        if up:
            before(end)
        original(end, header, payload, now)
        if up:
            after(end)

    mesh._control = control  # type: ignore[method-assign]


async def _closed(end: _End) -> None:
    await asyncio.wait_for(end.closed.wait(), 10)


@pytest.mark.parametrize("pair", ["tcp", "zmq"], indirect=True)
async def test_messages_sent_on_a_link_the_peer_just_refused_are_delivered(
    pair: tuple[Mesh, Mesh],
) -> None:
    """c1's live link is the one c2 dialled; c2 switches to c1's link and refuses its own while
    c1 is still sending on it (c1 has not read the REFUSE yet). Closing it at once lost them."""
    m1, m2 = pair
    assert m1.endpoint is not None and m2.endpoint is not None
    b = await m2._dial_once(m1.endpoint)  # c2's link: up at both ends, c1's only link
    assert b is not None and b.state.state is LinkState.UP
    b_at_c1 = m1._peers["c2"].end
    sent: list[int] = []

    def after(end: _End) -> None:
        if sent or m2._peers["c1"].end is not end:
            return
        # c2 now keeps c1's link and has refused b; to c1, b is still the live link.
        assert b.state.state is LinkState.SUPERSEDED
        sent.extend(i for i in range(N) if b_at_c1.send(_pub(i), b"request"))

    _hook_link_up(m2, lambda end: None, after)
    a = await m1._dial_once(m2.endpoint)
    assert a is not None and a.state.state is LinkState.UP
    assert len(sent) == N
    await _closed(b)
    await _closed(b_at_c1)
    assert m2.stats["received"] == N, "messages sent on the refused link were lost"
    assert m1._peers["c2"].end is a and m2._peers["c1"].end is not b
    assert m1.stats["send_failed"] == m2.stats["send_failed"] == 0


async def test_messages_in_flight_on_the_superseded_link_are_delivered(
    pair: tuple[Mesh, Mesh],
) -> None:
    """c2 sends on its live link, then switches to c1's link; c1 sees the kept link up before
    it has read those messages from the old one (held back here) and supersedes the old link.
    Closing it at once lost them (these were the replies of the flaky test)."""
    m1, m2 = pair
    assert m1.endpoint is not None and m2.endpoint is not None
    b = await m2._dial_once(m1.endpoint)
    assert b is not None and b.state.state is LinkState.UP
    b_at_c1 = m1._peers["c2"].end
    transport = b_at_c1.send.__self__.link._transport  # type: ignore[attr-defined]
    sent: list[int] = []

    def before_c2(end: _End) -> None:
        if sent or end is b:
            return
        # c1's HELLO on its link reached c2, which is about to switch to it: these go out on
        # b first, but c1 will read them only after it saw its own link up.
        transport.pause_reading()
        sent.extend(i for i in range(N) if b.send(_pub(i), b"reply"))

    switched: list[_End] = []

    def after_c1(end: _End) -> None:
        if m1._peers["c2"].end is end and not switched:
            switched.append(end)
            assert b_at_c1.state.state is LinkState.SUPERSEDED
            transport.resume_reading()

    _hook_link_up(m2, before_c2, lambda end: None)
    _hook_link_up(m1, lambda end: None, after_c1)
    a = await m1._dial_once(m2.endpoint)
    assert a is not None and switched == [a]
    assert len(sent) == N
    await _closed(b_at_c1)
    await _closed(b)
    assert m1.stats["received"] == N, "messages in flight on the superseded link were lost"
    assert m2._peers["c1"].end is not b
