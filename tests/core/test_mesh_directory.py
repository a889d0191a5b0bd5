"""``$mesh.resolve`` between two nodes' directories (fabric/mesh/_direct.py), over an
in-memory pair standing in for the peer link (the real link is in tests/mesh)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest

from fabric.errors import InvalidSubject, RemoteProtocolError
from fabric.mesh._direct import RESOLVED, MeshDirectory
from fabric.protocol import DirectTarget
from fabric.wire import Header, Kind


class _Pair:
    """Two directories whose control frames reach each other on the next loop turn."""

    def __init__(self) -> None:
        self.a = MeshDirectory(self._side("b"))  # type: ignore[arg-type]
        self.b = MeshDirectory(self._side("a"))  # type: ignore[arg-type]
        self.deliver = True

    def _side(self, to: str) -> Any:
        pair = self

        class _Mesh:
            def send_control(self, name: str, header: Header, payload: bytes = b"") -> bool:
                if not pair.deliver:
                    return True  # sent, never answered (an older peer)
                target, origin = (pair.b, "a") if to == "b" else (pair.a, "b")
                asyncio.get_running_loop().call_soon(
                    target.control, origin, header, memoryview(bytes(payload))
                )
                return True

        return _Mesh()


TARGET = DirectTarget("tcp://10.0.0.2:4000", 3, "", "far", "token", "c2")


async def test_an_ask_gets_the_peers_targets() -> None:
    pair = _Pair()
    asked: list[tuple[str, str, str]] = []

    def answer(peer: str, subject: str, requester: str) -> list[DirectTarget] | None:
        asked.append((peer, subject, requester))
        return [TARGET]

    pair.b.answerer = answer
    assert await pair.a.ask("b", "svc.x", "client", 5.0) == [TARGET]
    assert asked == [("a", "svc.x", "client")]


async def test_not_direct_answers_and_refusals_are_none() -> None:
    pair = _Pair()
    pair.b.answerer = lambda peer, subject, requester: None
    assert await pair.a.ask("b", "svc.x", "client", 5.0) is None

    def invalid(peer: str, subject: str, requester: str) -> list[DirectTarget] | None:
        raise InvalidSubject("bad")

    pair.b.answerer = invalid
    assert await pair.a.ask("b", "svc.x", "client", 5.0) is None
    pair.b.answerer = None  # a node that never goes direct
    assert await pair.a.ask("b", "svc.x", "client", 5.0) is None


async def test_no_answer_times_out_and_a_peer_going_down_ends_it_at_once() -> None:
    pair = _Pair()
    pair.deliver = False
    assert await pair.a.ask("b", "svc.x", "client", 0.05) is None
    # A peer that stayed silent (an older node) is not asked again for a while.
    pair.deliver = True
    pair.b.answerer = lambda peer, subject, requester: [TARGET]
    assert await pair.a.ask("b", "svc.x", "client", 5.0) is None
    pair.a.peer_down("b")
    assert await pair.a.ask("b", "svc.x", "client", 5.0) == [TARGET]
    pair.deliver = False
    pending = asyncio.ensure_future(pair.a.ask("b", "svc.x", "client", 60.0))
    await asyncio.sleep(0)
    pair.a.peer_down("b")
    assert await asyncio.wait_for(pending, 5) is None


def test_malformed_frames_are_protocol_errors() -> None:
    directory = MeshDirectory(object())  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError):
        directory.control("b", Header(Kind.CONTROL, subject=RESOLVED), memoryview(b"\xc1"))
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        directory._asks[1] = fut
        bad = msgpack.packb({"direct": True, "targets": [["tcp://x:1", "sid?", "", "", "", ""]]})
        with pytest.raises(RemoteProtocolError):
            directory.control(
                "b", Header(Kind.CONTROL, subject=RESOLVED, msg_id=1), memoryview(bad)
            )
    finally:
        loop.close()
