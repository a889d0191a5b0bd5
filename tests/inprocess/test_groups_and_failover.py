"""Queue groups (nearest first), failover and migration holds, on real nodes in memory."""

from __future__ import annotations

import pytest

from fabric.router import PREFER_HEADER, PeerKind
from fabric.wire import Kind

from .harness import Fabric

pytestmark = pytest.mark.timeout(10)


async def test_a_queue_group_serves_each_message_once_on_the_local_member_first() -> None:
    fab = Fabric()
    for name in ("c1", "c2"):
        fab.node(name)
    fab.link("c1", "c2")
    near = [fab.agent("c1", f"near{i}") for i in range(2)]
    far = fab.agent("c2", "far")
    for w in (*near, far):
        w.sub("tasks.sum", queue="workers")
    client = fab.agent("c1", "client")
    await fab.pump()
    for _ in range(6):
        client.request("tasks.sum", timeout_ms=1000)
    await fab.pump()
    assert [len(w.messages()) for w in near] == [3, 3]  # round robin among the nearest
    assert far.messages() == []


async def test_a_queue_group_prefers_the_same_site_then_the_lowest_round_trip() -> None:
    fab = Fabric()
    fab.node("c1", site="paris")
    fab.node("c2", site="paris")
    fab.node("c3", site="tokyo")
    fab.node("c4", site="berlin")
    for a, b in (("c1", "c2"), ("c1", "c3"), ("c1", "c4"), ("c2", "c3"), ("c2", "c4")):
        fab.link(a, b)
    fab.link("c3", "c4")
    tokyo, berlin = fab.agent("c3", "tokyo"), fab.agent("c4", "berlin")
    for w in (tokyo, berlin):
        w.sub("tasks.sum", queue="workers")
    client = fab.agent("c1", "client")
    await fab.pump()
    router = fab.nodes["c1"].router
    router.peer_rtt("c3", 0.050)
    router.peer_rtt("c4", 0.010)
    client.request("tasks.sum", timeout_ms=1000)
    await fab.pump()
    assert (len(tokyo.messages()), len(berlin.messages())) == (0, 1)  # lowest round trip
    paris = fab.agent("c2", "paris")
    paris.sub("tasks.sum", queue="workers")
    await fab.pump()
    client.request("tasks.sum", timeout_ms=1000)
    await fab.pump()
    assert len(paris.messages()) == 1  # same site beats a shorter round trip


async def test_prefer_labels_pick_the_member_that_has_them() -> None:
    fab = Fabric()
    fab.node("c1")
    fab.node("c2")
    fab.link("c1", "c2")
    cpu = fab.agent("c1", "cpu", labels={"gpu": "0"})
    gpu = fab.agent("c2", "gpu", labels={"gpu": "1"})
    for w in (cpu, gpu):
        w.sub("infer", queue="models")
    client = fab.agent("c1", "client")
    await fab.pump()
    client.request("infer", timeout_ms=1000, headers={PREFER_HEADER: "gpu=1"})
    await fab.pump()
    assert (len(cpu.messages()), len(gpu.messages())) == (0, 1)


async def test_a_lost_peer_takes_its_interest_and_the_group_fails_over() -> None:
    fab = Fabric()
    for name in ("c1", "c2", "c3"):
        fab.node(name)
    for a, b in (("c1", "c2"), ("c1", "c3"), ("c2", "c3")):
        fab.link(a, b)
    w2, w3 = fab.agent("c2", "w2"), fab.agent("c3", "w3")
    for w in (w2, w3):
        w.sub("tasks.sum", queue="workers")
    client = fab.agent("c1", "client")
    await fab.pump()
    router = fab.nodes["c1"].router
    router.peer_rtt("c2", 0.001)
    router.peer_rtt("c3", 0.002)
    client.request("tasks.sum", timeout_ms=1000)
    await fab.pump()
    assert (len(w2.messages()), len(w3.messages())) == (1, 0)
    fab.cut("c1", "c2")
    await fab.pump()
    assert router.peers == {"c3": PeerKind.CLUSTER}
    assert router.remote.remote_keys("c2") == set()
    assert fab.nodes["c1"].mesh is not None
    assert fab.nodes["c1"].mesh.status()["peers"][0]["name"] == "c3"
    client.request("tasks.sum", timeout_ms=1000)
    await fab.pump()
    assert (len(w2.messages()), len(w3.messages())) == (0, 1)


async def test_a_gather_counts_a_lost_peer_as_zero_at_once() -> None:
    fab = Fabric()
    for name in ("c1", "c2"):
        fab.node(name)
    fab.link("c1", "c2")
    fab.agent("c1", "r1").sub("review.*")
    fab.agent("c2", "r2").sub("review.*")
    asker = fab.agent("c1", "asker")
    await fab.pump()
    fab.muted.add(("c2", "c1"))
    asker.gather("review.doc", timeout_ms=5000)
    await fab.pump()
    assert asker.statuses() == []
    fab.cut("c1", "c2")
    await fab.pump()
    (status,) = asker.statuses()
    assert status.header.seq == 1  # no waiting for the deadline


async def test_deliveries_to_a_migrating_agent_are_held_then_replayed_in_order() -> None:
    fab = Fabric()
    fab.node("c1")
    fab.node("c2")
    fab.link("c1", "c2")
    mover = fab.agent("c1", "mover")
    mover.sub("work.*")
    pub = fab.agent("c2", "pub")
    await fab.pump()
    mover.control("$agent.hold")
    await fab.pump()
    assert [f.header.subject for f in mover.take(Kind.CONTROL)] == ["$agent.hold"]
    for i in range(3):
        pub.pub(f"work.{i}", str(i).encode())
    reply = pub.request("work.x", timeout_ms=1000)
    await fab.pump()
    assert mover.messages() == [] and pub.statuses() == []  # held counts as reached
    mover.control("$agent.release")
    await fab.pump()
    got = mover.messages()
    assert [m.header.subject for m in got] == ["work.0", "work.1", "work.2", "work.x"]
    assert got[-1].header.reply == reply
    assert [f.header.subject for f in mover.take(Kind.CONTROL)] == ["$agent.release"]
    assert fab.nodes["c1"].stats.migrations == 1
