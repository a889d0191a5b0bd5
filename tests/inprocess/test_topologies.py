"""Random meshes of real nodes in memory: every subscriber gets one copy, nothing loops, and
what each node was told of its peers' interest is exactly what the rules export.

These replace a simulation that re-implemented the flood: here the node, mesh and router
code that runs in production does the forwarding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .harness import Agent, Fabric

pytestmark = pytest.mark.timeout(60)


def build(clouds: int, leaves: list[int]) -> tuple[Fabric, dict[str, Agent]]:
    """``clouds`` cloud nodes in a full mesh; ``leaves[i]`` edge nodes on cloud ``i % clouds``;
    one agent per node."""
    fab = Fabric()
    for i in range(clouds):
        fab.node(f"c{i}")
    for i in range(clouds):
        for j in range(i + 1, clouds):
            fab.link(f"c{i}", f"c{j}")
    for hub, count in enumerate(leaves):
        for k in range(count):
            fab.node(f"e{hub}_{k}", role="edge")
            fab.link(f"e{hub}_{k}", f"c{hub % clouds}")
    return fab, {name: fab.agent(name, f"a-{name}") for name in fab.nodes}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


@settings(max_examples=40, deadline=None)
@given(
    clouds=st.integers(1, 4),
    leaves=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    data=st.data(),
)
def test_every_subscriber_gets_exactly_one_copy_and_nothing_loops(
    clouds: int, leaves: list[int], data: st.DataObject
) -> None:
    async def scenario() -> None:
        fab, agents = build(clouds, leaves)
        names = sorted(fab.nodes)
        subs = data.draw(st.sets(st.sampled_from(names)))
        for name in subs:
            agents[name].sub("jobs.*")
        origin = data.draw(st.sampled_from(names))
        await fab.pump()
        before = {n: node.stats.messages_in for n, node in fab.nodes.items()}
        agents[origin].pub("jobs.run", b"x")
        await fab.pump()
        visits = {n: node.stats.messages_in - before[n] for n, node in fab.nodes.items()}
        got = {n for n, a in agents.items() if a.messages()}
        assert got == subs
        assert all(v <= 1 for v in visits.values()), visits  # no node sees it twice
        bothered = {n for n, v in visits.items() if v}
        # nodes with no subscriber behind them are never bothered
        assert bothered - {origin} <= subs | {n for n in names if n.startswith("c")}

    run(scenario)


def test_dead_peer_interest_is_withdrawn_everywhere() -> None:
    async def scenario() -> None:
        fab, agents = build(3, [1])
        agents["e0_0"].sub("a.b")
        await fab.pump()
        key = ("a.b", "", ())
        assert key in fab.nodes["c2"].router.remote.remote_keys("c0")
        fab.cut("c0", "e0_0")
        await fab.pump()
        for name in ("c0", "c1", "c2"):
            router = fab.nodes[name].router
            assert all(key not in router.remote.remote_keys(p) for p in router.peers)
            assert not router.remote_interest("a.b")

    run(scenario)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_announced_interest_always_equals_the_exported_union(data: st.DataObject) -> None:
    """After any sequence of subscribes, unsubscribes and link drops, what each node was told
    by each peer is exactly the union of the sources that peer exports to it."""

    async def scenario() -> None:
        fab, agents = build(3, [1, 1])
        names = sorted(fab.nodes)
        choices = [("a.*", ""), ("a.b", "q"), ("c.>", "")]
        held: dict[tuple[str, int], int] = {}
        for _ in range(data.draw(st.integers(1, 25))):
            name = data.draw(st.sampled_from(names))
            which = data.draw(st.integers(0, len(choices) - 1))
            sid = held.pop((name, which), None)
            if sid is None or data.draw(st.booleans()):
                if sid is not None:
                    agents[name].unsub(sid)
                held[(name, which)] = agents[name].sub(*choices[which])
            else:
                agents[name].unsub(sid)
            await fab.pump()
        if data.draw(st.booleans()):
            fab.cut("c0", "e0_0")
            await fab.pump()
        for name, node in fab.nodes.items():
            for peer in node.router.peers:
                other = fab.nodes[peer].router
                kinds = other.peers
                expected = set()
                for key, n in other.remote.local.items():
                    if n > 0 and other.strategy.exports(None, kinds[name]):
                        expected.add(key)
                for src, src_kind in kinds.items():
                    if src != name and other.strategy.exports(src_kind, kinds[name]):
                        expected |= other.remote.remote_keys(src)
                assert node.router.remote.remote_keys(peer) == expected, (name, peer)

    run(scenario)
