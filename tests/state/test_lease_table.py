"""The pure LeaseTable with a fake ``now``: no clock, no event loop."""

from __future__ import annotations

import pytest

from fabric.errors import Fenced, LeaseExpired, LeaseHeld, StateError
from fabric.state import LeaseTable


def test_tokens_start_at_one_and_never_reset() -> None:
    t = LeaseTable()
    assert t.fence("k") == 0
    a = t.acquire("k", "alice", 10, now=0)
    assert a.token == 1
    t.release(a, now=1)
    b = t.acquire("k", "bob", 10, now=2)
    c = t.acquire("k", "carol", 10, now=12)  # bob's lease ran out at 12
    assert (b.token, c.token, t.fence("k")) == (2, 3, 3)


def test_tokens_are_per_key() -> None:
    t = LeaseTable()
    assert t.acquire("a", "x", 1, now=0).token == 1
    assert t.acquire("b", "x", 1, now=0).token == 1


def test_lease_is_live_strictly_before_its_deadline() -> None:
    t = LeaseTable()
    lease = t.acquire("k", "alice", 5, now=100)
    t.check("k", lease.token, now=104.999)
    with pytest.raises(LeaseHeld):
        t.acquire("k", "bob", 5, now=104.999)
    with pytest.raises(LeaseExpired):
        t.check("k", lease.token, now=105)
    assert t.acquire("k", "bob", 5, now=105).token == 2


def test_check_rules() -> None:
    t = LeaseTable()
    t.check("free", None, now=0)
    with pytest.raises(Fenced):
        t.check("free", 1, now=0)
    lease = t.acquire("k", "alice", 5, now=0)
    with pytest.raises(Fenced):
        t.check("k", None, now=1)
    with pytest.raises(Fenced):
        t.check("k", lease.token + 1, now=1)
    newer = t.acquire("k", "alice", 5, now=2)
    with pytest.raises(Fenced):
        t.check("k", lease.token, now=3)
    t.check("k", newer.token, now=3)


def test_released_key_stays_lease_guarded() -> None:
    t = LeaseTable()
    lease = t.acquire("k", "alice", 5, now=0)
    assert t.release(lease, now=1)
    with pytest.raises(LeaseExpired):
        t.check("k", lease.token, now=1)
    with pytest.raises(Fenced):
        t.check("k", None, now=1)


def test_renew_moves_the_deadline_and_keeps_the_token() -> None:
    t = LeaseTable()
    lease = t.acquire("k", "alice", 5, now=0)
    renewed = t.renew(lease, 5, now=4)
    assert renewed.token == lease.token
    t.check("k", lease.token, now=8.9)
    with pytest.raises(LeaseExpired):
        t.renew(lease, 5, now=9)
    with pytest.raises(StateError):
        t.renew(lease, -1, now=1)


def test_release_is_a_no_op_for_anything_but_the_live_lease() -> None:
    t = LeaseTable()
    old = t.acquire("k", "alice", 5, now=0)
    new = t.acquire("k", "bob", 5, now=6)
    assert not t.release(old, now=7)
    assert t.holder("k", now=7) is not None
    assert not t.release(new, now=20)  # expired
    assert t.holder("k", now=20) is None


def test_expire_reports_ended_leases_and_next_deadline() -> None:
    t = LeaseTable()
    t.acquire("a", "x", 1, now=0)
    t.acquire("b", "x", 3, now=0)
    assert t.next_deadline() == 1
    assert t.expire(now=2) == ["a"]
    assert t.next_deadline() == 3
    assert t.expire(now=2) == []
    assert t.expire(now=3) == ["b"]
    assert t.next_deadline() is None
    assert t.acquire("a", "y", 1, now=4).token == 2


def test_holder_reports_remaining_time() -> None:
    t = LeaseTable()
    t.acquire("k", "alice", 5, now=10)
    holder = t.holder("k", now=12)
    assert holder is not None
    assert (holder.owner, holder.expires_in) == ("alice", 3)


def test_release_owner_ends_only_that_owners_live_leases() -> None:
    t = LeaseTable()
    t.acquire("a", "alice", 5, now=0)
    t.acquire("b", "alice", 1, now=0)
    t.acquire("c", "bob", 5, now=0)
    assert t.release_owner("alice", now=2) == ["a"]  # "b" had already expired
    assert t.holder("c", now=2) is not None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
def test_bad_ttl_is_refused(ttl: float) -> None:
    with pytest.raises(StateError):
        LeaseTable().acquire("k", "alice", ttl, now=0)


@pytest.mark.parametrize("key", ["", "x" * 1025])
def test_bad_key_is_refused(key: str) -> None:
    with pytest.raises(StateError):
        LeaseTable().acquire(key, "alice", 1, now=0)
