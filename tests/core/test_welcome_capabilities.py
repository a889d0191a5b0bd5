"""What a connection may use is read from the node's WELCOME; the URL decides only for a
node that does not say (an older node)."""

from __future__ import annotations

import pytest

from fabric.errors import ConfigError
from sdk._capabilities import Capabilities
from sdk._dial import parse_urls, register_scheme

_POOL = {"socket": "/x", "secret": "s"}


def test_a_node_that_says_is_believed_whatever_the_url() -> None:
    welcome = {"pool": _POOL, "paths": {"shm": True, "direct": True}}
    assert Capabilities.from_welcome(welcome, "tcp://10.0.0.1:4222") == Capabilities(True, True)
    welcome = {"paths": {"shm": False, "direct": False}}
    assert Capabilities.from_welcome(welcome, "unix:///run/n.sock") == Capabilities()


def test_shared_memory_needs_a_pool_to_map() -> None:
    welcome = {"paths": {"shm": True, "direct": True}}
    assert Capabilities.from_welcome(welcome, "unix:///n.sock") == Capabilities(False, True)


def test_an_older_node_is_judged_by_the_url_as_before() -> None:
    assert Capabilities.from_welcome({"pool": _POOL}, "unix:///n.sock") == Capabilities(True, True)
    assert Capabilities.from_welcome({"pool": _POOL}, "tcp://h:1") == Capabilities()
    assert Capabilities.from_welcome({}, "unix:///n.sock") == Capabilities(False, True)


def test_schemes_are_checked_against_the_dialer_table() -> None:
    assert parse_urls("unix:///a, tcp://h:1") == ["unix:///a", "tcp://h:1"]
    with pytest.raises(ConfigError):
        parse_urls("quic://h:1")

    async def opener(url, handler):  # type: ignore[no-untyped-def]
        raise AssertionError("not dialled here")

    register_scheme("quic://", opener)
    try:
        assert parse_urls("quic://h:1") == ["quic://h:1"]
    finally:
        register_scheme("quic://", None)
    with pytest.raises(ConfigError):
        parse_urls("quic://h:1")
