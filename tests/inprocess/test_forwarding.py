"""Forwarding across real nodes in memory: copies go only where interest is, never loop."""

from __future__ import annotations

import msgpack
import pytest

from fabric.router import PeerKind
from fabric.wire import Kind

from .harness import Fabric

pytestmark = pytest.mark.timeout(10)


async def cluster(*names: str) -> Fabric:
    fab = Fabric()
    for name in names:
        fab.node(name)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fab.link(a, b)
    await fab.pump()
    return fab


async def test_a_publish_reaches_a_subscriber_on_another_node_once() -> None:
    fab = await cluster("c1", "c2")
    sub = fab.agent("c2", "sub")
    sub.sub("jobs.*")
    pub = fab.agent("c1", "pub")
    await fab.pump()
    pub.pub("jobs.run", b"hi")
    await fab.pump()
    got = sub.messages()
    assert [(m.header.subject, m.payload) for m in got] == [("jobs.run", b"hi")]
    assert fab.nodes["c1"].mesh is not None and fab.nodes["c1"].mesh.stats["forwarded"] == 1


async def test_nothing_is_forwarded_where_nobody_listens() -> None:
    fab = await cluster("c1", "c2")
    pub = fab.agent("c1", "pub")
    await fab.pump()
    pub.pub("jobs.run")
    await fab.pump()
    assert fab.nodes["c1"].mesh is not None and fab.nodes["c1"].mesh.stats["forwarded"] == 0


async def test_a_cluster_peers_message_never_goes_to_another_cluster_peer() -> None:
    fab = await cluster("c1", "c2", "c3")
    subs = [fab.agent(n, f"s{n}") for n in ("c2", "c3")]
    for s in subs:
        s.sub("jobs.>")
    pub = fab.agent("c1", "pub")
    await fab.pump()
    pub.pub("jobs.a.b")
    await fab.pump()
    assert [len(s.messages()) for s in subs] == [1, 1]
    for name in ("c2", "c3"):
        mesh = fab.nodes[name].mesh
        assert mesh is not None and mesh.stats["forwarded"] == 0, name


async def test_leaf_to_leaf_goes_leaf_hub_peer_leaf() -> None:
    fab = Fabric()
    fab.node("c1")
    fab.node("c2")
    fab.node("e1", role="edge")
    fab.node("e2", role="edge")
    fab.link("c1", "c2")
    fab.link("e1", "c1")
    fab.link("e2", "c2")
    await fab.pump()
    assert fab.nodes["c1"].router.peers == {"c2": PeerKind.CLUSTER, "e1": PeerKind.LEAF}
    sub = fab.agent("e2", "sub")
    sub.sub("edge.x")
    pub = fab.agent("e1", "pub")
    await fab.pump()
    pub.pub("edge.x", b"1")
    await fab.pump()
    assert [m.payload for m in sub.messages()] == [b"1"]
    forwarded = {n: node.mesh.stats["forwarded"] for n, node in fab.nodes.items() if node.mesh}
    assert forwarded == {"e1": 1, "c1": 1, "c2": 1, "e2": 0}


async def test_replies_travel_back_only_to_the_requesters_inbox() -> None:
    fab = await cluster("c1", "c2")
    worker = fab.agent("c2", "worker")
    worker.sub("svc.echo")
    spy = fab.agent("c1", "spy")
    spy.sub(">")
    client = fab.agent("c1", "client")
    await fab.pump()
    reply = client.request("svc.echo", b"ping", timeout_ms=2000)
    await fab.pump()
    (req,) = worker.messages()
    assert req.header.reply == reply
    worker.pub(reply, b"pong")
    await fab.pump()
    assert [m.payload for m in client.messages()] == [b"pong"]
    assert [m.header.subject for m in spy.messages()] == ["svc.echo"]  # never the reply
    assert client.statuses() == []


async def test_an_unsubscribe_withdraws_interest_from_peers() -> None:
    fab = await cluster("c1", "c2")
    sub = fab.agent("c2", "sub")
    sid = sub.sub("jobs.*")
    await fab.pump()
    assert fab.nodes["c1"].router.remote_interest("jobs.x")
    sub.unsub(sid)
    await fab.pump()
    assert not fab.nodes["c1"].router.remote_interest("jobs.x")
    sub.take(Kind.MSG)


async def test_remote_interest_invalidates_the_directory_and_makes_it_route() -> None:
    fab = await cluster("c1", "c2")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    asker.control("$node.resolve", {"subject": "svc.x"})
    await fab.pump()
    (answer,) = asker.take(Kind.CONTROL)
    assert msgpack.unpackb(answer.payload) == {"direct": True, "targets": []}
    fab.agent("c2", "worker").sub("svc.x")
    await fab.pump()
    notices = [f.header.subject for f in asker.take(Kind.CONTROL)]
    assert notices and set(notices) == {"$dir.invalidate"}
    asker.control("$node.resolve", {"subject": "svc.x"})
    await fab.pump()
    (answer,) = asker.take(Kind.CONTROL)
    assert msgpack.unpackb(answer.payload) == {"direct": False}
