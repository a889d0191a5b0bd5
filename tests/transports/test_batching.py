"""Frames written in one loop iteration leave in one system call, and a batch read back under
any split of the byte stream decodes to the same frames in order."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from link_pairs import MAX_PAYLOAD, LinkPair, unix_pair, webrtc_pair

from fabric.framing import FrameDecoder
from fabric.transports import StreamLink
from fabric.transports._batch import COALESCE_LIMIT, FrameBatch

pytestmark = pytest.mark.timeout(120)

_SIZES = st.one_of(
    st.integers(0, 300),
    st.sampled_from([COALESCE_LIMIT - 9, COALESCE_LIMIT, COALESCE_LIMIT + 1]),
    st.integers(COALESCE_LIMIT, 3 * COALESCE_LIMIT),
)
_FRAMES = st.lists(
    st.tuples(st.binary(min_size=1, max_size=40), _SIZES, st.integers(0, 2**32 - 1)),
    max_size=40,
)


def _encode(batches: list[list[tuple[bytes, bytes]]]) -> bytes:
    """What a stream link writes for these batches: each batch flushed at its end, and
    whenever ``add`` asks for it (a large payload, a full batch)."""
    out = bytearray()
    for batch in batches:
        gathered = FrameBatch()
        for header, payload in batch:
            now = gathered.add(header, payload)
            if now is not None:
                out += gathered.take()
                out += now  # type: ignore[operator]
        out += gathered.take()
        assert gathered.size == 0 and not gathered
    return bytes(out)


@settings(max_examples=150, deadline=None)
@given(frames=_FRAMES, batch_cuts=st.lists(st.integers(0, 40)), data=st.data())
def test_batches_decode_to_the_same_frames_under_any_split(
    frames: list[tuple[bytes, int, int]], batch_cuts: list[int], data: st.DataObject
) -> None:
    made = [(h, random.Random(seed).randbytes(size)) for h, size, seed in frames]
    cuts = sorted({0, len(made), *(c for c in batch_cuts if c <= len(made))})
    batches = [made[a:b] for a, b in itertools.pairwise(cuts)]
    stream = _encode(batches)
    splits = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=30))))
    decoder = FrameDecoder(MAX_PAYLOAD)
    got: list[tuple[bytes, bytes]] = []
    start = 0
    for end in [*splits, len(stream)]:
        for header, payload in decoder.feed(stream[start:end]):
            got.append((header, bytes(payload)))
        start = end
    assert got == made
    assert not decoder.partial


class _CountingTransport:
    """The real transport, with its write calls counted (one call is one write attempt)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1
        self._inner.write(data)

    def writelines(self, data: Any) -> None:
        self.writes += 1
        self._inner.writelines(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _count_writes(link: StreamLink) -> _CountingTransport:
    counting = _CountingTransport(link._transport)
    link._transport = counting  # type: ignore[assignment]
    return counting


async def _one_tick(tmp: Path) -> None:
    pair = await unix_pair(tmp)
    try:
        link = pair.a.link
        assert isinstance(link, StreamLink)
        counting = _count_writes(link)
        for i in range(200):
            link.send(b"h%d" % i, b"x" * (i % 50))
        assert counting.writes == 0  # gathered, not written one by one
        assert link.buffered() > 0  # and counted while gathered
        await asyncio.sleep(0)  # the end of this loop iteration
        assert counting.writes == 1
        got = await pair.b.got.wait_for(200)
        assert [h for h, _ in got] == [b"h%d" % i for i in range(200)]

        # A lone frame is not held back: it leaves at the end of the iteration it was sent in.
        link.send(b"lone", b"")
        await asyncio.sleep(0)
        assert counting.writes == 2
        # A large payload leaves with what was gathered before it, at once.
        link.send(b"small", b"s")
        link.send(b"large", b"L" * (1024 * 1024))
        # One writev where the loop has it (uvloop: the node's loop); Python 3.11's asyncio
        # would join the list (a copy of the payload), so there it is two writes.
        assert counting.writes == (3 if link._vectored else 4)
        got = await pair.b.got.wait_for(203)
        assert [h for h, _ in got[200:]] == [b"lone", b"small", b"large"]
    finally:
        await pair.aclose()


def _loops() -> list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]]:
    loops: list[tuple[str, Callable[[], asyncio.AbstractEventLoop]]] = [
        ("asyncio", asyncio.new_event_loop)
    ]
    try:
        import uvloop

        loops.append(("uvloop", uvloop.new_event_loop))  # the node's loop
    except ImportError:
        pass
    return loops


@pytest.mark.parametrize("loop_factory", [f for _, f in _loops()], ids=[n for n, _ in _loops()])
def test_frames_of_one_iteration_leave_in_one_write(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], tmp_path: Path
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_one_tick(tmp_path))


async def test_webrtc_frames_of_one_iteration_share_data_channel_messages(
    tmp_path: Path,
) -> None:
    pytest.importorskip("aiortc")
    pair: LinkPair = await webrtc_pair(tmp_path)
    try:
        link = pair.a.link
        channel = link._channel  # type: ignore[attr-defined]
        sent: list[int] = []
        real_send = channel.send

        def counting_send(data: bytes) -> None:
            sent.append(len(data))
            real_send(data)

        channel.send = counting_send
        for i in range(200):
            link.send(b"h%d" % i, b"y" * 20)
        await asyncio.sleep(0)
        got: list[tuple[bytes, bytes]] = await pair.b.got.wait_for(200)
        assert [h for h, _ in got] == [b"h%d" % i for i in range(200)]
        assert len(sent) == 1, sent  # 200 small frames, one data-channel message
    finally:
        await pair.aclose()
