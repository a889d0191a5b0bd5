"""Grants (fabric/grants.py): what a responder accepts, checked with no round trip."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.errors import GrantRefused, NotAuthorized
from fabric.grants import Grant, peek, responder_key, sign, verify

names = st.text(min_size=1, max_size=40)
secrets_ = st.binary(min_size=16, max_size=64)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
ADDRESS = "tcp://10.0.0.2:40001"


@given(names, names, secrets_, times, st.floats(min_value=0.001, max_value=1e6))
def test_a_grant_holds_until_it_expires(
    requester: str, subject: str, secret: bytes, now: float, ttl: float
) -> None:
    key = responder_key(secret, ADDRESS)
    grant = Grant(requester, subject, ADDRESS, now + ttl)
    token = sign(grant, key)
    if now < grant.expires:
        assert verify(token, key, ADDRESS, now) == grant
    assert peek(token) == grant
    with pytest.raises(GrantRefused):
        verify(token, key, ADDRESS, grant.expires)
    with pytest.raises(GrantRefused):
        verify(token, key, ADDRESS, grant.expires + 1)


@given(names, secrets_, secrets_)
def test_another_nodes_key_does_not_verify(subject: str, secret: bytes, other: bytes) -> None:
    token = sign(Grant("a", subject, ADDRESS, 10.0), responder_key(secret, ADDRESS))
    if other != secret:
        with pytest.raises(GrantRefused):
            verify(token, responder_key(other, ADDRESS), ADDRESS, 0.0)


@given(secrets_)
def test_a_grant_opens_one_door_only(secret: bytes) -> None:
    # Another responder of the same node has another key, and the grant names its door.
    other = "tcp://10.0.0.2:40002"
    token = sign(Grant("a", "svc.x", ADDRESS, 10.0), responder_key(secret, ADDRESS))
    with pytest.raises(GrantRefused):
        verify(token, responder_key(secret, other), other, 0.0)
    forged = sign(Grant("a", "svc.x", ADDRESS, 10.0), responder_key(secret, other))
    with pytest.raises(GrantRefused):
        verify(forged, responder_key(secret, ADDRESS), ADDRESS, 0.0)


@given(names, names, secrets_, st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_a_changed_byte_is_refused(
    requester: str, subject: str, secret: bytes, where: int, delta: int
) -> None:
    key = responder_key(secret, ADDRESS)
    raw = bytearray(base64.urlsafe_b64decode(sign(Grant(requester, subject, ADDRESS, 10.0), key)))
    i = where % len(raw)
    raw[i] ^= delta or 1
    token = base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(GrantRefused):
        verify(token, key, ADDRESS, 0.0)


@given(st.text(max_size=200))
def test_garbage_is_refused_never_crashes(token: str) -> None:
    with pytest.raises(GrantRefused):
        verify(token, b"k" * 32, ADDRESS, 0.0)


def test_a_refused_grant_is_not_authorized() -> None:
    assert issubclass(GrantRefused, NotAuthorized)
    assert GrantRefused.code == "grant_refused"


sessions = st.integers(min_value=0, max_value=2**40)


@given(secrets_, sessions, sessions)
def test_a_later_agent_at_the_same_address_has_its_own_key(
    secret: bytes, first: int, later: int
) -> None:
    # An agent that once listened at an address keeps its key; it must not sign for the next.
    token = sign(Grant("a", "svc.x", ADDRESS, 10.0), responder_key(secret, ADDRESS, first))
    if first != later:
        with pytest.raises(GrantRefused):
            verify(token, responder_key(secret, ADDRESS, later), ADDRESS, 0.0)
    else:
        assert verify(token, responder_key(secret, ADDRESS, later), ADDRESS, 0.0).subject == "svc.x"
