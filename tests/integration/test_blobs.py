"""State-tier shared blobs on one host: one sealed memfd per blob, mapped by every agent.

Real node processes, real agent processes, real memfds; the evidence is read from /proc (the
node's open fds, every process's mappings), never taken from the code's own word.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from procs import NodeProcess, Proc, start_node

from fabric.errors import BadDescriptor, RemoteProtocolError
from fabric.shm import BLOB_SEALS, SealedMapping, create_blob
from sdk import NotFound, connect
from sdk._shared import pool_request

pytestmark = pytest.mark.timeout(120)

AgentFactory = Callable[..., Awaitable[Proc]]

MiB = 1024 * 1024
SIZE = 4 * MiB  # above the pool threshold (64 KiB): goes through memfds


def _blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _blob_fds(pid: int) -> set[int]:
    """Inodes of the blob memfds ``pid`` has open fds to (``/memfd:fabric-blob``). One blob
    may have two fds open in one process (Python's mmap keeps a duplicate of its own before
    3.13): distinct files are what counts."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:fabric-blob"):
                found.add(os.stat(f"/proc/{pid}/fd/{fd}").st_ino)
        except OSError:
            continue  # closed while we looked
    return found


def _blob_inodes(pid: int) -> set[int]:
    """Inodes of the blob memfds ``pid`` has mapped (from /proc/PID/maps)."""
    inodes = set()
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            if "/memfd:fabric-blob" in line:
                inodes.add(int(line.split()[4]))
    return inodes


def _our_shm_entries() -> set[str]:
    return set(os.listdir("/dev/shm"))


async def _until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0
) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_two_processes_share_one_memfd_and_read_it_in_place(
    node: NodeProcess, agent_procs: AgentFactory
) -> None:
    before = _our_shm_entries()
    a = await agent_procs("blob-holder", node.url, "a")
    b = await agent_procs("blob-holder", node.url, "b")
    expected = hashlib.sha256(_blob(SIZE, 7)).hexdigest()
    await a.send_line(f"share {SIZE} 7")
    await b.send_line(f"share {SIZE} 7")
    ref_a = (await a.wait_line("shared")).split()[1]
    ref_b = (await b.wait_line("shared")).split()[1]
    assert ref_a == ref_b == expected

    async with connect("observer", node.url) as observer:
        stats = await observer.state.stats()
        assert (stats.blobs, stats.blob_bytes, stats.shared_saved_bytes) == (1, SIZE, SIZE)
        assert len(_blob_fds(node.pid)) == 1, "the node keeps one memfd, the duplicate dropped"

        for proc in (a, b):
            await proc.send_line(f"open {ref_a}")
            line = await proc.wait_line("opened")
            assert line == f"opened {expected} True True {SIZE}"
        # Zero copy: both agents map the very file the node holds, not a copy of it.
        node_inodes = _blob_inodes(node.pid)
        assert len(node_inodes) == 1
        assert _blob_inodes(a.pid) == _blob_inodes(b.pid) == node_inodes

        # Four holds (a share and an open each); the blob goes with the last one.
        for proc in (a, b):
            for _ in range(2):
                await proc.send_line(f"drop {ref_a}")
                await proc.wait_line("dropped")
            stats = await observer.state.stats()
            if proc is a:
                assert stats.blobs == 1, "b still holds it"
        assert (await observer.state.stats()).blobs == 0

        async def node_let_go() -> bool:
            return not _blob_fds(node.pid) and not _blob_inodes(node.pid)

        await _until(node_let_go, "the node to close and unmap the freed blob")
        # The agents' views stay valid after the drop (their mappings keep the pages) ...
        assert _blob_inodes(a.pid) == node_inodes
        for proc in (a, b):
            await proc.send_line("release")
            assert (await proc.wait_line("released")) == "released 1"

        # ... until they release them.
        async def agents_let_go() -> bool:
            return not _blob_inodes(a.pid) and not _blob_inodes(b.pid)

        await _until(agents_let_go, "the agents to unmap the released views")
        with pytest.raises(NotFound):
            await observer.state.open_blob(ref_a)
    assert _our_shm_entries() == before, "memfds never appear in /dev/shm"


