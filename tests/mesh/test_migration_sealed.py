"""A migrating agent's state on one host moves as a sealed memfd (no copy through frames or
pool slots, nobody can change it); to a node that cannot map it, it travels in frames."""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import signal

import pytest

from fabric.errors import BadDescriptor
from fabric.protocol import PoolOp
from fabric.shm import create_segment
from sdk import Fenced, connect
from sdk._handover import PIECE

from .conftest import MeshNodes, cloud_toml, free_port, node_status

pytestmark = [pytest.mark.timeout(180), pytest.mark.faults]

MiB = 1024 * 1024


async def _pair(m: MeshNodes, extra: dict[str, str] | None = None) -> None:
    m.cluster = {n: f"tcp://127.0.0.1:{free_port()}" for n in ("c1", "c2")}
    extra = extra or {}
    await asyncio.gather(
        *(m.start(n, cloud_toml(n, m.cluster, extra.get(n, ""))) for n in ("c1", "c2"))
    )
    await m.wait_links({"c1": {"c2"}, "c2": {"c1"}})


async def test_64_mib_state_moves_as_a_sealed_memfd_not_through_frames(mesh_nodes):
    m = mesh_nodes
    await _pair(m)
    state = os.urandom(64 * MiB)
    async with connect("heavy", m.url("c1")) as agent:
        await agent.subscribe("agents.heavy.inbox")
        lease = await agent.state.acquire("context", ttl=60)
        version = await agent.state.put("context", state)
        before = await node_status(m.url("c2"))
        report = await agent.migrate(m.url("c2"), timeout=120)
        after = await node_status(m.url("c2"))
        old = await node_status(m.url("c1"))
        assert report.node == "c2"
        assert (report.keys_moved, report.bytes_moved) == (1, len(state))
        # The value reached c2 as one fd on its pool socket, not as a $state.restore frame
        # nor through a pool slot: c2 served exactly one state call over frames (acquire).
        assert after["handover"]["restored"] == before["handover"]["restored"] + 1
        assert after["handover"]["restored_bytes"] == before["handover"]["restored_bytes"] + len(
            state
        )
        # Two fds: the memfd, and the old node's durable file of the value (linked, below).
        assert after["pool"]["fds_received"] == before["pool"]["fds_received"] + 2
        assert after["stats"]["state_operations"] == before["stats"]["state_operations"] + 1
        assert after["pool"]["allocated"] == before["pool"]["allocated"]
        assert old["handover"]["taken"] == 1
        value, now_version = await agent.state.get("context")
        assert bytes(value) == state
        assert now_version == version
        with pytest.raises(Fenced):
            await agent.state.put("context", b"zombie", token=lease.token)
        # Durable on c2 as on c1, by the same file: c2 linked it instead of writing 64 MiB.
        (old_file,) = (m.tmp / "c1.sock.state.values").iterdir()
        (new_file,) = (m.tmp / "c2.sock.state.values").iterdir()
        assert os.stat(old_file).st_ino == os.stat(new_file).st_ino
        assert os.stat(new_file).st_nlink == 2
        # And back: c1 adopts the same memfd (c2 kept it, no new copy).
        report = await agent.migrate(m.url("c1"), timeout=120)
        assert report.bytes_moved == len(state)
        assert (await node_status(m.url("c1")))["handover"]["restored"] == 1
        value, _ = await agent.state.get("context")
        assert bytes(value) == state


async def test_a_handed_over_state_survives_kill_9_of_the_new_node(mesh_nodes):
    m = mesh_nodes
    await _pair(m)
    state = os.urandom(16 * MiB)
    async with connect("survivor", m.url("c1"), reconnect=False) as agent:
        await agent.state.acquire("context", ttl=60)
        version = await agent.state.put("context", state)
        await agent.migrate(m.url("c2"), timeout=120)
        token = agent.state.lease("context").token  # type: ignore[union-attr]
        m.nodes["c2"].kill(signal.SIGKILL)
        await m.nodes["c2"].process.wait()
    await m.restart("c2")
    async with connect("survivor", m.url("c2")) as again:
        value, now_version = await again.state.get("context")
        assert bytes(value) == state and now_version == version
        # The fencing floor c2 committed with it: a new lease is above the migrated one.
        lease = await again.state.acquire("context", ttl=60)
        assert lease.token > token


