"""The SDK's cached PUB header encoding gives exactly the bytes of a fresh encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.errors import InvalidSubject
from fabric.wire import Header, Kind, decode_header, encode_header, encode_msg
from sdk._pubheader import PubHeaders

_token = st.text(
    alphabet=st.characters(blacklist_characters=" \t\r\n\x00.*>", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
)
subjects = st.lists(_token, min_size=1, max_size=5).map(".".join)
ints = st.one_of(
    st.integers(min_value=0, max_value=300),
    st.integers(min_value=0, max_value=(1 << 64) - 1),
    st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, (1 << 32) - 1, 1 << 32]),
)
texts = st.one_of(st.just(""), st.text(max_size=40))
user_headers = st.one_of(
    st.none(), st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5)
)


def _fresh(subject: str, reply: str, msg_id: int, timeout_ms: int, traceparent: str,
           headers: dict[str, str] | None, status: int, seq: int, flags: int) -> bytes:
    return encode_header(
        Header(
            Kind.PUB, subject=subject, reply=reply, msg_id=msg_id, timeout_ms=timeout_ms,
            traceparent=traceparent, headers=headers, status=status, seq=seq, flags=flags,
        )
    )


@given(
    subject=subjects,
    reply=texts,
    msg_id=ints,
    timeout_ms=ints,
    traceparent=texts,
    headers=user_headers,
    status=ints,
    seq=ints,
    flags=ints,
    checked=st.booleans(),
)
def test_cached_encoding_is_the_fresh_encoding(
    subject: str, reply: str, msg_id: int, timeout_ms: int, traceparent: str,
    headers: dict[str, str] | None, status: int, seq: int, flags: int, checked: bool,
) -> None:
    cache = PubHeaders()
    if checked:
        cache.check(subject)
    fields = (subject, reply, msg_id, timeout_ms, traceparent, headers, status, seq, flags)
    first = cache.encode(*fields)
    assert first == _fresh(*fields)
    assert cache.encode(*fields) == first  # and again, from the cache
    assert decode_header(first).subject == subject


@given(subject=subjects, msg_ids=st.lists(ints, min_size=1, max_size=5))
def test_plain_publishes_to_one_subject(subject: str, msg_ids: list[int]) -> None:
    cache = PubHeaders()
    cache.check(subject)
    for msg_id in msg_ids:
        assert cache.encode(subject, "", msg_id) == _fresh(subject, "", msg_id, 0, "", None,
                                                           0, 0, 0)


@pytest.mark.parametrize("bad", ["", "a..b", "a.*", "a.>", "a b", "x\x00"])
def test_check_refuses_what_validate_subject_refuses(bad: str) -> None:
    cache = PubHeaders()
    with pytest.raises(InvalidSubject):
        cache.check(bad)
    with pytest.raises(InvalidSubject):
        cache.check(bad)  # a refusal is not remembered as valid
    assert len(cache) == 0


def test_the_cache_is_bounded_and_skips_inboxes() -> None:
    cache = PubHeaders(limit=3)
    for i in range(10):
        cache.check(f"s.{i}")
        assert len(cache) <= 3
    cache = PubHeaders()
    cache.check("_INBOX.agent.1")
    assert len(cache) == 0


@given(
    subject=subjects,
    reply=texts,
    msg_id=ints,
    timeout_ms=ints,
    traceparent=texts,
    headers=user_headers,
    sid=ints,
    status=ints,
    seq=ints,
    flags=ints,
)
def test_encode_msg_is_encode_header_of_a_msg(
    subject: str, reply: str, msg_id: int, timeout_ms: int, traceparent: str,
    headers: dict[str, str] | None, sid: int, status: int, seq: int, flags: int,
) -> None:
    # The SDK sends direct requests and replies with ``encode_msg`` (no Header built).
    fresh = encode_header(
        Header(
            Kind.MSG, subject=subject, reply=reply, msg_id=msg_id, timeout_ms=timeout_ms,
            traceparent=traceparent, headers=headers, sid=sid, status=status, seq=seq,
            flags=flags,
        )
    )
    assert encode_msg(
        subject, reply, msg_id, timeout_ms, traceparent, headers, sid, status, seq, flags
    ) == fresh
