"""The asyncio side: passing the pool fds on a raw socket before a stream transport takes it
(under asyncio and uvloop), and PoolGate's waiting allocation."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import uvloop

from fabric.errors import PoolExhausted
from fabric.shm import (
    PoolGate,
    PoolLayout,
    PoolSettings,
    SharedRegion,
    SlotClassSpec,
    SlotPool,
    create_segment,
    recv_fds_async,
    send_fds_async,
)

SETTINGS = PoolSettings(classes=(SlotClassSpec(slot_size=4096, count=2),))


async def _handshake_then_stream(sock_path: str) -> tuple[bytes, bytes]:
    """Node and agent as the integration should do it: accept, HELLO/WELCOME on the raw
    socket, fds with the layout, then hand the socket to asyncio streams."""
    loop = asyncio.get_running_loop()
    layout = PoolLayout.from_settings(SETTINGS)
    seg = create_segment("fabric-test-async", layout.segment_sizes[0])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen()
    listener.setblocking(False)

    async def node_side() -> None:
        conn, _ = await loop.sock_accept(listener)
        assert await loop.sock_recv(conn, 5) == b"HELLO"
        await loop.sock_sendall(conn, b"WELCOME")
        await send_fds_async(conn, msgpack.packb(layout.to_wire()), [seg])
        reader, writer = await asyncio.open_unix_connection(sock=conn)
        writer.write(b"MSG:" + await reader.readexactly(4))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def agent_side() -> tuple[bytes, bytes]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, sock_path)
        await loop.sock_sendall(sock, b"HELLO")
        welcome = b""
        while len(welcome) < 7:  # exact reads: never consume the byte the fds ride on
            welcome += await loop.sock_recv(sock, 7 - len(welcome))
        data, fds = await recv_fds_async(sock, 65536, maxfds=4)
        region = SharedRegion.attach(PoolLayout.from_wire(msgpack.unpackb(data)), fds)
        region.close()
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        writer.write(b"PING")
        await writer.drain()
        got = await reader.readexactly(8)
        writer.close()
        await writer.wait_closed()
        return welcome, got

    try:
        async with asyncio.timeout(30):
            _, result = await asyncio.gather(node_side(), agent_side())
    finally:
        listener.close()
        os.close(seg)
    return result


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_fds_pass_before_the_stream_takes_the_socket(
    tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        welcome, got = runner.run(_handshake_then_stream(str(tmp_path / "node.sock")))
    assert (welcome, got) == (b"WELCOME", b"MSG:PING")


async def _wait_until_waiting(gate: PoolGate, n: int) -> None:
    # Yield to the loop until the allocations reached their wait (no timed sleeps).
    for _ in range(1000):
        if gate.waiting >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {gate.waiting} of {n} allocations are waiting")


@pytest.mark.timeout(30)
async def test_gate_waits_for_a_release_then_allocates() -> None:
    gate = PoolGate(SlotPool.from_settings(SETTINGS), SETTINGS)
    held = [await gate.allocate("p", 10) for _ in range(2)]
    task = asyncio.create_task(gate.allocate("q", 10, max_wait=20))
    await _wait_until_waiting(gate, 1)
    assert not task.done()
    gate.publish("p", held[0], ["r"])  # still held: nobody wakes
    await asyncio.sleep(0)
    assert not task.done()
    assert gate.release("r", held[0]) is True
    got = await task
    assert got.slot == held[0].slot and got.generation == held[0].generation + 1
    assert gate.waiting == 0


@pytest.mark.timeout(30)
async def test_gate_wakes_waiters_on_drop_holder() -> None:
    gate = PoolGate(SlotPool.from_settings(SETTINGS), SETTINGS)
    for _ in range(2):
        await gate.allocate("dead", 10)
    tasks = [asyncio.create_task(gate.allocate(f"w{i}", 10, max_wait=20)) for i in range(3)]
    await _wait_until_waiting(gate, 3)
    assert gate.drop_holder("dead") == 2
    # Two slots, three waiters: two are served, the third keeps waiting (no spurious error).
    pending = set(tasks)
    while len(pending) > 1:
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    served = [t for t in tasks if t not in pending]
    assert all(t.exception() is None for t in served)
    assert {t.result().slot for t in served} == {0, 1}
    assert gate.waiting == 1
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert gate.waiting == 0


@pytest.mark.timeout(30)
async def test_gate_waiter_on_its_own_cap_wakes_when_it_publishes() -> None:
    settings = PoolSettings(
        classes=(SlotClassSpec(slot_size=4096, count=4),), max_unpublished_per_owner=1
    )
    gate = PoolGate(SlotPool.from_settings(settings), settings)
    first = await gate.allocate("p", 10)
    task = asyncio.create_task(gate.allocate("p", 10, max_wait=20))
    await _wait_until_waiting(gate, 1)
    gate.publish("p", first, ["r"])
    assert (await task).slot != first.slot


@pytest.mark.timeout(30)
async def test_gate_gives_up_at_the_deadline() -> None:
    gate = PoolGate(SlotPool.from_settings(SETTINGS), SETTINGS)
    for _ in range(2):
        await gate.allocate("p", 10)
    start = time.monotonic()
    with pytest.raises(PoolExhausted):
        await gate.allocate("q", 10, max_wait=0.05)
    assert time.monotonic() - start >= 0.05
    assert gate.waiting == 0


@pytest.mark.timeout(30)
async def test_gate_copy_policy_refuses_at_once() -> None:
    settings = SETTINGS.model_copy(update={"when_full": "copy"})
    gate = PoolGate(SlotPool.from_settings(settings), settings)
    for _ in range(2):
        await gate.allocate("p", 10)
    with pytest.raises(PoolExhausted):
        await gate.allocate("q", 10, max_wait=10)
    assert gate.waiting == 0 and gate.pool.stats().refused == 1
