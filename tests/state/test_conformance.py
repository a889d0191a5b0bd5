"""One conformance suite for every StateBackend: the embedded store and a real redis-server.

Every test runs once per backend (the ``backend`` fixture in conftest.py). The rules tested
are stated in fabric/state/_store.py and fabric/state/_lease.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import pytest

from fabric.errors import (
    BackendUnavailable,
    Conflict,
    Fenced,
    LeaseExpired,
    LeaseHeld,
    NotFound,
    PayloadTooLarge,
    StateError,
)
from fabric.state import Lease, StateBackend

from .conftest import MAX_BLOB_BYTES, MAX_VALUE_BYTES

pytestmark = pytest.mark.timeout(60)


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds (never wait forever)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition still false after {within} s")
        await asyncio.sleep(0.02)


async def acquire_when_free(b: StateBackend, key: str, owner: str, ttl: float) -> Lease:
    """Acquire ``key`` for ``owner`` as soon as the current lease on it expires."""
    got: list[Lease] = []

    async def attempt() -> bool:
        try:
            got.append(await b.acquire(key, owner, ttl))
        except LeaseHeld:
            return False
        return True

    await eventually(attempt)
    return got[0]


# --- versions and compare-and-set -----------------------------------------------------------


async def test_get_of_a_missing_key_raises_not_found(backend: StateBackend) -> None:
    with pytest.raises(NotFound):
        await backend.get("nothing")


async def test_first_put_with_expect_zero_creates_version_one(backend: StateBackend) -> None:
    assert await backend.put("k", b"hello", expect=0) == 1
    value, version = await backend.get("k")
    assert bytes(value) == b"hello"
    assert version == 1


async def test_expect_zero_on_an_existing_key_conflicts(backend: StateBackend) -> None:
    await backend.put("k", b"a", expect=0)
    with pytest.raises(Conflict):
        await backend.put("k", b"b", expect=0)
    assert bytes((await backend.get("k"))[0]) == b"a"


async def test_compare_and_set_follows_the_version(backend: StateBackend) -> None:
    v1 = await backend.put("k", b"1", expect=0)
    v2 = await backend.put("k", b"2", expect=v1)
    assert v2 == v1 + 1
    with pytest.raises(Conflict) as info:
        await backend.put("k", b"stale", expect=v1)
    assert info.value.key == "k"
    value, version = await backend.get("k")
    assert (bytes(value), version) == (b"2", v2)


async def test_unconditional_put_bumps_the_version(backend: StateBackend) -> None:
    assert [await backend.put("k", b"x") for _ in range(3)] == [1, 2, 3]


async def test_versions_never_repeat_across_delete(backend: StateBackend) -> None:
    await backend.put("k", b"1")
    v2 = await backend.put("k", b"2")
    await backend.delete("k", expect=v2)
    with pytest.raises(NotFound):
        await backend.get("k")
    with pytest.raises(Conflict):
        await backend.put("k", b"again", expect=v2)
    v3 = await backend.put("k", b"again", expect=0)
    assert v3 == v2 + 1
    assert (await backend.get("k"))[1] == v3


async def test_delete_checks_presence_and_version(backend: StateBackend) -> None:
    with pytest.raises(NotFound):
        await backend.delete("k")
    await backend.put("k", b"1")
    with pytest.raises(Conflict):
        await backend.delete("k", expect=5)
    assert (await backend.get("k"))[1] == 1


async def test_bytes_like_values_round_trip(backend: StateBackend) -> None:
    source = bytearray(b"mutable")
    await backend.put("a", source)
    source[:] = b"changed"  # the backend kept its own copy of mutable memory
    await backend.put("b", memoryview(b"0123456789")[2:5])
    await backend.put("c", b"")
    assert bytes((await backend.get("a"))[0]) == b"mutable"
    assert bytes((await backend.get("b"))[0]) == b"234"
    assert bytes((await backend.get("c"))[0]) == b""


async def test_oversized_value_is_refused_and_nothing_written(backend: StateBackend) -> None:
    with pytest.raises(PayloadTooLarge):
        await backend.put("k", b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(NotFound):
        await backend.get("k")


async def test_concurrent_compare_and_set_has_one_winner(backend: StateBackend) -> None:
    await backend.put("k", b"base", expect=0)
    results = await asyncio.gather(
        *(backend.put("k", b"w%d" % i, expect=1) for i in range(16)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, int)]
    assert winners == [2]
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, int))


async def test_invalid_keys_are_refused(backend: StateBackend) -> None:
    with pytest.raises(StateError):
        await backend.put("", b"x")
    with pytest.raises(StateError):
        await backend.acquire("k", "owner", 0)


async def test_keys_with_braces_stay_distinct(backend: StateBackend) -> None:
    # Redis hash tags end at the first "}": these must still be three separate keys.
    for key in ("a}", "a}:v", "{a}"):
        await backend.put(key, key.encode())
    for key in ("a}", "a}:v", "{a}"):
        assert bytes((await backend.get(key))[0]) == key.encode()


# --- leases and fencing ---------------------------------------------------------------------


async def test_acquire_grants_a_lease_with_a_token(backend: StateBackend) -> None:
    lease = await backend.acquire("k", "alice", 5.0)
    assert (lease.key, lease.owner, lease.expires_in) == ("k", "alice", 5.0)
    assert lease.token >= 1
    assert await backend.put("k", b"v", token=lease.token) == 1


async def test_another_owner_gets_lease_held(backend: StateBackend) -> None:
    await backend.acquire("k", "alice", 30.0)
    with pytest.raises(LeaseHeld):
        await backend.acquire("k", "bob", 30.0)


async def test_writes_to_a_leased_key_need_the_current_token(backend: StateBackend) -> None:
    lease = await backend.acquire("k", "alice", 30.0)
    with pytest.raises(Fenced):
        await backend.put("k", b"no token")
    with pytest.raises(Fenced):
        await backend.put("k", b"wrong token", token=lease.token + 1)
    with pytest.raises(Fenced):
        await backend.delete("k")
    assert await backend.put("k", b"ok", token=lease.token) == 1
    await backend.delete("k", token=lease.token)


async def test_a_token_for_a_never_leased_key_is_refused(backend: StateBackend) -> None:
    with pytest.raises(Fenced):
        await backend.put("k", b"v", token=1)


async def test_same_owner_reacquiring_fences_its_previous_lease(backend: StateBackend) -> None:
    old = await backend.acquire("k", "alice", 30.0)
    new = await backend.acquire("k", "alice", 30.0)
    assert new.token > old.token
    with pytest.raises(Fenced):
        await backend.put("k", b"zombie", token=old.token)
    with pytest.raises(Fenced):
        await backend.renew(old, 30.0)
    assert await backend.put("k", b"new", token=new.token) == 1


async def test_token_increases_across_release(backend: StateBackend) -> None:
    first = await backend.acquire("k", "alice", 30.0)
    assert await backend.release(first) is True
    assert await backend.release(first) is False
    with pytest.raises(LeaseExpired):
        await backend.put("k", b"after release", token=first.token)
    second = await backend.acquire("k", "bob", 30.0)
    assert second.token > first.token
    with pytest.raises(Fenced):
        await backend.put("k", b"stale", token=first.token)
    assert await backend.release(first) is False  # a stale release leaves bob's lease alone
    with pytest.raises(LeaseHeld):
        await backend.acquire("k", "carol", 30.0)


async def test_tokens_strictly_increase_over_many_cycles(backend: StateBackend) -> None:
    tokens = []
    for i in range(20):
        lease = await backend.acquire("k", f"owner-{i % 3}", 30.0)
        tokens.append(lease.token)
        assert await backend.release(lease)
    assert tokens == sorted(set(tokens))


async def test_expired_lease_can_be_taken_and_the_old_token_is_fenced(
    backend: StateBackend,
) -> None:
    old = await backend.acquire("k", "alice", 0.2)
    await backend.put("k", b"by alice", token=old.token)
    new = await acquire_when_free(backend, "k", "bob", 30.0)
    assert new.token > old.token
    with pytest.raises(Fenced):
        await backend.put("k", b"zombie alice", token=old.token)
    with pytest.raises(Fenced):  # fencing is checked before the version
        await backend.put("k", b"zombie alice", expect=99, token=old.token)
    with pytest.raises(Fenced):
        await backend.renew(old, 30.0)
    assert await backend.put("k", b"by bob", token=new.token) == 2


async def test_expired_lease_nobody_took_raises_lease_expired(backend: StateBackend) -> None:
    lease = await backend.acquire("k", "alice", 0.2)

    async def expired() -> bool:
        try:
            await backend.put("k", b"tick", token=lease.token)
        except LeaseExpired:
            return True
        return False

    await eventually(expired)
    with pytest.raises(LeaseExpired):
        await backend.renew(lease, 30.0)
    again = await backend.acquire("k", "alice", 30.0)
    assert again.token > lease.token


async def test_renew_extends_the_lease(backend: StateBackend) -> None:
    lease = await backend.acquire("k", "alice", 0.3)
    renewed = await backend.renew(lease, 30.0)
    assert (renewed.token, renewed.expires_in) == (lease.token, 30.0)
    # Waiting for time itself to pass (there is no event to await): past the original 0.3 s
    # deadline, the renewed lease still holds.
    await asyncio.sleep(0.5)
    with pytest.raises(LeaseHeld):
        await backend.acquire("k", "bob", 30.0)
    assert await backend.put("k", b"still mine", token=lease.token) == 1


async def test_drop_holder_releases_its_leases(backend: StateBackend) -> None:
    await backend.acquire("k1", "alice", 30.0)
    await backend.acquire("k2", "alice", 30.0)
    bobs = await backend.acquire("k3", "bob", 30.0)
    dropped = await backend.drop_holder("alice")
    assert dropped.leases == 2
    assert (await backend.acquire("k1", "carol", 30.0)).owner == "carol"
    with pytest.raises(LeaseHeld):
        await backend.acquire("k3", "carol", 30.0)
    assert await backend.put("k3", b"bob still holds it", token=bobs.token) == 1


# --- shared blobs ---------------------------------------------------------------------------


async def test_same_bytes_are_stored_once_under_one_ref(backend: StateBackend) -> None:
    data = b"embedding table " * 1000
    ref_a = await backend.share(data, "alice")
    ref_b = await backend.share(bytearray(data), "bob")
    assert ref_a == ref_b == hashlib.sha256(data).hexdigest()
    stats = await backend.stats()
    assert (stats.blobs, stats.blob_bytes) == (1, len(data))
    assert stats.shared_saved_bytes == len(data)
    assert bytes(await backend.open_blob(ref_a, "carol")) == data
    assert (await backend.stats()).shared_saved_bytes == 2 * len(data)


async def test_open_blob_of_an_unknown_ref_raises_not_found(backend: StateBackend) -> None:
    with pytest.raises(NotFound):
        await backend.open_blob(hashlib.sha256(b"never").hexdigest(), "alice")


async def test_blob_is_freed_after_the_last_holder_drops(backend: StateBackend) -> None:
    ref = await backend.share(b"doc", "alice")
    await backend.share(b"doc", "bob")
    await backend.drop_blob(ref, "alice")
    assert bytes(await backend.open_blob(ref, "bob")) == b"doc"  # bob now holds it twice
    await backend.drop_blob(ref, "bob")
    assert bytes(await backend.open_blob(ref, "carol")) == b"doc"  # bob's second hold kept it
    await backend.drop_blob(ref, "bob")
    await backend.drop_blob(ref, "carol")
    with pytest.raises(NotFound):
        await backend.open_blob(ref, "dave")
    assert (await backend.stats()).blobs == 0


async def test_dropping_a_hold_one_does_not_have_raises(backend: StateBackend) -> None:
    ref = await backend.share(b"doc", "alice")
    with pytest.raises(NotFound):
        await backend.drop_blob(ref, "bob")
    await backend.drop_blob(ref, "alice")
    with pytest.raises(NotFound):
        await backend.drop_blob(ref, "alice")


async def test_drop_holder_lets_go_of_every_blob(backend: StateBackend) -> None:
    mine = await backend.share(b"only alice", "alice")
    await backend.share(b"only alice", "alice")
    ours = await backend.share(b"alice and bob", "alice")
    await backend.share(b"alice and bob", "bob")
    dropped = await backend.drop_holder("alice")
    assert dropped.blobs == 2
    with pytest.raises(NotFound):
        await backend.open_blob(mine, "carol")
    assert bytes(await backend.open_blob(ours, "carol")) == b"alice and bob"
    assert (await backend.drop_holder("alice")).blobs == 0


async def test_a_large_blob_round_trips(backend: StateBackend) -> None:
    data = bytes(range(256)) * (6 * 1024)  # 1.5 MiB: the embedded store hashes it in a thread
    ref = await backend.share(bytearray(data), "alice")
    assert ref == hashlib.sha256(data).hexdigest()
    assert bytes(await backend.open_blob(ref, "bob")) == data
    assert (await backend.stats()).blob_bytes == len(data)


async def test_oversized_blob_is_refused(backend: StateBackend) -> None:
    with pytest.raises(PayloadTooLarge):
        await backend.share(b"x" * (MAX_BLOB_BYTES + 1), "alice")
    assert (await backend.stats()).blobs == 0


async def test_stats_count_private_and_blob_bytes(backend: StateBackend) -> None:
    assert (await backend.stats()).private_bytes == 0
    await backend.put("a", b"x" * 100)
    await backend.put("b", b"y" * 50)
    await backend.put("a", b"x" * 10)
    await backend.share(b"z" * 1000, "alice")
    await backend.share(b"z" * 1000, "bob")
    await backend.share(b"w" * 10, "bob")
    stats = await backend.stats()
    assert (stats.keys, stats.private_bytes) == (2, 60)
    assert (stats.blobs, stats.blob_bytes, stats.shared_saved_bytes) == (2, 1010, 1000)
    await backend.delete("b")
    assert (await backend.stats()).private_bytes == 10


async def test_a_closed_backend_refuses_every_call(backend: StateBackend) -> None:
    await backend.put("k", b"v")
    await backend.aclose()
    with pytest.raises(BackendUnavailable):
        await backend.get("k")
    with pytest.raises(BackendUnavailable):
        await backend.put("k", b"w")
    with pytest.raises(BackendUnavailable):
        await backend.share(b"blob", "alice")
    await backend.aclose()  # idempotent
