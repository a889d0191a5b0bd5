"""``Connection`` over a dialer: a scripted node on an in-memory link stands in for node
versions we do not run (one whose WELCOME has no ``paths``), and shows each frame reaching
the owner once, on its kind. The real node is in tests/integration/test_capabilities.py."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from typing_extensions import Buffer

from fabric.errors import NotFound
from fabric.transports import Link, LinkHandler
from fabric.wire import Header, Kind, decode_header, encode_header
from sdk._capabilities import Capabilities
from sdk._connection import Connection


class _ScriptedNode(Link):
    """The node's end of an in-memory link: answers HELLO, PING and control calls."""

    transport = "memory"

    def __init__(self, handler: LinkHandler, welcome: dict[str, Any]) -> None:
        self.handler = handler
        self.welcome = welcome
        self._closed = False

    def to_agent(self, header: Header, payload: bytes = b"") -> None:
        assert self.handler is not None
        self.handler.frame_received(encode_header(header), memoryview(payload))

    def send(self, header: bytes, payload: Buffer = b"") -> None:
        h = decode_header(header)
        loop = asyncio.get_running_loop()
        if h.kind is Kind.HELLO:
            reply = Header(Kind.WELCOME, msg_id=h.msg_id)
            loop.call_soon(self.to_agent, reply, msgpack.packb(self.welcome))
        elif h.kind is Kind.PING:
            loop.call_soon(self.to_agent, Header(Kind.PONG, msg_id=h.msg_id))
        elif h.kind is Kind.CONTROL and h.subject == "$missing":
            err = Header(Kind.ERR, subject=h.subject, msg_id=h.msg_id)
            loop.call_soon(self.to_agent, err, msgpack.packb(("not_found", "nothing here")))
        elif h.kind is Kind.CONTROL:
            loop.call_soon(self.to_agent, Header(Kind.CONTROL, subject=h.subject, msg_id=h.msg_id))

    def buffered(self) -> int:
        return 0

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            assert self.handler is not None
            self.handler.link_lost(None)

    @property
    def closed(self) -> bool:
        return self._closed


class _Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def message(self, conn: Connection, header: Header, payload: memoryview) -> None:
        self.seen.append(("message", header.subject))

    def status(self, conn: Connection, header: Header, payload: memoryview) -> None:
        self.seen.append(("status", header.subject))

    def error(self, conn: Connection, header: Header, payload: memoryview) -> None:
        self.seen.append(("error", header.subject))

    def notice(self, conn: Connection, header: Header, payload: memoryview) -> None:
        self.seen.append(("notice", header.subject))

    def lost(self, conn: Connection) -> None:
        self.seen.append(("lost", ""))

    async def restored(self, conn: Connection) -> None:
        self.seen.append(("restored", ""))


async def _open(url: str, welcome: dict[str, Any]) -> tuple[Connection, _Events, _ScriptedNode]:
    events = _Events()
    nodes: list[_ScriptedNode] = []

    async def dialer(dialled: str, handler: LinkHandler) -> Link:
        assert dialled == url
        nodes.append(_ScriptedNode(handler, welcome))
        return nodes[-1]

    conn = Connection([url], {"name": "a", "labels": {}}, events, dialer=dialer, reconnect=False)
    await conn.open()
    return conn, events, nodes[0]


@pytest.mark.parametrize(
    ("url", "caps"),
    [("unix:///old.sock", Capabilities(direct=True)), ("tcp://127.0.0.1:1", Capabilities())],
)
async def test_an_older_node_without_paths_is_judged_by_the_url(
    url: str, caps: Capabilities
) -> None:
    conn, _, _ = await _open(url, {"node": "old", "session": 1})
    try:
        assert conn.node == "old"
        assert conn.caps == caps
    finally:
        await conn.aclose()


async def test_the_welcome_decides_over_the_url() -> None:
    conn, _, _ = await _open("unix:///n.sock", {"node": "n", "paths": {"shm": 1, "direct": 0}})
    try:
        # shm said yes, but there is no pool to map: neither path.
        assert conn.caps == Capabilities()
    finally:
        await conn.aclose()


async def test_each_frame_reaches_the_owner_once_on_its_kind() -> None:
    conn, events, node = await _open("tcp://h:1", {"node": "n"})
    try:
        node.to_agent(Header(Kind.MSG, subject="a.b", sid=1))
        node.to_agent(Header(Kind.STATUS, subject="_INBOX.x.1"))
        node.to_agent(Header(Kind.CONTROL, subject="$dir.invalidate"))
        node.to_agent(Header(Kind.ERR, subject="c.d"), msgpack.packb(("not_authorized", "no")))
        await conn.call("$node.barrier", timeout=5)  # answered by msg_id: not the owner's
        with pytest.raises(NotFound):
            await conn.call("$missing", timeout=5)  # an ERR for a call fails that call
        conn.admit(lambda h: h.subject != "dup.x")
        node.to_agent(Header(Kind.MSG, subject="dup.x", sid=1))
        node.to_agent(Header(Kind.MSG, subject="new.x", sid=1))
        await conn.flush(timeout=5)
        assert events.seen == [
            ("message", "a.b"),
            ("status", "_INBOX.x.1"),
            ("notice", "$dir.invalidate"),
            ("error", "c.d"),
            ("message", "new.x"),
        ]
    finally:
        await conn.aclose()
