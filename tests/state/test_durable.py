"""The durable embedded store across reopenings of its file (the node's restart, in-process).

The process-level version (kill -9 of a real node between acknowledged writes) is in
tests/integration/test_state_durable.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fabric.errors import BackendUnavailable, Fenced, LeaseExpired, LeaseHeld, NotFound
from fabric.state import EmbeddedBackend
from fabric.state._durable import Sync

pytestmark = pytest.mark.timeout(60)

SYNCS: list[Sync] = ["always", "everysec"]


class Clock:
    """A monotonic clock the test moves; each "process" starts its own at a different zero."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("sync", SYNCS)
async def test_values_and_versions_survive_a_reopen(tmp_path: Path, sync: Sync) -> None:
    path = tmp_path / "s.db"
    b = EmbeddedBackend(path=path, sync=sync)
    for i in range(200):
        await b.put(f"k{i}", f"v{i}".encode())
        await b.put(f"k{i}", f"w{i}".encode())
    await b.put("gone", b"x")
    await b.delete("gone")
    await b.aclose()

    again = EmbeddedBackend(path=path, sync=sync)
    for i in range(200):
        value, version = await again.get(f"k{i}")
        assert (bytes(value), version) == (f"w{i}".encode(), 2)
    with pytest.raises(NotFound):
        await again.get("gone")
    # Versions continue from the highest ever, deleted keys included (no ABA after restart).
    assert await again.put("k0", b"next") == 3
    assert await again.put("gone", b"back") == 2
    await again.aclose()


async def test_fencing_tokens_never_go_back_and_the_zombie_is_fenced(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    before = EmbeddedBackend(path=path, clock=Clock(1000.0))
    zombie = await before.acquire("k", "agent-a", ttl=0.5)
    await before.put("k", b"by the zombie", token=zombie.token)
    # Closed here; tests/integration/test_state_durable.py kills a real node instead.
    await before.aclose()

    clock = Clock(5.0)  # a new process: its monotonic clock has nothing to do with the old one
    after = EmbeddedBackend(path=path, clock=clock)
    clock.now += 1.0  # the zombie's lease ran out meanwhile
    fresh = await after.acquire("k", "agent-b", ttl=30)
    assert fresh.token > zombie.token
    with pytest.raises(Fenced):
        await after.put("k", b"stale write", token=zombie.token)
    assert await after.put("k", b"by the new holder", token=fresh.token) == 2
    value, version = await after.get("k")
    assert (bytes(value), version) == (b"by the new holder", 2)
    await after.aclose()


async def test_a_live_lease_outlives_the_restart_for_its_ttl(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    b = EmbeddedBackend(path=path)
    lease = await b.acquire("k", "agent-a", ttl=60)
    await b.aclose()

    again = EmbeddedBackend(path=path)
    with pytest.raises(LeaseHeld):
        await again.acquire("k", "agent-b", ttl=1)
    assert await again.put("k", b"v", token=lease.token) == 1
    assert await again.release(lease)
    await again.aclose()

    third = EmbeddedBackend(path=path)
    with pytest.raises(LeaseExpired):
        await third.put("k", b"after release", token=lease.token)
    assert (await third.acquire("k", "agent-b", ttl=1)).token == lease.token + 1
    await third.aclose()


async def test_concurrent_writers_all_land_in_order(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    b = EmbeddedBackend(path=path)
    versions = await asyncio.gather(*(b.put("k", str(i).encode()) for i in range(100)))
    assert sorted(versions) == list(range(1, 101))
    last = bytes((await b.get("k"))[0])
    await b.aclose()
    again = EmbeddedBackend(path=path)
    value, version = await again.get("k")
    assert (bytes(value), version) == (last, 100)
    await again.aclose()


async def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BackendUnavailable):
        EmbeddedBackend(path=path)


async def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = EmbeddedBackend(path=path)
    with pytest.raises(BackendUnavailable, match="in use"):
        EmbeddedBackend(path=path)
    await first.aclose()
    second = EmbeddedBackend(path=path)  # the lock went with the first
    await second.aclose()
