"""A responder's TCP door (sdk/_remote_direct.py) takes requests only with a grant its node
signed for it, unexpired, for that subject: checked by the responder alone. Real node, real
agent, real TCP; the test plays the requester on a raw link."""

from __future__ import annotations

import asyncio
import time

import pytest

from fabric.grants import Grant, sign
from fabric.protocol import DIRECT_GRANT, NODE_RESOLVE, ResolveRequest, WelcomeKey
from fabric.transports import StreamLink
from fabric.wire import Header, Kind, Status, decode_header, encode_header
from sdk import connect
from sdk._remote_direct import open_tcp_link

pytestmark = pytest.mark.timeout(60)


class _Frames:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Header, bytes]] = asyncio.Queue()

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self.queue.put_nowait((decode_header(header), bytes(payload)))

    def link_lost(self, exc: BaseException | None) -> None:
        pass


async def _ask(link: StreamLink, frames: _Frames, subject: str, n: int) -> tuple[Header, bytes]:
    link.send(encode_header(Header(Kind.MSG, subject=subject, reply=f"_INBOX.t.{n}", sid=1)), b"hi")
    return await asyncio.wait_for(frames.queue.get(), 10)


def _present(link: StreamLink, token: str) -> None:
    link.send(encode_header(Header(Kind.CONTROL, subject=DIRECT_GRANT, headers={"grant": token})))


async def test_the_door_takes_only_granted_unexpired_requests(node, monkeypatch):
    monkeypatch.setenv("FABRIC_DIRECT_TCP", "127.0.0.1")
    async with connect("server", node.url) as server:
        monkeypatch.delenv("FABRIC_DIRECT_TCP")

        async def answer(msg):  # type: ignore[no-untyped-def]
            return b"granted"

        await server.serve("svc.door", answer)
        await server.flush()
        door = server._core.direct.door  # type: ignore[union-attr]
        assert door is not None and door.address.startswith("tcp://127.0.0.1:")
        key = bytes.fromhex(server._core.conn.welcome[WelcomeKey.GRANT_KEY])
        frames = _Frames()
        link = await open_tcp_link(door.address, 1 << 20, frames)
        try:
            # No grant at all.
            header, _ = await _ask(link, frames, "svc.door", 1)
            assert header.kind is Kind.STATUS and header.status == Status.NO_RESPONDERS
            # Signed with another key (as if by another node, or forged).
            _present(link, sign(Grant("me", "svc.door", door.address, time.time() + 60), b"x" * 32))
            header, _ = await _ask(link, frames, "svc.door", 2)
            assert header.status == Status.NO_RESPONDERS
            # Expired.
            _present(link, sign(Grant("me", "svc.door", door.address, time.time() - 1), key))
            header, _ = await _ask(link, frames, "svc.door", 3)
            assert header.status == Status.NO_RESPONDERS
            # For another door of the same node.
            other = "tcp://127.0.0.1:1"
            _present(link, sign(Grant("me", "svc.door", other, time.time() + 60), key))
            header, _ = await _ask(link, frames, "svc.door", 4)
            assert header.status == Status.NO_RESPONDERS
            # Valid: answered; another subject on the same link still is not.
            _present(link, sign(Grant("me", "svc.door", door.address, time.time() + 60), key))
            header, payload = await _ask(link, frames, "svc.door", 5)
            assert header.kind is Kind.MSG and payload == b"granted"
            header, _ = await _ask(link, frames, "svc.other", 6)
            assert header.status == Status.NO_RESPONDERS
            assert door.refused == 3 + 5  # three grants that did not verify, five requests
        finally:
            link.close()


async def test_an_older_sdk_is_never_sent_across_hosts(node):
    # ``remote`` left out (as older SDKs do): the answer never holds a TCP target.
    async with connect("old", node.url) as old:
        ask = NODE_RESOLVE.encode_request(ResolveRequest("svc.none"))
        _, payload = await old._core.conn.call(NODE_RESOLVE.subject, ask, timeout=5)
        answer = NODE_RESOLVE.decode_answer(None, payload)
        assert all(not t.path.startswith("tcp://") for t in answer.targets)
