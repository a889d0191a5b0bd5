"""Stream chunk batches (sdk/_chunks.py): any chunks, any flush points, any reader pace ->
the same chunks in order, numbered in order, and never more unread than the window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.errors import RemoteProtocolError
from fabric.wire import Status
from sdk._chunks import ChunkBatcher, CreditWindow, Frame, pack_chunks, unpack_chunks

CHUNKS = st.lists(st.binary(max_size=300), max_size=200)


def received(frames: list[Frame]) -> list[tuple[int, bytes]]:
    """What a requester hands out, chunk by chunk, for these frames."""
    out: list[tuple[int, bytes]] = []
    for frame in frames:
        if frame.status == Status.STREAM_CHUNK:
            out.append((frame.seq, bytes(frame.payload)))
        else:
            assert frame.status == Status.STREAM_CHUNKS
            parts = unpack_chunks(frame.payload)
            assert len(parts) >= 2  # a lone chunk goes as a plain frame
            out += [(frame.seq + i, bytes(p)) for i, p in enumerate(parts)]
    return out


@given(CHUNKS)
def test_pack_unpack_round_trip(chunks: list[bytes]) -> None:
    assert [bytes(c) for c in unpack_chunks(pack_chunks(chunks))] == chunks


@settings(max_examples=300)
@given(
    CHUNKS,
    st.lists(st.booleans(), max_size=200),
    st.integers(min_value=64, max_value=2048),
    st.integers(min_value=1, max_value=50),
)
def test_any_flush_points_keep_every_chunk_in_order(
    chunks: list[bytes], ticks: list[bool], max_bytes: int, max_chunks: int
) -> None:
    batcher = ChunkBatcher(max_bytes=max_bytes, max_chunks=max_chunks)
    frames: list[Frame] = []
    for seq, chunk in enumerate(chunks):
        if batcher.fits(chunk):
            frames += list(batcher.offer(chunk, seq))
        else:
            flushed = batcher.flush()
            frames += [flushed] if flushed else []
            frames.append(Frame(Status.STREAM_CHUNK, seq, chunk))
        if seq < len(ticks) and ticks[seq]:  # the loop turned here
            flushed = batcher.flush()
            frames += [flushed] if flushed else []
    flushed = batcher.flush()
    frames += [flushed] if flushed else []
    assert len(batcher) == 0
    assert received(frames) == list(enumerate(chunks))
    for frame in frames:
        if frame.status == Status.STREAM_CHUNKS:
            assert len(frame.payload) <= max_bytes
            assert len(unpack_chunks(frame.payload)) <= max_chunks


@settings(max_examples=300)
@given(
    st.integers(min_value=2, max_value=300),
    st.integers(min_value=0, max_value=600),
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=100),
    st.integers(min_value=2, max_value=40),
)
def test_credit_bounds_unread_chunks_and_the_stream_always_finishes(
    window: int, total: int, reads: list[int], max_chunks: int
) -> None:
    """A responder spending credit chunk by chunk (batched), a reader taking ``reads[i]``
    chunks a turn: never more than ``window`` chunks sent and unread, and no deadlock."""
    credits = CreditWindow(window)
    batcher = ChunkBatcher(max_chunks=max_chunks)
    credit, produced, queue, got = window, 0, 0, 0
    turn = 0
    while got < total:
        # Responder: sends while it has credit, flushes before it would wait.
        while credit > 0 and produced < total:
            credit -= 1
            queue += sum(len(received([f])) for f in batcher.offer(b"c", produced))
            produced += 1
        flushed = batcher.flush()
        queue += len(received([flushed])) if flushed else 0
        assert queue <= window
        # Reader: at least one chunk a few turns, so the test ends.
        want = reads[turn % len(reads)] or (1 if turn % 3 == 2 else 0)
        turn += 1
        for _ in range(min(want, queue)):
            queue -= 1
            got += 1
            credit += credits.consumed()
    assert produced == total


def test_truncated_or_inconsistent_batches_are_refused() -> None:
    good = pack_chunks([b"ab", b"cde"])
    for bad in (b"", good[:3], good[:-1], good + b"x", b"\xff\xff\xff\xff"):
        with pytest.raises(RemoteProtocolError):
            unpack_chunks(bad)


@given(st.binary(max_size=64))
def test_any_bytes_either_split_or_refused(raw: bytes) -> None:
    try:
        parts = unpack_chunks(raw)
    except RemoteProtocolError:
        return
    assert sum(len(p) for p in parts) + 4 * (len(parts) + 1) == len(raw)


def test_window_grants_half_a_window_at_a_time() -> None:
    credits = CreditWindow(8)
    assert [credits.consumed() for _ in range(8)] == [0, 0, 0, 4, 0, 0, 0, 4]
    with pytest.raises(ValueError):
        CreditWindow(1)


@settings(max_examples=200)
@given(CHUNKS, st.lists(st.integers(min_value=1, max_value=20), max_size=50))
def test_the_receiver_hands_out_any_batching_chunk_by_chunk(
    chunks: list[bytes], cuts: list[int]
) -> None:
    """Frames cut anywhere (single chunks and batches mixed) reach the reader as the same
    chunks, in order, numbered in order, each its own message from the responder."""
    from sdk._msg import Msg
    from sdk._replies import StreamReceiver

    receiver = StreamReceiver("gen")
    seq, i = 0, 0
    while seq < len(chunks):
        n = min(cuts[i % len(cuts)] if cuts else 1, len(chunks) - seq)
        i += 1
        part = chunks[seq : seq + n]
        if n == 1:
            frame = Msg("_INBOX.t.1", part[0], status=Status.STREAM_CHUNK, seq=seq, reply="ctl")
        else:
            frame = Msg("_INBOX.t.1", pack_chunks(part), status=Status.STREAM_CHUNKS, seq=seq,
                        reply="ctl")
        receiver.deliver(frame)
        seq += n
    queue = receiver.state.queue
    assert [(m.seq, bytes(m.data)) for m in queue] == list(enumerate(chunks))
    assert all(m.status == Status.STREAM_CHUNK and m.reply == "ctl" for m in queue)
    assert receiver.control == "ctl" or not chunks


def test_chunk_messages_are_those_msg_would_build() -> None:
    """``messages_like`` sets the slots itself (cheaper per chunk): every slot ``Msg(...)``
    sets, a new one included, must come out the same."""
    from sdk._msg import Msg, Sender, messages_like

    template = Msg("_INBOX.t.1", b"batch", headers={"k": "v"}, reply="ctl", deadline=12.5,
                   status=Status.STREAM_CHUNKS, seq=7, msg_id=9, traceparent="00-ab",
                   sender=Sender("gen", "n1"))
    template._conn = object()
    bare = Msg("_INBOX.t.1", b"batch", status=Status.STREAM_CHUNKS, seq=7)
    for origin in (template, bare):
        made = messages_like(origin, [b"a", b"bc"], origin.seq, Status.STREAM_CHUNK)
        for i, msg in enumerate(made):
            expected = Msg(origin.subject, [b"a", b"bc"][i], headers=origin.headers,
                           reply=origin.reply, deadline=origin.deadline,
                           status=Status.STREAM_CHUNK, seq=7 + i, msg_id=origin.msg_id,
                           traceparent=origin.traceparent, agent=origin._agent,
                           via=origin._via, sender=origin.sender)
            expected._conn = origin._conn
            for slot in Msg.__slots__:
                if slot != "__weakref__":
                    assert getattr(msg, slot) == getattr(expected, slot), slot
        if not origin.headers:
            assert made[0].headers is not made[1].headers  # each its own, as Msg(...) gives
