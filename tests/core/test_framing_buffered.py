"""The stream decoder read the BufferedProtocol way (``get_buffer``/``buffer_updated``, what
``StreamLink`` does) and the ``feed`` way: frames of every size around the thresholds survive
any split into reads, payload views stay valid after later reads, and the pending-byte budget
is given back when frames end (fabric/protocol/_framing.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fabric.errors import PayloadTooLarge, RemoteProtocolError
from fabric.protocol import LARGE_PAYLOAD, READ_SIZE, FrameDecoder, PendingBudget, frame_prefix
from fabric.protocol._framing import _PayloadBuffers
from fabric.transports import StreamLink

MAX = 4 * READ_SIZE

#: Payload sizes at and around every boundary the decoder has.
EDGES = [
    0,
    1,
    7,
    8,
    9,
    LARGE_PAYLOAD - 1,
    LARGE_PAYLOAD,
    LARGE_PAYLOAD + 1,
    READ_SIZE - 40,
    READ_SIZE - 1,
    READ_SIZE,
    READ_SIZE + 1,
    2 * READ_SIZE + 3,
]

sizes = st.one_of(st.sampled_from(EDGES), st.integers(0, 3 * READ_SIZE))
frames_st = st.lists(st.tuples(st.integers(1, 40), sizes), min_size=1, max_size=5)
splits_st = st.lists(
    st.one_of(st.integers(1, 16), st.sampled_from([8, 11]), st.integers(1, 3 * READ_SIZE)),
    min_size=1,
)


def make(frames: list[tuple[int, int]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    wire = bytearray()
    want = []
    for i, (header_len, payload_len) in enumerate(frames):
        header = bytes([i % 251 + 1]) * header_len
        # A pattern that differs per frame and per offset: an overwritten view shows.
        payload = bytes((i * 31 + k) % 253 for k in range(min(payload_len, 509))) * (
            payload_len // 509 + 1
        )
        payload = payload[:payload_len]
        wire += frame_prefix(header_len, payload_len) + header + payload
        want.append((header, payload))
    return bytes(wire), want


def read_all(
    decoder: FrameDecoder, wire: bytes, splits: list[int]
) -> list[tuple[bytes, memoryview]]:
    """Deliver ``wire`` through get_buffer/buffer_updated, each read at most the next split."""
    got: list[tuple[bytes, memoryview]] = []
    pos = i = 0
    while pos < len(wire):
        buf = decoder.get_buffer()
        assert len(buf) > 0
        n = min(len(buf), splits[i % len(splits)], len(wire) - pos)
        i += 1
        buf[:n] = wire[pos : pos + n]
        pos += n
        got += decoder.buffer_updated(n)
    return got


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=frames_st, splits=splits_st)
# A read that ends exactly after a prefix, of a small frame and of a large one.
@example(frames=[(3, 10), (3, 10)], splits=[8, 13, 8])
@example(frames=[(3, LARGE_PAYLOAD + 9)], splits=[8, 3, READ_SIZE])
def test_any_read_split_gives_the_frames_back(
    frames: list[tuple[int, int]], splits: list[int]
) -> None:
    wire, want = make(frames)
    budget = PendingBudget(MAX * 2)
    decoder = FrameDecoder(MAX, budget)
    got = read_all(decoder, wire, splits)
    # Checked only now, after every later read: a view that a read overwrote would show.
    assert [(h, bytes(p)) for h, p in got] == want
    assert all(p.readonly for _, p in got)
    assert not decoder.partial and decoder.buffered == 0 and budget.used == 0
    assert decoder.received == len(wire)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=frames_st, splits=splits_st, feed_first=st.booleans())
def test_feed_and_buffered_reads_mix(
    frames: list[tuple[int, int]], splits: list[int], feed_first: bool
) -> None:
    """A driver may switch between the two ways in (``StreamLink.poll`` reads with
    ``recv_into``, a test or a plain-Protocol caller feeds bytes)."""
    wire, want = make(frames)
    decoder = FrameDecoder(MAX)
    got: list[tuple[bytes, memoryview]] = []
    pos = i = 0
    while pos < len(wire):
        n = min(splits[i % len(splits)], len(wire) - pos)
        if (i % 2 == 0) == feed_first:
            got += decoder.feed(wire[pos : pos + n])
        else:
            buf = decoder.get_buffer()
            n = min(n, len(buf))
            buf[:n] = wire[pos : pos + n]
            got += decoder.buffer_updated(n)
        pos += n
        i += 1
    assert [(h, bytes(p)) for h, p in got] == want
    assert not decoder.partial


def test_a_large_payload_is_read_into_its_own_buffer() -> None:
    """After the first piece, reads go straight into the payload's buffer, which is exactly
    the rest of it, and the frame handed on is a view of that buffer."""
    size = 4 * READ_SIZE + 5
    wire = frame_prefix(3, size) + b"hdr" + bytes(range(256)) * (size // 256) + b"\1" * (size % 256)
    decoder = FrameDecoder(MAX * 2)
    first = decoder.get_buffer()
    first[:READ_SIZE] = wire[:READ_SIZE]
    assert decoder.buffer_updated(READ_SIZE) == []
    rest = decoder.get_buffer()
    assert len(rest) == len(wire) - READ_SIZE
    rest[:] = wire[READ_SIZE:]
    [(header, payload)] = decoder.buffer_updated(len(rest))
    assert header == b"hdr" and payload.obj is rest.obj and bytes(payload) == wire[11:]
    assert payload.readonly


def test_buffer_grows_with_arrived_bytes_and_charges_the_budget() -> None:
    budget = PendingBudget(3 * LARGE_PAYLOAD)
    decoder = FrameDecoder(64 * 1024 * 1024, budget)
    buf = decoder.get_buffer()
    wire = frame_prefix(1, 60 * 1024 * 1024) + b"h" + b"\0" * 1000
    buf[: len(wire)] = wire
    assert decoder.buffer_updated(len(wire)) == []
    assert decoder.buffered == 1000 and budget.used == 1000
    with pytest.raises(RemoteProtocolError):
        rest = decoder.get_buffer()
        rest[: 3 * LARGE_PAYLOAD] = b"\0" * (3 * LARGE_PAYLOAD)
        decoder.buffer_updated(3 * LARGE_PAYLOAD)
    decoder.reset()
    assert budget.used == 0 and not decoder.partial


@pytest.mark.parametrize(
    ("prefix", "error"),
    [
        (frame_prefix(0, 10), RemoteProtocolError),
        (frame_prefix(1 << 20, 10), RemoteProtocolError),
        (frame_prefix(4, MAX + 1), PayloadTooLarge),
    ],
)
@pytest.mark.parametrize("after", [0, 1, 5])
def test_malformed_prefixes_raise_after_good_frames(
    prefix: bytes, error: type[Exception], after: int
) -> None:
    """Good frames before it in the same read, then a bad length: the decoder raises (the
    link closes), whichever way the bytes came in."""
    good = b"".join(frame_prefix(1, 2) + b"h" + b"pp" for _ in range(after))
    decoder = FrameDecoder(MAX)
    buf = decoder.get_buffer()
    data = good + prefix
    buf[: len(data)] = data
    with pytest.raises(error):
        decoder.buffer_updated(len(data))
    with pytest.raises(error):
        FrameDecoder(MAX).feed(data)


def read_frame(decoder: FrameDecoder, wire: bytes) -> tuple[bytes, memoryview]:
    [frame] = read_all(decoder, wire, [READ_SIZE // 2])
    return frame


def test_a_large_buffer_is_reused_only_once_nothing_refers_to_it() -> None:
    """Payload buffers are kept for reuse (a fresh mapping costs a page fault per page), but
    one is handed out again only when no view of it is left."""
    decoder = FrameDecoder(MAX)
    # Its own set of kept buffers: the thread's set holds what earlier tests left in it.
    decoder._buffers = _PayloadBuffers()
    size = 2 * READ_SIZE
    first_wire = frame_prefix(1, size) + b"h" + b"\1" * size
    _, first = read_frame(decoder, first_wire)
    held = id(first.obj)  # not a reference: one would keep the buffer in use
    _, second = read_frame(decoder, frame_prefix(1, size) + b"h" + b"\2" * size)
    assert id(second.obj) != held  # ``first`` is still referred to
    assert bytes(first) == b"\1" * size and bytes(second) == b"\2" * size
    view_of_second = second[10:20]
    del first, second
    _, third = read_frame(decoder, frame_prefix(1, size - 5) + b"h" + b"\3" * (size - 5))
    assert id(third.obj) == held  # free again: reused, at the payload's own length
    assert len(third) == size - 5 and bytes(third) == b"\3" * (size - 5)
    assert bytes(view_of_second) == b"\2" * 10


class _Sink:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.arrived = asyncio.Event()

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self.frames.append((header, bytes(payload)))
        self.arrived.set()

    def link_lost(self, exc: BaseException | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("prefix", [frame_prefix(0, 10), frame_prefix(4, MAX + 1)])
async def test_a_malformed_prefix_closes_only_its_link(prefix: bytes) -> None:
    """Two links read by one loop (one read buffer): a bad length on one closes that one,
    mid-way through a large payload on the other, which carries on whole."""
    loop = asyncio.get_running_loop()
    bad_sink, good_sink = _Sink(), _Sink()
    bad_raw, bad_end = socket.socketpair()
    good_raw, good_end = socket.socketpair()
    await loop.connect_accepted_socket(lambda: StreamLink(MAX, bad_sink), bad_end)
    _, good = await loop.connect_accepted_socket(lambda: StreamLink(MAX, good_sink), good_end)
    big = bytes(range(256)) * (2 * READ_SIZE // 256)
    wire = frame_prefix(1, len(big)) + b"h" + big
    good_raw.setblocking(False)
    await loop.sock_sendall(good_raw, wire[: READ_SIZE // 2])
    bad_raw.sendall(prefix + b"\0" * 64)
    assert isinstance(
        await asyncio.wait_for(bad_sink.lost, 10), RemoteProtocolError | PayloadTooLarge
    )
    assert bad_sink.frames == []
    await loop.sock_sendall(good_raw, wire[READ_SIZE // 2 :])
    await asyncio.wait_for(good_sink.arrived.wait(), 10)
    assert good_sink.frames == [(b"h", big)] and not good_sink.lost.done()
    good.close()
    for s in (bad_raw, good_raw):
        s.close()
