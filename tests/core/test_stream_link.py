"""StreamLink over a real socketpair: framing, coalescing, bounded buffering."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fabric.errors import ConnectionLost
from fabric.transports import StreamLink

pytestmark = pytest.mark.timeout(30)


class Collect:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.lost: list[BaseException | None] = []
        self.arrived = asyncio.Event()
        self.want = 0

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self.frames.append((header, bytes(payload)))
        if len(self.frames) >= self.want:
            self.arrived.set()

    def link_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


async def _pair() -> tuple[StreamLink, StreamLink, Collect]:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    sink = Collect()
    _, left = await loop.connect_accepted_socket(lambda: StreamLink(1 << 24), a)
    _, right = await loop.connect_accepted_socket(lambda: StreamLink(1 << 24, sink), b)
    return left, right, sink


async def test_frames_arrive_in_order_small_and_large() -> None:
    left, right, sink = await _pair()
    frames = [(f"h{i}".encode(), bytes([i % 256]) * (i * 997)) for i in range(100)]
    frames.append((b"big", b"\x01" * (3 << 20)))
    sink.want = len(frames)
    for header, payload in frames:
        left.send(header, payload)
    await asyncio.wait_for(sink.arrived.wait(), 10)
    assert sink.frames == frames
    left.close()
    right.close()


async def test_a_sender_that_never_yields_still_writes() -> None:
    left, right, sink = await _pair()
    # 20k frames without ever awaiting: the queue must turn into writes as it goes, not
    # sit in a list until the loop gets control back.
    for i in range(20_000):
        left.send(b"h", i.to_bytes(4, "little"))
        assert left._batch.size < 65536 + 64
    sink.want = 20_000
    await asyncio.wait_for(sink.arrived.wait(), 10)
    assert [int.from_bytes(p, "little") for _, p in sink.frames] == list(range(20_000))
    left.close()
    right.close()


async def test_buffers_are_copied_at_send_time() -> None:
    left, right, sink = await _pair()
    buf = bytearray(b"before")
    left.send(b"h", memoryview(buf))
    buf[:] = b"after!"  # the caller may reuse its buffer once send() returned
    sink.want = 1
    await asyncio.wait_for(sink.arrived.wait(), 10)
    assert sink.frames == [(b"h", b"before")]
    left.close()
    right.close()


async def test_send_after_close_is_connection_lost() -> None:
    left, right, _ = await _pair()
    left.close()
    with pytest.raises(ConnectionLost):
        left.send(b"h", b"")
    right.close()
