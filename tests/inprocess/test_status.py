"""STATUS across real nodes in memory: gather counts, no responders, held requests."""

from __future__ import annotations

import msgpack
import pytest

from fabric.wire import Kind, Status

from .harness import Fabric

pytestmark = pytest.mark.timeout(10)


async def two_clusters_and_a_leaf() -> Fabric:
    fab = Fabric()
    for name in ("c1", "c2"):
        fab.node(name)
    fab.node("e1", role="edge")
    fab.link("c1", "c2")
    fab.link("e1", "c2")
    await fab.pump()
    return fab


async def test_a_gather_is_told_every_responder_reached_across_the_mesh_once() -> None:
    fab = await two_clusters_and_a_leaf()
    for node, name in (("c1", "r1"), ("c2", "r2"), ("c2", "r3"), ("e1", "r4")):
        fab.agent(node, name).sub("review.*")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    reply = asker.gather("review.doc", b"x", timeout_ms=1500)
    await fab.pump()
    (status,) = asker.statuses()
    assert status.header.subject == reply
    assert (status.header.status, status.header.seq) == (Status.ROUTED, 4)
    names = sorted(msgpack.unpackb(status.payload))
    assert names == ["r1@c1", "r2@c2", "r3@c2", "r4@e1"]
    assert len(fab.nodes["c1"].router.tallies) == 0


async def test_a_gather_whose_peer_never_answers_closes_at_its_deadline() -> None:
    fab = await two_clusters_and_a_leaf()
    fab.agent("c1", "r1").sub("review.*")
    fab.agent("c2", "r2").sub("review.*")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    fab.muted.add(("c2", "c1"))  # c2 gets the copy; its count never comes back
    asker.gather("review.doc", timeout_ms=1000)
    await fab.pump()
    assert asker.statuses() == []
    await fab.advance(0.5)
    assert asker.statuses() == []
    await fab.advance(0.6)
    (status,) = asker.statuses()
    assert (status.header.status, status.header.seq) == (Status.ROUTED, 1)


async def test_no_responders_at_once_when_nobody_anywhere_listens() -> None:
    fab = await two_clusters_and_a_leaf()
    asker = fab.agent("e1", "asker")
    await fab.pump()
    asker.request("nobody.home", timeout_ms=1000)
    await fab.pump()
    assert asker.no_responders() == 1
    assert fab.nodes["e1"].stats.no_responders == 1


async def test_no_responders_when_the_only_remote_responder_just_left() -> None:
    """c1 still believes c2 has a responder: c2 reached nobody, says so, c1 answers 503."""
    fab = await two_clusters_and_a_leaf()
    worker = fab.agent("c2", "worker")
    worker.sub("svc.x")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    worker.link.close()
    asker.request("svc.x", timeout_ms=1000)
    while fab.step():  # no loop turn: c2's withdrawal is not announced yet
        pass
    assert asker.no_responders() == 1
    assert fab.nodes["c1"].stats.no_responders == 1
    assert fab.nodes["c2"].stats.no_responders == 0  # answered once, by the requester's node


async def test_a_request_that_meets_a_responder_is_not_answered_by_the_mesh() -> None:
    fab = await two_clusters_and_a_leaf()
    fab.agent("e1", "worker").sub("svc.x")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    asker.request("svc.x", timeout_ms=1000)
    await fab.pump()
    await fab.advance(2.0)
    assert asker.statuses() == []  # the reply tells; no count frame came back either
    assert len(fab.nodes["c1"].router.tallies) == 0


async def test_a_request_waits_for_interest_still_in_flight_then_is_delivered() -> None:
    fab = Fabric()
    fab.node("c1")
    fab.node("c2")
    worker = fab.agent("c2", "worker")
    worker.sub("svc.x")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    fab.link("c1", "c2")
    while "c2" not in fab.nodes["c1"].router.peers:
        assert fab.step()  # the link is up at c1; c2's interest is still on its way
    in_flight = list(fab.queue)
    fab.queue.clear()
    asker.request("svc.x", timeout_ms=4000)
    assert fab.step()  # the request reaches c1 before c2's interest does
    assert fab.nodes["c1"].router.held == 1
    fab.queue.extend(in_flight)
    await fab.pump()
    assert fab.nodes["c1"].router.held == 0
    assert [m.header.subject for m in worker.messages()] == ["svc.x"]
    assert asker.statuses() == []


async def test_a_held_request_is_answered_no_responders_once_its_wait_is_over() -> None:
    fab = await two_clusters_and_a_leaf()
    fab.agent("c2", "worker").sub("svc.x")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    fab.cut("c1", "c2")  # c2 had interest in svc.x: it may come back through another path
    await fab.pump()
    asker.request("svc.x", timeout_ms=4000)
    await fab.pump()
    assert fab.nodes["c1"].router.held == 1 and asker.statuses() == []
    await fab.advance(1.9)
    assert asker.statuses() == []
    await fab.advance(0.2)  # half the request's timeout: the typed answer comes in time
    assert asker.no_responders() == 1
    assert fab.nodes["c1"].router.held == 0


async def test_every_responder_too_far_behind_is_slow_consumer_not_no_responders() -> None:
    fab = await two_clusters_and_a_leaf()
    worker = fab.agent("c1", "worker")
    worker.sub("svc.x")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    node = fab.nodes["c1"]
    (bound,) = [b for b in node._links.values() if b.session.name == "worker"]
    bound.link.backlog = node.settings.slow_consumer_bytes + 1  # type: ignore[attr-defined]
    asker.request("svc.x", timeout_ms=1000)
    await fab.pump()
    errs = asker.take(Kind.ERR)
    assert len(errs) == 1 and asker.statuses() == []
