"""Every pattern between agents on different nodes of a real 3-cloud + 2-edge mesh."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import pytest

from sdk import Msg, NoResponders, connect

from .conftest import MeshNodes, eventually, node_status

pytestmark = pytest.mark.timeout(120)


async def test_pubsub_request_gather_stream_across_nodes(mesh5: MeshNodes) -> None:
    m = mesh5
    async with contextlib.AsyncExitStack() as stack:
        # A subscriber on every node; a responder on c2 (no leaf of its own).
        agents = {n: await stack.enter_async_context(connect(f"a-{n}", m.url(n))) for n in m.nodes}
        subs = {n: await a.subscribe("events.>") for n, a in agents.items()}

        async def who(msg: Msg) -> str:
            return "c2"

        async def review(msg: Msg, me: str = "") -> str:
            return me

        async def tokens(msg: Msg):  # type: ignore[no-untyped-def]
            for i in range(int(msg.text())):
                yield f"t{i}"

        await agents["c2"].serve("svc.who", who)
        await agents["c2"].serve("llm.generate", tokens)
        for n, a in agents.items():
            await a.serve("review.essay", lambda msg, me=n: review(msg, me))
            await a.flush()
        for n in m.nodes:
            await m.wait_interest(n, "events.>", peers=1)
        await m.wait_interest("e1", "review.essay")
        await m.wait_interest("e2", "llm.generate")

        # publish from a leaf: every node's subscriber gets exactly one copy
        await agents["e1"].publish("events.hello", b"from-e1")
        for n, sub in subs.items():
            msg = await sub.next(timeout=10)
            assert (msg.subject, msg.text()) == ("events.hello", "from-e1"), n

        # request from one leaf to a cloud node two hops away
        reply = await agents["e2"].request("svc.who", b"", timeout=5)
        assert reply.text() == "c2"

        # gather from a leaf reaches all five reviewers and knows it reached five
        async def all_reviewers() -> bool:
            got = await agents["e1"].gather("review.essay", b"x", deadline=3)
            return len(got) == 5

        await eventually(all_reviewers, 20, "five reviewers")
        result = await agents["e1"].gather("review.essay", b"essay", deadline=5)
        assert sorted(r.text() for r in result) == sorted(m.nodes)
        assert result.reached == 5 and result.complete

        # a stream from edge e2 to the generator on c2, with backpressure across three hops
        chunks = [c.text() async for c in agents["e2"].stream("llm.generate", b"200", window=8)]
        assert chunks == [f"t{i}" for i in range(200)]

        # a reviewer at the far edge that never answers: the gather returns at its
        # deadline, still knowing the message reached five (one missing)
        async def never(msg: Msg) -> str:
            await asyncio.sleep(3600)
            return "late"

        mute = await stack.enter_async_context(connect("mute", m.url("e2")))
        await mute.serve("review.essay", never)
        await mute.flush()  # e2 already announced review.essay: nothing new to propagate
        partial = await agents["e1"].gather("review.essay", b"essay", deadline=2)
        assert partial.reached == 6 and len(partial) == 5 and partial.missing == 1

        # nothing anywhere: NoResponders at once, also through the mesh
        with pytest.raises(NoResponders):
            await agents["e1"].request("svc.nobody", b"", timeout=5)
        # no duplicate of the earlier publish arrived later
        await agents["c1"].publish("events.end", b"")
        for n, sub in subs.items():
            assert (await sub.next(timeout=10)).subject == "events.end", n


async def test_queue_groups_prefer_local_then_site_then_labels(mesh5: MeshNodes) -> None:
    m = mesh5
    async with contextlib.AsyncExitStack() as stack:
        members = {}
        for n in ("e1", "c1", "c3"):
            members[n] = await stack.enter_async_context(
                connect(f"w-{n}", m.url(n), labels={"gpu": "1" if n == "c3" else "0"})
            )

            async def work(msg: Msg, me: str = n) -> str:
                return me

            await members[n].serve("tasks.run", work, queue="workers")
            await members[n].flush()
        await m.wait_interest("c1", "tasks.run", "workers", peers=2)  # c3 and e1
        await m.wait_interest("e1", "tasks.run", "workers")
        await m.wait_interest("c2", "tasks.run", "workers", peers=2)
        async with (
            connect("client-e1", m.url("e1")) as e1,
            connect("client-c2", m.url("c2")) as c2,
            connect("client-e2", m.url("e2")) as e2,
        ):
            # a member on the requester's own node takes every request
            local = Counter([(await e1.request("tasks.run", b"")).text() for _ in range(40)])
            assert local == {"e1": 40}
            # prefer= overrides locality: the gpu member on c3 is chosen from e1
            gpu = Counter(
                [
                    (await e1.request("tasks.run", b"", prefer={"gpu": "1"})).text()
                    for _ in range(20)
                ]
            )
            assert gpu == {"c3": 20}
            # from c2 (no member): a cloud-site member (c1 or c3) before the edge one
            cloud = Counter([(await c2.request("tasks.run", b"")).text() for _ in range(40)])
            assert set(cloud) <= {"c1", "c3"} and sum(cloud.values()) == 40
            # prefer a site: from e2 the request goes to the member at edge-paris
            paris = Counter(
                [
                    (await e2.request("tasks.run", b"", prefer={"site": "edge-paris"})).text()
                    for _ in range(10)
                ]
            )
            assert paris == {"e1": 10}
            # map over the group from e1: all items served locally, results in order
            results = await e1.map("tasks.run", [b"a", b"b", b"c"], timeout=5)
            assert [r.text() for r in results] == ["e1", "e1", "e1"]  # type: ignore[union-attr]


@pytest.mark.timeout(150)
async def test_publish_storm_has_no_duplicates_and_no_loops(mesh5: MeshNodes) -> None:
    m = mesh5
    count = 2000
    async with contextlib.AsyncExitStack() as stack:
        subs = {}
        for n in m.nodes:
            agent = await stack.enter_async_context(connect(f"s-{n}", m.url(n)))
            subs[n] = await agent.subscribe("storm.*", pending_limit=10 * count)
            await agent.flush()
        for n in m.nodes:
            await m.wait_interest(n, "storm.*", peers=1)
        pubs = {}
        for n in ("e1", "c2"):
            pubs[n] = await stack.enter_async_context(connect(f"p-{n}", m.url(n)))

        async def blast(n: str) -> None:
            for i in range(count):
                await pubs[n].publish(f"storm.{n}", str(i))
            # each path is FIFO: once a publisher's marker arrives, all it sent before did
            await pubs[n].publish(f"storm.{n}", "end")

        await asyncio.gather(*(blast(n) for n in pubs))
        for n, sub in subs.items():
            seen: Counter[tuple[str, str]] = Counter()
            ended = 0
            while ended < len(pubs):
                msg = await sub.next(timeout=30)
                if msg.text() == "end":
                    ended += 1
                    continue
                seen[(msg.subject, msg.text())] += 1
            assert len(seen) == 2 * count, n  # nothing lost on a healthy mesh
            assert max(seen.values()) == 1, n  # nothing twice
        # Every message crossed exactly four links: e1→c1→{c2,c3}, c3→e2 and
        # c2→{c1,c3}, c1→e1, c3→e2. More would be a loop or a duplicate copy.
        forwarded = 0
        for n in m.nodes:
            stats = (await node_status(m.url(n)))["mesh"]["stats"]
            assert stats["malformed"] == 0, (n, stats)
            forwarded += stats["forwarded"]
        assert forwarded == 2 * (count + 1) * 4


async def test_direct_paths_give_way_when_remote_interest_appears(mesh5: MeshNodes) -> None:
    """Agents on one host may request each other directly (the node is the directory); once
    a peer announces interest in the subject, the directory is invalidated and requests go
    through the node again, so the remote subscriber sees them."""
    m = mesh5
    async with connect("resp", m.url("c1")) as resp, connect("client", m.url("c1")) as client:

        async def answer(msg: Msg) -> str:
            return "c1"

        await resp.serve("svc.dir", answer)
        await resp.flush()
        for _ in range(3):
            assert (await client.request("svc.dir", b"", timeout=5)).text() == "c1"
        async with connect("observer", m.url("c2")) as observer:
            seen = await observer.subscribe("svc.dir")
            await observer.flush()
            await m.wait_interest("c1", "svc.dir")

            async def observed() -> bool:
                assert (await client.request("svc.dir", b"o", timeout=5)).text() == "c1"
                try:
                    return (await seen.next(timeout=0.5)).text() == "o"
                except Exception:
                    return False

            await eventually(observed, 10, "the remote subscriber sees requests")
