"""Faults: redis-server killed with SIGKILL under a stream of puts, then restarted.

The backend must answer ``BackendUnavailable`` within a bound (never hang), and, with
``appendfsync always``, every put that returned a version must be readable afterwards with that
version or a later one (the put in flight at the kill may or may not have landed).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fabric.errors import BackendUnavailable, LeaseHeld
from fabric.state import RedisBackend

from ._redis_proc import RedisProcess

pytestmark = [pytest.mark.faults, pytest.mark.timeout(90)]

_TIMEOUT = 1.0  # socket timeout of the backend: each round trip ends within it
_KEYS = 8
_ACKED_BEFORE_KILL = 200
_MAX_PUTS = 50_000  # bound on the writer, whatever happens


async def test_kill_during_puts_fails_fast_and_acknowledged_writes_survive(
    tmp_path: Path,
) -> None:
    server = RedisProcess(tmp_path)
    server.start()
    backend = RedisBackend.from_url(server.url, timeout=_TIMEOUT)
    try:
        lease = await backend.acquire("leased", "writer", 600.0)
        acked: dict[str, tuple[int, bytes]] = {}
        enough = asyncio.Event()
        failure: list[tuple[float, BackendUnavailable]] = []

        async def writer() -> None:
            for i in range(_MAX_PUTS):
                key = "leased" if i % _KEYS == 0 else f"k{i % _KEYS}"
                value = b"%d:" % i + b"x" * 512
                token = lease.token if key == "leased" else None
                try:
                    version = await backend.put(key, value, token=token)
                except BackendUnavailable as exc:
                    failure.append((time.monotonic(), exc))
                    return
                acked[key] = (version, value)
                if i + 1 >= _ACKED_BEFORE_KILL:
                    enough.set()

        task = asyncio.create_task(writer())
        await asyncio.wait_for(enough.wait(), timeout=30)
        killed_at = time.monotonic()
        await asyncio.to_thread(server.kill)
        await asyncio.wait_for(task, timeout=10 * _TIMEOUT)

        assert failure, "the writer ran out of puts without noticing the dead server"
        failed_at, exc = failure[0]
        assert failed_at - killed_at < 3 * _TIMEOUT
        assert exc.key is not None

        # While it is down, every call fails the same typed way, and fast.
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await backend.get("k1")
        assert time.monotonic() - started < 2 * _TIMEOUT

        await asyncio.to_thread(server.start)  # same port, same directory, replays the AOF

        assert len(acked) == _KEYS
        for key, (version, value) in acked.items():
            got, got_version = await backend.get(key)
            assert got_version >= version, key
            if got_version == version:
                assert bytes(got) == value, key

        # Leases and fence counters are state too: they survived, and fencing goes on.
        with pytest.raises(LeaseHeld):
            await backend.acquire("leased", "intruder", 10.0)
        after = await backend.put("leased", b"after restart", token=lease.token)
        assert after > acked["leased"][0]
        assert (await backend.acquire("leased", "writer", 10.0)).token > lease.token
    finally:
        await backend.aclose()
        server.kill()
