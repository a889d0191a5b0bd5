"""Session transitions and typed errors across the wire."""

from __future__ import annotations

import pytest

from fabric import errors
from fabric.errors import ConnectionLost, RemoteProtocolError, error_from_wire
from fabric.session import Session, SessionState
from fabric.wire import Kind


def test_only_hello_before_handshake() -> None:
    s = Session()
    for kind in (Kind.PUB, Kind.SUB, Kind.PING, Kind.CONTROL):
        with pytest.raises(ConnectionLost):
            s.check(kind)
    s.activate("agent", {}, now=1.0)
    assert s.state is SessionState.ACTIVE
    s.check(Kind.PUB)
    with pytest.raises(RemoteProtocolError):
        s.check(Kind.HELLO)  # no second handshake
    s.close()
    with pytest.raises(RemoteProtocolError):
        s.check(Kind.PUB)


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_round_trips_by_code(name: str) -> None:
    cls = getattr(errors, name)
    if not isinstance(cls, type):
        return
    rebuilt = error_from_wire(cls.code, "it broke", subject="a.b")
    assert type(rebuilt) is cls
    assert rebuilt.subject == "a.b"
    assert "it broke" in str(rebuilt)


def test_unknown_code_is_a_remote_error_not_silence() -> None:
    err = error_from_wire("brand_new_code", "from a newer peer")
    assert isinstance(err, errors.RemoteError)
    assert err.remote_code == "brand_new_code"


def test_timeout_is_also_a_builtin_timeout() -> None:
    assert issubclass(errors.Timeout, TimeoutError)
