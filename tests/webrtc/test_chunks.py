"""Sans-I/O parts of the WebRTC link: chunking frames into data-channel messages and the SDP
fingerprint check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import PayloadTooLarge, RemoteProtocolError
from fabric.framing import FrameDecoder
from fabric.transports._webrtc import CHUNK_SIZE, ChunkWriter, sdp_fingerprints

frames_st = st.lists(
    st.tuples(st.binary(min_size=1, max_size=64), st.binary(max_size=5000)), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(
    frames=frames_st,
    chunk_size=st.integers(1, 4096),
    budgets=st.lists(st.integers(1, 20000), min_size=1, max_size=50),
)
def test_chunks_reassemble_to_the_same_frames(
    frames: list[tuple[bytes, bytes]], chunk_size: int, budgets: list[int]
) -> None:
    writer = ChunkWriter(chunk_size)
    decoder = FrameDecoder(1 << 20)
    for header, payload in frames:
        writer.push(header, payload)
    total = writer.pending
    out: list[tuple[bytes, bytes]] = []
    sent = 0
    i = 0
    while writer.pending:
        chunks = writer.pop(budgets[i % len(budgets)])
        i += 1
        assert chunks, "pop must make progress while anything is pending"
        for chunk in chunks:
            assert 0 < len(chunk) <= chunk_size
            sent += len(chunk)
            out += [(h, bytes(p)) for h, p in decoder.feed(chunk)]
    assert sent == total
    assert out == frames
    assert decoder.buffered == 0


def test_small_frames_share_one_message_and_large_ones_are_split() -> None:
    writer = ChunkWriter()
    for _ in range(10):
        writer.push(b"h", b"x" * 100)
    assert len(writer.pop(1 << 30)) == 1  # 10 frames, one data-channel message
    writer.push(b"h", b"y" * (5 * CHUNK_SIZE))
    chunks = writer.pop(1 << 30)
    assert len(chunks) == 6 and all(len(c) <= CHUNK_SIZE for c in chunks)
    assert writer.pending == 0


def test_pop_respects_the_budget() -> None:
    writer = ChunkWriter(1000)
    writer.push(b"h", b"z" * 10_000)
    first = writer.pop(2500)
    assert sum(map(len, first)) == 3000  # whole messages: stops at the first past the budget
    assert writer.pending == 10_000 + 1 + 8 - 3000


def test_payload_is_referenced_not_copied_until_popped() -> None:
    buf = bytearray(b"a" * 50_000)
    writer = ChunkWriter()
    writer.push(b"h", memoryview(buf))
    buf[-1:] = b"b"  # visible: the writer holds a view (WebRtcLink.send copies writable ones)
    data = b"".join(writer.pop(1 << 30))
    assert data.endswith(b"b")


def test_oversized_frame_announced_in_a_chunk_is_refused_before_buffering() -> None:
    writer = ChunkWriter()
    writer.push(b"h", b"q" * 5000)
    decoder = FrameDecoder(1000)
    with pytest.raises(PayloadTooLarge):
        decoder.feed(writer.pop(10)[0])


SDP = """v=0
o=- 1 1 IN IP4 0.0.0.0
a=fingerprint:sha-256 AB:CD:EF
a=fingerprint:md5 00:11
"""


def test_sdp_fingerprints_keeps_the_checkable_ones() -> None:
    assert sdp_fingerprints(SDP) == [("sha-256", "AB:CD:EF")]


@pytest.mark.parametrize(
    "sdp", ["v=0\n", "a=fingerprint:md5 00:11\n", "a=fingerprint:sha-256 not-hex\n"]
)
def test_sdp_without_a_usable_fingerprint_is_refused(sdp: str) -> None:
    with pytest.raises(RemoteProtocolError):
        sdp_fingerprints(sdp)
