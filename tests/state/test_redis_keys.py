"""Redis key layout: everything one private key (or one blob) needs lives in one Cluster slot,
so its Lua scripts are legal on Redis Cluster. No server needed: names and CRC16 only."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from fabric.state import RedisBackend, blob_ref


@pytest.fixture
def backend() -> RedisBackend:
    # Never connects: building names needs no server.
    return RedisBackend(Redis(port=1))


@pytest.mark.parametrize("key", ["agent-1/scratch", "a}", "a}:v", "{a}", "}{", "é/ü", "x" * 1024])
def test_a_private_keys_four_names_share_one_slot(backend: RedisBackend, key: str) -> None:
    names = backend._skeys(key)
    assert len(set(names)) == 4
    assert len({key_slot(n.encode()) for n in names}) == 1


def test_distinct_keys_get_distinct_names(backend: RedisBackend) -> None:
    keys = ["a", "a}", "a}:v", "a}:ver", "a}:lease", "{a}", "a:v"]
    names = [n for k in keys for n in backend._skeys(k)]
    assert len(names) == len(set(names))


def test_a_blobs_names_share_one_slot(backend: RedisBackend) -> None:
    names = backend._bkeys(blob_ref(b"weights"))
    assert len({key_slot(n.encode()) for n in names}) == 1
