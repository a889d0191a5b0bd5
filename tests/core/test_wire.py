"""The envelope header and stream framing: round trips, limits, hostile input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.errors import PayloadTooLarge, RemoteProtocolError
from fabric.framing import FrameDecoder, frame_prefix
from fabric.wire import MAX_HEADER_BYTES, Header, Kind, decode_header, encode_header

text = st.text(max_size=64)
uint = st.integers(min_value=0, max_value=2**64 - 1)
headers = st.builds(
    Header,
    kind=st.sampled_from(Kind),
    subject=text,
    reply=text,
    msg_id=uint,
    timeout_ms=uint,
    traceparent=text,
    headers=st.none() | st.dictionaries(text, text, max_size=8),
    sid=uint,
    queue=text,
    status=st.integers(0, 999),
    seq=uint,
    flags=st.integers(0, 3),
)


@given(headers)
def test_header_round_trips(h: Header) -> None:
    assert decode_header(encode_header(h)) == h


@given(st.binary(max_size=512))
def test_any_bytes_decode_or_raise_the_protocol_error(data: bytes) -> None:
    try:
        decode_header(data)
    except RemoteProtocolError:
        pass


@given(
    st.lists(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1),
            st.text(),
            st.none(),
            st.binary(),
            st.booleans(),
            st.floats(),
            st.dictionaries(st.text(), st.integers(0, 9)),
        ),
        min_size=13,
        max_size=13,
    )
)
def test_well_formed_msgpack_with_wrong_types_is_refused(fields: list[object]) -> None:
    fields[0] = 1
    fields[1] = int(Kind.PUB)
    try:
        h = decode_header(msgpack.packb(fields))
    except RemoteProtocolError:
        return
    # Whatever was accepted has exactly the declared types.
    assert isinstance(h.subject, str) and isinstance(h.msg_id, int) and h.msg_id >= 0


def test_version_and_kind_are_checked() -> None:
    good = list(msgpack.unpackb(encode_header(Header(Kind.PUB, subject="a"))))
    with pytest.raises(RemoteProtocolError, match="version"):
        decode_header(msgpack.packb([2, *good[1:]]))
    with pytest.raises(RemoteProtocolError, match="kind"):
        decode_header(msgpack.packb([1, 77, *good[2:]]))
    with pytest.raises(RemoteProtocolError, match="13 fields"):
        decode_header(msgpack.packb(good[:5]))
    with pytest.raises(RemoteProtocolError, match="unsigned"):
        decode_header(msgpack.packb([*good[:4], -1, *good[5:]]))
    with pytest.raises(RemoteProtocolError, match="user headers"):
        decode_header(msgpack.packb([*good[:7], {"k": 1}, *good[8:]]))
    with pytest.raises(RemoteProtocolError):
        decode_header(b"\x00" * (MAX_HEADER_BYTES + 1))


def _stream(frames: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(frame_prefix(len(h), len(p)) + h + p for h, p in frames)


frame_lists = st.lists(
    st.tuples(st.binary(min_size=1, max_size=64), st.binary(max_size=256)), max_size=8
)


@given(frame_lists, st.data())
def test_frames_survive_any_split(frames: list[tuple[bytes, bytes]], data: st.DataObject) -> None:
    raw = _stream(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    decoder = FrameDecoder(max_payload=1024)
    out: list[tuple[bytes, bytes]] = []
    start = 0
    for cut in [*cuts, len(raw)]:
        out += [(h, bytes(p)) for h, p in decoder.feed(raw[start:cut])]
        start = cut
    assert out == frames
    assert decoder.buffered == 0


@given(st.binary(max_size=512), st.integers(1, 64))
def test_decoder_on_garbage_yields_frames_or_typed_errors(data: bytes, step: int) -> None:
    decoder = FrameDecoder(max_payload=128)
    try:
        for i in range(0, len(data), step):
            for header, _payload in decoder.feed(data[i : i + step]):
                try:
                    decode_header(header)
                except RemoteProtocolError:
                    pass
    except (RemoteProtocolError, PayloadTooLarge):
        pass
    # Never more than one maximal frame is buffered.
    assert decoder.buffered <= 8 + MAX_HEADER_BYTES + 128 + 64


def test_oversized_payload_is_refused_from_the_prefix_alone() -> None:
    decoder = FrameDecoder(max_payload=1000)
    with pytest.raises(PayloadTooLarge) as info:
        decoder.feed(frame_prefix(5, 1001))
    assert info.value.limit == 1000 and info.value.size == 1001


def test_payload_views_do_not_copy_whole_frames() -> None:
    raw = _stream([(b"h", b"x" * 100)])
    [(_header, payload)] = FrameDecoder(1000).feed(raw)
    assert payload.obj is raw  # sliced from the chunk received, not copied
