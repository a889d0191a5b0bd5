"""Fixtures of the state-tier tests: every backend, and a real redis-server per session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fabric.state import EmbeddedBackend, StateBackend

from ._redis_proc import RedisProcess

#: Small limits, so PayloadTooLarge is testable without allocating hundreds of MiB.
MAX_VALUE_BYTES = 1024 * 1024
MAX_BLOB_BYTES = 2 * 1024 * 1024


@pytest.fixture(params=["embedded", "durable", "redis"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StateBackend]:
    """Each backend, fresh (the embedded one in memory and in a file): the Redis one gets a
    namespace of its own on the session server."""
    b: StateBackend
    if request.param == "embedded":
        b = EmbeddedBackend(max_value_bytes=MAX_VALUE_BYTES, max_blob_bytes=MAX_BLOB_BYTES)
    elif request.param == "durable":
        # The embedded store kept in a SQLite file, each write fsync'd (state_durability=always).
        b = EmbeddedBackend(
            max_value_bytes=MAX_VALUE_BYTES,
            max_blob_bytes=MAX_BLOB_BYTES,
            path=tmp_path / "state.db",
        )
    else:
        from fabric.state import RedisBackend

        server: RedisProcess = request.getfixturevalue("redis_server")
        b = RedisBackend.from_url(
            server.url,
            namespace=f"t-{uuid.uuid4().hex[:12]}",
            max_value_bytes=MAX_VALUE_BYTES,
            max_blob_bytes=MAX_BLOB_BYTES,
        )
    yield b
    await b.aclose()
