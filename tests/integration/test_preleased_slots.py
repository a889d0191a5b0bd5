"""Pre-leased shared-memory slots (fabric/shm/_stash.py, sdk/_shared.py) with a real node and
real shared memory: a warm pool publishes without an allocation round trip, and the slots go
back when the agent closes or is killed."""

from __future__ import annotations

import signal

import pytest
from procs import until

from sdk import connect

pytestmark = pytest.mark.timeout(120)

KiB = 1024
SIZE = 200 * KiB  # over the 64 KiB threshold: the 1 MiB class, two pre-leased by default


async def _pool(agent) -> dict:  # type: ignore[no-untyped-def]
    return (await agent.node_status())["pool"]


async def test_a_warm_pool_publishes_without_an_allocation_round_trip(node):
    async with connect("reader", node.url) as reader:
        sub = await reader.subscribe("big")
        await reader.flush()
        async with connect("producer", node.url) as producer:
            shared = producer._core.shared
            assert shared.stash is not None, "the node announced pre-lease bounds"
            await producer.publish("big", b"\x01" * SIZE)  # cold: one round trip
            assert shared.alloc_calls == 1
            with await sub.next(timeout=10) as msg:
                assert msg.shared and bytes(msg.data) == b"\x01" * SIZE
            await shared.refilled()
            assert shared.stash.held() == 2
            for i in range(2, 8):
                await producer.publish("big", bytes([i]) * SIZE)
                with await sub.next(timeout=10) as msg:
                    assert msg.shared and bytes(msg.data) == bytes([i]) * SIZE
                await shared.refilled()  # the next publish finds the pool warm again
            assert shared.alloc_calls == 1, "every warm publish used a pre-leased slot"
            assert shared.stash.hits == 6

            async def only_the_stash_is_out() -> bool:
                p = await _pool(reader)
                return bool(p["allocated"] == 2 and p["leases"] == 0)

            await until(only_the_stash_is_out, what="readers to release, the stash to stay")

        async def returned() -> bool:
            return bool((await _pool(reader))["allocated"] == 0)

        await until(returned, what="the closed producer's pre-leased slots to come back")


async def test_a_killed_agents_pre_leased_slots_are_reclaimed(node, agent_procs):
    async with connect("observer", node.url) as observer:
        before = await _pool(observer)
        publisher = await agent_procs("big-publisher", node.url, "nobody.listens", str(SIZE))
        assert "stocked 2" in publisher.lines
        assert (await _pool(observer))["allocated"] == 2
        publisher.kill(signal.SIGKILL)
        await publisher.process.wait()

        async def reclaimed() -> bool:
            p = await _pool(observer)
            return bool(p["allocated"] == 0 and p["reclaimed"] >= before["reclaimed"] + 2)

        await until(reclaimed, what="the killed agent's pre-leased slots to come back")


async def test_small_classes_only_and_never_more_than_half_the_owner_cap():
    from fabric.shm import PoolSettings

    bounds = PoolSettings().prelease_bounds()
    assert bounds == (2, 2, 0, 0, 0)  # the 4, 16 and 64 MiB classes are too few to share
    assert sum(bounds) <= PoolSettings().max_unpublished_per_owner // 2
    assert PoolSettings(prelease=0).prelease_bounds() == (0, 0, 0, 0, 0)