async def test_the_receiver_cannot_change_a_handed_over_value(mesh_nodes):
    m = mesh_nodes
    await _pair(m)
    state = bytes(range(256)) * 4096 * 4  # 4 MiB: a value the node keeps in a file
    async with connect("holder", m.url("c1")) as agent:
        await agent.state.acquire("context", ttl=60)
        await agent.state.put("context", state)
        shared = agent._core.conn.shared
        got = await shared.request({"op": PoolOp.STATE_TAKE, "key": "context"}, [], 30)
        assert got is not None
        answer, fds = got
        # The memfd, and (the node being durable) a read-only fd of its file of the value.
        assert answer["size"] == len(state) and answer["durable"] and len(fds) == 2
        fd, durable = fds
        try:
            with pytest.raises(OSError) as raised:
                os.pwrite(durable, b"changed", 0)
            assert raised.value.errno == errno.EBADF
            assert os.pread(durable, 16, 0) == state[:16]
            with pytest.raises(OSError) as raised:
                os.pwrite(fd, b"changed", 0)
            assert raised.value.errno == errno.EPERM
            with pytest.raises(OSError):
                os.ftruncate(fd, 10)
            with pytest.raises((OSError, PermissionError)):
                mmap.mmap(fd, len(state), flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE)
            assert os.pread(fd, 16, 0) == state[:16]
        finally:
            os.close(fd)
            os.close(durable)
        # A memfd that could still be written is refused by the new node, state untouched.
        writable = create_segment("hostile", len(state))
        try:
            request = {"op": PoolOp.STATE_RESTORE, "key": "context", "size": len(state),
                       "version": 99, "fence": 0}
            with pytest.raises(BadDescriptor):
                await shared.request(request, [writable], 30)
        finally:
            os.close(writable)
        value, version = await agent.state.get("context")
        assert bytes(value) == state and version == 1


async def test_state_travels_in_pieces_to_a_node_that_cannot_map_it(mesh_nodes):
    m = mesh_nodes
    await _pair(m, {"c2": "shm = false\n"})
    state = os.urandom(8 * MiB + 12345)
    async with connect("traveller", m.url("c1")) as agent:
        lease = await agent.state.acquire("context", ttl=60)
        version = await agent.state.put("context", state)
        before = await node_status(m.url("c2"))
        report = await agent.migrate(m.url("c2"), timeout=120)
        assert (report.keys_moved, report.bytes_moved) == (1, len(state))
        status = await node_status(m.url("c2"))
        assert status["handover"] is None
        # Nine pieces of at most 1 MiB (one restore_piece call each), then the acquire.
        pieces = -(-len(state) // PIECE)
        assert pieces == 9
        ops = status["stats"]["state_operations"] - before["stats"]["state_operations"]
        assert ops == pieces + 1
        value, now_version = await agent.state.get("context")
        assert bytes(value) == state and now_version == version
        with pytest.raises(Fenced):
            await agent.state.put("context", b"zombie", token=lease.token)


async def test_small_and_empty_values_still_move_between_stores(mesh_nodes):
    m = mesh_nodes
    await _pair(m, {"c2": "shm = false\n"})
    async with connect("light", m.url("c1")) as agent:
        for key, value in (("empty", b""), ("small", b"a few bytes"), ("piece", b"p" * PIECE)):
            await agent.state.acquire(key, ttl=60)
            await agent.state.put(key, value)
        report = await agent.migrate(m.url("c2"), timeout=60)
        assert report.keys_moved == 3
        for key, value in (("empty", b""), ("small", b"a few bytes"), ("piece", b"p" * PIECE)):
            got, version = await agent.state.get(key)
            assert bytes(got) == value and version == 1
