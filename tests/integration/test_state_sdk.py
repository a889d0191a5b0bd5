"""``agent.state`` through a real node, on the embedded backend and on a real redis-server."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from procs import NodeProcess, start_node
from state._redis_proc import RedisProcess

from sdk import Conflict, Fenced, NotFound, connect

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["embedded", "redis"])
async def state_node(
    request: pytest.FixtureRequest, tmp_path: Path, fabric_env: dict[str, str]
) -> AsyncIterator[NodeProcess]:
    """A node whose state backend is each of ours (configured through FABRIC_* variables)."""
    env = dict(fabric_env)
    if request.param == "redis":
        server: RedisProcess = request.getfixturevalue("redis_server")
        env |= {
            "FABRIC_STATE_BACKEND": "redis",
            "FABRIC_STATE_URL": server.url,
            "FABRIC_STATE_NAMESPACE": f"t{tmp_path.name[-20:]}",
        }
    node = await start_node(tmp_path / "node.sock", env, name="state-node")
    try:
        yield node
    finally:
        await node.stop()


async def test_versions_and_compare_and_set(state_node):
    async with connect("planner", state_node.url) as agent:
        v1 = await agent.state.put("notes", b"first", expect=0)
        assert v1 > 0
        value, version = await agent.state.get("notes")
        assert (bytes(value), version) == (b"first", v1)
        with pytest.raises(Conflict):
            await agent.state.put("notes", b"lost update", expect=0)
        v2 = await agent.state.put("notes", b"second", expect=v1)
        assert v2 > v1
        with pytest.raises(NotFound):
            await agent.state.get("missing")


async def test_keys_are_private_to_each_agent(state_node):
    async with connect("alice", state_node.url) as a, connect("bob", state_node.url) as b:
        await a.state.put("scratch", b"alice's")
        await b.state.put("scratch", b"bob's")
        assert bytes((await a.state.get("scratch"))[0]) == b"alice's"
        assert bytes((await b.state.get("scratch"))[0]) == b"bob's"


async def test_a_new_instance_fences_the_old_one(state_node):
    async with connect("worker", state_node.url) as old:
        lease = await old.state.acquire("context", ttl=30)
        await old.state.put("context", b"v1")
        async with connect("worker", state_node.url) as new:
            newer = await new.state.acquire("context", ttl=30)
            assert newer.token > lease.token
            await new.state.put("context", b"v2")
            with pytest.raises(Fenced):
                await old.state.put("context", b"stale write")
            assert bytes((await new.state.get("context"))[0]) == b"v2"


async def test_blobs_are_stored_once_and_refcounted(state_node):
    blob = bytes(range(256)) * 4096  # 1 MiB
    async with connect("a", state_node.url) as a, connect("b", state_node.url) as b:
        ref_a = await a.state.share(blob)
        ref_b = await b.state.share(blob)
        assert ref_a == ref_b
        stats = await a.state.stats()
        assert stats.blobs == 1 and stats.blob_bytes == len(blob)
        assert stats.shared_saved_bytes == len(blob)
        assert bytes(await b.state.open_blob(ref_a)) == blob
        await a.state.drop_blob(ref_a)
    # Both sessions ended: their holds went with them and the blob is freed.
    async with connect("c", state_node.url) as c:

        async def freed() -> bool:
            return (await c.state.stats()).blobs == 0

        for _ in range(200):
            if await freed():
                break
            await asyncio.sleep(0.05)
        assert await freed()
        with pytest.raises(NotFound):
            await c.state.open_blob(ref_a)


@pytest.mark.faults
async def test_paused_owner_cannot_overwrite_after_its_lease(state_node, agent_procs):
    old = await agent_procs("state-writer", state_node.url, "paused", "context", "0.5")
    token = int((await old.wait_line("leased")).split()[1])
    old.kill(signal.SIGSTOP)
    try:
        async with connect("paused", state_node.url) as new:
            # The new instance of the same agent takes the lease over while the old one is
            # frozen (and its 0.5 s lease runs out meanwhile).
            lease = await new.state.acquire("context", ttl=30)
            assert lease.token > token
            version = await new.state.put("context", b"new owner's")
            old.kill(signal.SIGCONT)
            await old.send_line("stale")
            line = await old.wait_line("refused")
            assert line.split()[1] in ("fenced", "lease_expired")
            value, current = await new.state.get("context")
            assert (bytes(value), current) == (b"new owner's", version)
    finally:
        old.kill(signal.SIGCONT)