def _unsealed(data: bytes, seals: int) -> int:
    fd = os.memfd_create("fabric-blob-test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    return fd


async def test_a_blob_that_could_still_change_is_refused_and_the_node_goes_on(
    node: NodeProcess,
) -> None:
    data = _blob(256 * 1024, 3)
    async with connect("mallory", node.url) as agent:
        pool = agent._core.shared
        assert pool.blobs and pool._info is not None
        info, session = pool._info, pool._session

        async def put(fd: int, size: int) -> None:
            try:
                await pool_request(info, session, {"op": "blob-put", "size": size}, [fd], 10.0)
            finally:
                os.close(fd)

        # Writable: the sender could change the bytes after the node hashed them.
        with pytest.raises(BadDescriptor, match="not sealed"):
            await put(_unsealed(data, BLOB_SEALS & ~fcntl.F_SEAL_WRITE), len(data))
        # Growable / shrinkable: a reader could be cut short (SIGBUS).
        with pytest.raises(BadDescriptor, match="not sealed"):
            await put(_unsealed(data, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL), len(data))
        # Sealed, but the size claimed is not the file's.
        with pytest.raises(BadDescriptor, match="bytes, expected"):
            await put(create_blob("fabric-blob-test", data), len(data) + 4096)
        # Not a memfd at all.
        read_end, write_end = os.pipe()
        os.close(write_end)
        with pytest.raises(BadDescriptor, match="sealable"):
            await put(read_end, len(data))
        # No fd with the request.
        with pytest.raises(BadDescriptor, match="exactly one"):
            await pool_request(info, session, {"op": "blob-put", "size": 10}, [], 10.0)
        assert not _blob_fds(node.pid), "every refused fd was closed"
        assert (await agent.state.stats()).blobs == 0

        # The node keeps serving, this very session included.
        ref = await agent.state.share(data)
        view = await agent.state.open_blob(ref)
        assert isinstance(view.obj, SealedMapping) and view.readonly
        assert view == data
        with pytest.raises(TypeError):
            view[0] = 1  # type: ignore[index]
        view.release()


async def test_the_pool_socket_refuses_a_wrong_secret(node: NodeProcess) -> None:
    async with connect("guest", node.url) as agent:
        pool = agent._core.shared
        assert pool._info is not None
        forged = dict(pool._info, secret="0" * 32)
        with pytest.raises(RemoteProtocolError, match="secret"):
            await pool_request(forged, pool._session, {"op": "blob-get", "ref": "x"}, [], 10.0)
        assert (await agent.state.stats()).blobs == 0


async def test_a_killed_holder_releases_its_holds(
    node: NodeProcess, agent_procs: AgentFactory
) -> None:
    holder = await agent_procs("blob-holder", node.url, "doomed")
    await holder.send_line(f"share {SIZE} 11")
    ref = (await holder.wait_line("shared")).split()[1]
    await holder.send_line(f"open {ref}")
    await holder.wait_line("opened")
    async with connect("survivor", node.url) as survivor:
        view = await survivor.state.open_blob(ref)
        assert (await survivor.state.stats()).blobs == 1
        holder.kill()  # SIGKILL: no drop_blob, no goodbye

        async def only_ours_left() -> bool:
            return (await survivor.state.stats()).shared_saved_bytes == 0

        await _until(only_ours_left, "the killed holder's two holds to go")
        assert (await survivor.state.stats()).blobs == 1, "the survivor still holds it"
        assert hashlib.sha256(view).hexdigest() == ref
        await survivor.state.drop_blob(ref)
        assert (await survivor.state.stats()).blobs == 0
        with pytest.raises(NotFound):
            await survivor.state.drop_blob(ref)
        view.release()

        async def closed() -> bool:
            return not _blob_fds(node.pid)

        await _until(closed, "the node to close the freed blob's memfd")


async def test_bytes_from_a_remote_agent_become_one_memfd_for_local_ones(
    tmp_path: Path, fabric_env: dict[str, str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = await start_node(
        tmp_path / "n.sock", fabric_env, extra=["--listen", f"tcp://127.0.0.1:{port}"]
    )
    data = _blob(MiB, 5)
    try:
        async with (
            connect("remote", f"tcp://127.0.0.1:{port}") as remote,
            connect("local", node.url) as local,
        ):
            assert not remote._core.shared.blobs
            ref = await remote.state.share(data)  # bytes in a CONTROL frame
            assert not _blob_fds(node.pid), "stored as bytes until a local agent maps it"
            view = await local.state.open_blob(ref)
            assert isinstance(view.obj, SealedMapping) and view == data
            assert len(_blob_fds(node.pid)) == 1
            again = await local.state.open_blob(ref)
            assert _blob_inodes(os.getpid()) == _blob_inodes(node.pid)
            assert len(_blob_fds(node.pid)) == 1, "moved once"
            remote_view = await remote.state.open_blob(ref)
            assert not isinstance(remote_view.obj, SealedMapping)
            assert remote_view.readonly and remote_view == data
            # Small blobs stay bytes: a memfd per 100-byte blob would cost an fd each.
            small = await local.state.share(b"tiny" * 25)
            small_view = await local.state.open_blob(small)
            assert bytes(small_view) == b"tiny" * 25 and small_view.readonly
            assert len(_blob_fds(node.pid)) == 1
            stats = await local.state.stats()
            assert (stats.blobs, stats.blob_bytes) == (2, MiB + 100)
            view.release()
            again.release()
    finally:
        await node.stop()
