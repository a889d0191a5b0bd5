"""The pure StateStore with a fake ``now``: versions, CAS, fencing, blobs, accounting."""

from __future__ import annotations

import hashlib

import pytest

from fabric.errors import Conflict, Fenced, LeaseExpired, NotFound, PayloadTooLarge
from fabric.state import StateStore, blob_ref


def test_put_get_versions() -> None:
    s = StateStore()
    assert s.version("k") == 0
    assert s.put("k", b"a", expect=0, now=0) == 1
    assert s.put("k", b"b", expect=1, now=0) == 2
    value, version = s.get("k")
    assert (bytes(value), version) == (b"b", 2)
    with pytest.raises(Conflict):
        s.put("k", b"c", expect=1, now=0)


def test_bytes_are_kept_without_a_copy_and_mutable_memory_is_copied() -> None:
    s = StateStore()
    data = b"immutable payload"
    s.put("k", data, now=0)
    assert s.get("k")[0].obj is data
    view = memoryview(data)[2:6]
    s.put("v", view, now=0)
    stored = s.get("v")[0]
    assert stored.obj is data and bytes(stored) == b"muta"
    view.release()
    assert bytes(s.get("v")[0]) == b"muta"  # our view survives the caller releasing theirs
    buf = bytearray(b"mutable")
    s.put("m", buf, now=0)
    buf[0] = ord("X")
    assert bytes(s.get("m")[0]) == b"mutable"
    assert s.get("m")[0].readonly


def test_fencing_is_checked_before_the_version() -> None:
    s = StateStore()
    lease = s.acquire("k", "alice", 5, now=0)
    s.put("k", b"a", token=lease.token, now=1)
    s.acquire("k", "bob", 5, now=6)
    with pytest.raises(Fenced):
        s.put("k", b"zombie", expect=99, token=lease.token, now=7)


def test_expired_lease_refuses_writes() -> None:
    s = StateStore()
    lease = s.acquire("k", "alice", 5, now=0)
    with pytest.raises(LeaseExpired):
        s.put("k", b"late", token=lease.token, now=5)
    with pytest.raises(LeaseExpired):
        s.delete("k", token=lease.token, now=5)


def test_delete_keeps_the_version_history() -> None:
    s = StateStore()
    s.put("k", b"a", now=0)
    s.put("k", b"b", now=0)
    s.delete("k", expect=2, now=0)
    assert s.version("k") == 0
    with pytest.raises(NotFound):
        s.get("k")
    assert s.put("k", b"c", expect=0, now=0) == 3


def test_value_limit() -> None:
    s = StateStore(max_value_bytes=4)
    s.put("k", b"1234", now=0)
    with pytest.raises(PayloadTooLarge) as info:
        s.put("k", b"12345", now=0)
    assert (info.value.size, info.value.limit) == (5, 4)


def test_blob_ref_is_sha256_hex() -> None:
    assert blob_ref(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_blob_holds_are_counted_per_holder() -> None:
    s = StateStore()
    ref = s.share(b"weights", "a")
    assert s.share(b"weights", "a") == ref
    s.open_blob(ref, "b")
    assert (s.holds(ref, "a"), s.holds(ref, "b")) == (2, 1)
    s.drop_blob(ref, "a")
    s.drop_blob(ref, "b")
    assert s.holds(ref, "a") == 1
    s.drop_blob(ref, "a")
    with pytest.raises(NotFound):
        s.open_blob(ref, "c")


def test_open_blob_returns_the_stored_bytes_without_a_copy() -> None:
    s = StateStore()
    data = b"x" * 4096
    ref = s.share(data, "a")
    assert s.open_blob(ref, "b").obj is data


def test_drop_holder_releases_holds_and_leases() -> None:
    s = StateStore()
    r1 = s.share(b"one", "a")
    s.share(b"one", "a")
    r2 = s.share(b"two", "a")
    s.share(b"two", "b")
    s.acquire("k", "a", 10, now=0)
    dropped = s.drop_holder("a", now=1)
    assert (dropped.blobs, dropped.leases) == (2, 1)
    assert s.holds(r1, "a") == 0 and s.holds(r2, "b") == 1
    with pytest.raises(NotFound):
        s.open_blob(r1, "c")
    assert s.acquire("k", "c", 10, now=1).token == 2


def test_stats_accounting() -> None:
    s = StateStore()
    s.put("a", b"x" * 100, now=0)
    s.put("a", b"x" * 40, now=0)
    s.put("b", b"y" * 10, now=0)
    ref = s.share(b"z" * 1000, "h1")
    s.share(b"z" * 1000, "h2")
    s.share(b"z" * 1000, "h2")  # a second hold by the same holder saves nothing more
    s.open_blob(ref, "h3")
    stats = s.stats()
    assert (stats.keys, stats.private_bytes) == (2, 50)
    assert (stats.blobs, stats.blob_bytes, stats.shared_saved_bytes) == (1, 1000, 2000)
    s.delete("a", now=0)
    assert s.stats().private_bytes == 10
