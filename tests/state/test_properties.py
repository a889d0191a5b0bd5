"""Hypothesis: for any sequence of lease and write operations on the pure StateStore, fencing
tokens per key strictly increase, and a write succeeds exactly when it carries the current
valid token (or no token, on a key never leased)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from fabric.errors import Fenced, LeaseExpired, LeaseHeld
from fabric.state import Lease, StateStore

KEYS = st.sampled_from(["a", "b"])
OWNERS = st.sampled_from(["x", "y", "z"])
TTLS = st.floats(min_value=0.5, max_value=5.0)


@dataclass
class _Model:
    fence: int = 0
    owner: str | None = None
    deadline: float = 0.0
    issued: list[int] = field(default_factory=list)

    def live(self, now: float) -> bool:
        return self.owner is not None and now < self.deadline


class FencingMachine(RuleBasedStateMachine):
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.store = StateStore()
        self.now = 0.0
        self.model = {"a": _Model(), "b": _Model()}

    @rule(dt=st.floats(min_value=0.0, max_value=3.0))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def expire(self) -> None:
        self.store.leases.expire(now=self.now)  # housekeeping only: must change no outcome

    @rule(target=leases, key=KEYS, owner=OWNERS, ttl=TTLS)
    def acquire(self, key: str, owner: str, ttl: float) -> Lease | None:
        m = self.model[key]
        try:
            lease = self.store.acquire(key, owner, ttl, now=self.now)
        except LeaseHeld:
            assert m.live(self.now) and m.owner != owner
            return None
        assert not (m.live(self.now) and m.owner != owner)
        assert lease.token == m.fence + 1
        m.fence, m.owner, m.deadline = lease.token, owner, self.now + ttl
        m.issued.append(lease.token)
        return lease

    @rule(lease=leases)
    def release(self, lease: Lease | None) -> None:
        if lease is None:
            return
        m = self.model[lease.key]
        current = lease.token == m.fence and m.live(self.now)
        assert self.store.release(lease, now=self.now) == current
        if current:
            m.owner = None

    @rule(lease=leases, ttl=TTLS)
    def renew(self, lease: Lease | None, ttl: float) -> None:
        if lease is None:
            return
        m = self.model[lease.key]
        try:
            self.store.renew(lease, ttl, now=self.now)
        except (Fenced, LeaseExpired):
            assert not (lease.token == m.fence and m.live(self.now))
            return
        assert lease.token == m.fence and m.live(self.now)
        m.deadline = self.now + ttl

    @rule(
        key=KEYS,
        token=st.one_of(st.none(), st.integers(min_value=-1, max_value=12)),
        lease=leases,
        use_lease=st.booleans(),
    )
    def put(self, key: str, token: int | None, lease: Lease | None, use_lease: bool) -> None:
        if use_lease and lease is not None:
            key, token = lease.key, lease.token
        m = self.model[key]
        valid = (m.fence == 0 and token is None) or (token == m.fence and m.live(self.now))
        try:
            self.store.put(key, b"v", token=token, now=self.now)
        except LeaseExpired:
            assert not valid and token == m.fence != 0
            return
        except Fenced:
            assert not valid
            assert token != m.fence or (m.fence == 0 and token is not None)
            return
        assert valid, f"token {token} accepted; current {m.fence}, live={m.live(self.now)}"

    @invariant()
    def tokens_strictly_increase(self) -> None:
        for key, m in self.model.items():
            assert m.issued == sorted(set(m.issued))
            assert self.store.leases.fence(key) == m.fence


TestFencing = FencingMachine.TestCase
TestFencing.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
