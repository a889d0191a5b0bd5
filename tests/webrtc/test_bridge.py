"""The gateway's frame bridge between an edge link and a node link, over real stream links
(socket pairs): identity check on HELLO, host-local keys stripped, order kept."""

from __future__ import annotations

import asyncio
import socket

import msgpack
import pytest
from webrtc_support import Collector

from fabric.transports import StreamLink
from fabric.wire import Header, Kind, decode_header, encode_header
from gateways._bridge import Bridge

pytestmark = pytest.mark.timeout(30)

MAX = 1 << 20


async def stream_pair(handler: Collector | None) -> tuple[StreamLink, StreamLink]:
    """Two connected stream links; the first reports to ``handler``."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    _, near = await loop.create_unix_connection(lambda: StreamLink(MAX, handler), sock=a)
    _, far = await loop.create_unix_connection(lambda: StreamLink(MAX), sock=b)
    return near, far


async def bridged(agent: str | None) -> tuple[StreamLink, Collector, StreamLink, Collector, Bridge]:
    """agent-side link, what the agent receives, node-side link, what the node receives."""
    agent_got, node_got = Collector(), Collector()
    agent_link, edge = await stream_pair(agent_got)
    node_link, node_side = await stream_pair(node_got)
    bridge = Bridge(edge, agent=agent, max_payload=MAX)
    bridge.attach(node_side)
    return agent_link, agent_got, node_link, node_got, bridge


def hello(name: str, **extra: object) -> tuple[bytes, bytes]:
    info = {"name": name, "labels": {}, **extra}
    return encode_header(Header(Kind.HELLO, msg_id=7)), msgpack.packb(info)


async def test_hello_loses_host_local_keys_and_welcome_too() -> None:
    agent, agent_got, node, node_got, bridge = await bridged("edge-1")
    agent.send(*hello("edge-1", direct="/run/edge/agent.sock"))
    ((header, payload),) = await node_got.wait_for(1)
    assert decode_header(header).kind is Kind.HELLO
    assert msgpack.unpackb(payload) == {"name": "edge-1", "labels": {}}
    welcome = {
        "node": "n1",
        "pool": {"path": "/run/pool"},
        "heartbeat": 2.0,
        "paths": {"shm": True, "direct": True},
    }
    node.send(encode_header(Header(Kind.WELCOME, msg_id=7)), msgpack.packb(welcome))
    ((header, payload),) = await agent_got.wait_for(1)
    assert msgpack.unpackb(payload) == {
        "node": "n1",
        "heartbeat": 2.0,
        "paths": {"shm": False, "direct": False},
    }
    # After the handshake frames pass untouched and in order, both ways.
    for i in range(50):
        agent.send(encode_header(Header(Kind.PUB, subject="a.b", msg_id=i)), b"x" * i)
    got = await node_got.wait_for(51)
    assert [decode_header(h).msg_id for h, _ in got[1:]] == list(range(50))
    bridge.close()


async def test_hello_as_another_agent_is_refused_and_closed() -> None:
    agent, agent_got, _, node_got, bridge = await bridged("edge-1")
    agent.send(*hello("someone-else"))
    ((header, payload),) = await agent_got.wait_for(1)
    assert decode_header(header).kind is Kind.ERR
    code, message = msgpack.unpackb(payload)
    assert code == "not_authorized" and "someone-else" in message
    await asyncio.wait_for(agent_got.lost, 10)
    assert bridge.closed
    assert node_got.frames == []


async def test_frames_before_the_node_link_are_kept_in_order() -> None:
    agent_got, node_got = Collector(), Collector()
    agent, edge = await stream_pair(agent_got)
    bridge = Bridge(edge, agent=None, max_payload=MAX)
    agent.send(*hello("any"))
    agent.send(encode_header(Header(Kind.PING, msg_id=1)))
    _node, node_side = await stream_pair(node_got)  # its I/O lets the edge frames arrive
    assert bridge.pending == 2
    bridge.attach(node_side)
    got = await node_got.wait_for(2)
    assert [decode_header(h).kind for h, _ in got] == [Kind.HELLO, Kind.PING]
    bridge.close()
    await asyncio.wait_for(agent_got.lost, 10)


async def test_either_side_closing_closes_both() -> None:
    _, agent_got, node, _, bridge = await bridged(None)
    node.close()
    await asyncio.wait_for(agent_got.lost, 10)
    assert bridge.closed


async def test_an_edge_that_falls_behind_is_told_what_it_lost() -> None:
    """Issue 15, finding 3 on the WebRTC side: the bridge drops for an edge peer whose link is
    backed up, by bytes buffered, and then tells it how many per subscription."""
    from procs import until

    agent_got, node_got = Collector(), Collector()
    agent, edge = await stream_pair(agent_got)
    node, node_side = await stream_pair(node_got)
    bridge = Bridge(edge, agent=None, max_payload=MAX, inspect=False, max_backlog=64 * 1024)
    bridge.attach(node_side)
    assert agent._transport is not None
    agent._transport.pause_reading()  # the edge peer stops reading
    total = 2000
    for i in range(total):
        node.send(encode_header(Header(Kind.MSG, subject="e.x", sid=5, msg_id=i)), b"x" * 2048)

    async def backed_up() -> bool:
        return bridge.dropped > 0

    await until(backed_up, 10, "the bridge to drop for the stalled edge")
    agent._transport.resume_reading()

    async def caught_up() -> bool:
        return edge.buffered() == 0

    await until(caught_up, 10, "the edge to catch up")
    node.send(encode_header(Header(Kind.MSG, subject="e.x", sid=5, msg_id=total)), b"last")

    async def last_arrived() -> bool:
        return any(decode_header(h).msg_id == total for h, _ in agent_got.frames[-3:])

    await until(last_arrived, 10, "the frame after the gap")
    headers = [decode_header(h) for h, _ in agent_got.frames]
    delivered = [h for h in headers if h.kind is Kind.MSG]
    [notice] = [h for h in headers if h.kind is Kind.STATUS]
    assert notice.sid == 5 and notice.seq == bridge.dropped
    assert len(delivered) + notice.seq == total + 1
    assert headers.index(notice) == len(headers) - 2  # told just before what follows the gap
