"""One conformance suite for every ``Link`` (Unix stream, the mesh's TCP, ZeroMQ, WebRTC), in
the style of trio's ``testing/_check_streams.py``: each test takes a connected pair from the
``pair`` fixture, parametrised over one factory per implementation (link_pairs.py), and
checks a promise of ``fabric.transports.Link`` over real sockets."""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Awaitable, Callable

import pytest
from link_pairs import LinkPair
from procs import until

from fabric.errors import ConnectionLost
from fabric.transports import Link

pytestmark = pytest.mark.timeout(120)

DIRECTIONS = ["a>b", "b>a"]


def numbered(i: int) -> bytes:
    return struct.pack("<I", i)


async def emptied(link: Link, timeout: float = 60.0) -> None:
    """Wait until ``buffered()`` is 0: state only observable by asking (no event to await)."""
    await until(_async(lambda: link.buffered() == 0), timeout, "the link's buffer to empty")


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check()

    return predicate


async def test_frames_arrive_whole_and_in_order_both_ways(pair: LinkPair) -> None:
    rng = random.Random(7)
    # Sizes across every threshold: empty, small (coalesced), around 64 KiB (copy / by
    # reference, data-channel chunks), and a few hundred KiB.
    sizes = [0, 1, 100, 16 * 1024, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 300 * 1024]
    sizes += [rng.choice([0, 10, 1000, 20_000, 70_000]) for _ in range(400)]
    sent_ab: list[tuple[bytes, bytes]] = []
    sent_ba: list[tuple[bytes, bytes]] = []
    for i, size in enumerate(sizes):
        frame = (numbered(i), rng.randbytes(size))
        pair.a.link.send(*frame)
        sent_ab.append(frame)
        if i % 3 == 0:
            back = (numbered(i), rng.randbytes(size // 2))
            pair.b.link.send(*back)
            sent_ba.append(back)
        if i % 50 == 0:
            await asyncio.sleep(0)  # some frames in one loop iteration, some across several
    assert await pair.b.got.wait_for(len(sent_ab)) == sent_ab
    assert await pair.a.got.wait_for(len(sent_ba)) == sent_ba


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_frames_of_several_mib_cross_intact(pair: LinkPair, direction: str) -> None:
    sender, receiver = pair.ends(direction)
    rng = random.Random(11)
    frames = [
        (b"big", rng.randbytes(6 * 1024 * 1024)),
        (b"empty", b""),
        (b"after", rng.randbytes(3 * 1024 * 1024 + 7)),
        (b"small", b"x"),
    ]
    for frame in frames:
        sender.link.send(*frame)
    got = await receiver.got.wait_for(len(frames), timeout=90)
    assert [h for h, _ in got] == [h for h, _ in frames]
    assert got == frames


async def test_close_is_reported_once_and_later_sends_raise(pair: LinkPair) -> None:
    a = pair.a.link
    a.close()
    assert a.closed
    assert await asyncio.wait_for(pair.a.got.lost, 10) is None
    with pytest.raises(ConnectionLost):
        a.send(b"h", b"late")
    assert a.try_send(b"h", b"late") is False
    with pytest.raises(ConnectionLost):
        await a.drain()
    a.close()  # idempotent
    await asyncio.sleep(0)
    assert pair.a.got.lost_calls == 1


async def test_the_peer_sees_a_close(pair: LinkPair) -> None:
    if not pair.peer_sees_close:
        pytest.skip(f"{pair.name} shows no per-peer close; heartbeats tell (documented)")
    b = pair.b.link
    pair.a.link.close()
    await asyncio.wait_for(pair.b.got.lost, 30)
    assert b.closed
    with pytest.raises(ConnectionLost):
        b.send(b"h", b"to nobody")
    assert pair.b.got.lost_calls == 1


async def test_frames_sent_just_before_close_still_arrive(pair: LinkPair) -> None:
    if not pair.close_flushes:
        pytest.skip(f"{pair.name} drops what it holds on close unless asked to linger")
    for i in range(50):
        pair.a.link.send(numbered(i), b"z" * (i * 101))
    pair.a.link.close()
    got = await pair.b.got.wait_for(50)
    assert [h for h, _ in got] == [numbered(i) for i in range(50)]


def _fill(link: Link, target: int, size: int = 4096) -> int:
    """Send numbered frames until ``buffered()`` exceeds ``target``; returns how many."""
    payload = b"p" * size
    n = 0
    cap = (256 * 1024 * 1024) // size  # ZeroMQ hides up to 2 x HWM messages in its pipes
    while link.buffered() <= target:
        assert n < cap, "buffered() never grew while the reader was stopped"
        link.send(numbered(n), payload)
        n += 1
    return n


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_buffered_grows_while_the_reader_is_stopped_and_drains_after(
    pair: LinkPair, direction: str
) -> None:
    sender, receiver = pair.ends(direction)
    link = sender.link
    receiver.pause()
    sent = _fill(link, 2 * 1024 * 1024)
    assert link.buffered() > 2 * 1024 * 1024
    # Past its limit the link refuses instead of holding more (bounded memory).
    link.limit = link.buffered() - 1
    assert link.try_send(b"over", b"the limit") is False
    receiver.resume()
    await asyncio.wait_for(link.drain(), 60)
    got = await receiver.got.wait_for(sent)
    assert [h for h, _ in got] == [numbered(i) for i in range(sent)]
    await emptied(link)


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_a_slow_consumer_is_refused_never_dropped_silently(
    pair: LinkPair, direction: str
) -> None:
    """``try_send`` refuses once the reader is too far behind; every frame it took arrives,
    in order, and only those: the caller knows of every refusal (and counts, tells)."""
    sender, receiver = pair.ends(direction)
    link = sender.link
    link.limit = 512 * 1024
    receiver.pause()
    accepted: list[bytes] = []
    refused = 0
    payload = b"s" * 4096
    i = 0
    while refused < 20:
        assert i < 65_536, "try_send never refused while the reader was stopped"
        if link.try_send(numbered(i), payload):
            accepted.append(numbered(i))
        else:
            refused += 1
        i += 1
    assert link.buffered() > link.limit
    receiver.resume()
    got = await receiver.got.wait_for(len(accepted))
    await emptied(link)
    # Taken again once the reader caught up, after everything taken before it.
    assert link.try_send(b"after", b"")
    got = await receiver.got.wait_for(len(accepted) + 1)
    assert [h for h, _ in got] == [*accepted, b"after"]


async def test_frames_of_one_loop_iteration_are_all_delivered_before_a_later_one(
    pair: LinkPair,
) -> None:
    """Batching keeps order across the flush at the end of a loop iteration."""
    for i in range(100):
        pair.a.link.send(numbered(i), b"x" * (i * 13))
    await asyncio.sleep(0)
    pair.a.link.send(numbered(100), b"")
    got = await pair.b.got.wait_for(101)
    assert [h for h, _ in got] == [numbered(i) for i in range(101)]

