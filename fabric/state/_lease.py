"""Leases and fencing tokens: a pure table, no clock, no I/O.

Rules (everything that decides whether a lease or a write is valid lives in this file):

1. ``acquire(key, owner, ttl, now)`` grants a lease when nobody holds a *live* one, or when the
   live one belongs to the same ``owner`` (a restarted or migrated instance takes over from
   its predecessor). Otherwise it raises ``LeaseHeld``.
2. Every grant draws the next fencing token from a per-key counter that is never reset: not by
   expiry, not by release, not by re-acquire. Tokens are therefore strictly increasing per key.
3. A lease is live while ``now < deadline``. Expiry is evaluated lazily against the ``now``
   each call passes in (monotonic seconds), so a caller that never calls ``expire`` still sees
   correct answers; ``expire`` only frees memory and reports which leases ended.
4. ``check(key, token, now)`` decides whether a write may proceed:
   - a key that has never been leased accepts only ``token=None``;
   - a key that has ever been leased accepts only the token of its live lease. A missing,
     older, or never-issued token raises ``Fenced``; the right token whose lease ran out or
     was released raises ``LeaseExpired`` (nobody else took over: re-acquire and retry).
5. ``renew`` follows the same check, then moves the deadline to ``now + ttl``. ``release``
   of anything but the live lease is a no-op returning ``False``, so cleanup paths never raise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import Fenced, LeaseExpired, LeaseHeld
from ._types import Lease, check_identity, check_key, check_ttl

__all__ = ["LeaseTable"]


@dataclass(slots=True)
class _Entry:
    #: Last token issued for the key; 0 means never leased. Never decreases.
    fence: int = 0
    #: Owner of the lease carrying ``fence``, or None once released.
    owner: str | None = None
    #: Monotonic deadline of that lease (meaningless when ``owner`` is None).
    deadline: float = 0.0

    def live(self, now: float) -> bool:
        return self.owner is not None and now < self.deadline


class LeaseTable:
    """Per-key leases with fencing tokens, driven by the caller's monotonic ``now``."""

    def __init__(self) -> None:
        # Entries are kept after expiry and release: the fence counter must survive both.
        self._entries: dict[str, _Entry] = {}

    def acquire(self, key: str, owner: str, ttl: float, *, now: float) -> Lease:
        """Grant a lease on ``key`` to ``owner`` for ``ttl`` seconds, with a fresh token.

        Raises:
            LeaseHeld: another owner holds a live lease on the key.
            StateError: the key, owner or ttl is invalid.
        """
        check_key(key)
        check_identity(owner, "lease owner")
        check_ttl(ttl, key)
        entry = self._entries.setdefault(key, _Entry())
        if entry.live(now) and entry.owner != owner:
            raise LeaseHeld(f"held by {entry.owner!r}", key=key)
        entry.fence += 1
        entry.owner = owner
        entry.deadline = now + ttl
        return Lease(key, owner, entry.fence, ttl)

    def raise_fence(self, key: str, fence: int) -> None:
        """Make every later token for ``key`` larger than ``fence`` (state handed over from
        another store keeps its fencing order). Never lowers the counter."""
        entry = self._entries.setdefault(key, _Entry())
        entry.fence = max(entry.fence, fence)

    def snapshot(self, key: str) -> tuple[int, str | None, float]:
        """``(fence, owner, deadline)`` of ``key`` for a durable copy (owner None: no lease)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0, None, 0.0
        return entry.fence, entry.owner, entry.deadline

    def load(self, key: str, fence: int, owner: str | None, deadline: float) -> None:
        """Rebuild ``key``'s entry from a durable copy (a node restarting). Never lowers the
        fence, so a token issued before the restart can never be issued again (rule 2)."""
        entry = self._entries.setdefault(key, _Entry())
        entry.fence = max(entry.fence, fence)
        entry.owner = owner
        entry.deadline = deadline

    def owned_by(self, owner: str, *, now: float) -> list[str]:
        """Keys on which ``owner`` holds a live lease."""
        return [k for k, e in self._entries.items() if e.owner == owner and e.live(now)]

    def check(self, key: str, token: int | None, *, now: float) -> None:
        """Accept or refuse a write to ``key`` carrying ``token`` (rule 4 above).

        Raises:
            Fenced: the key is lease-guarded and ``token`` is missing, stale or never issued,
                or the key was never leased and a token was given.
            LeaseExpired: ``token`` is the latest one but its lease expired or was released.
        """
        entry = self._entries.get(key)
        if entry is None or entry.fence == 0:
            if token is not None:
                raise Fenced(f"token {token} was never issued for this key", key=key)
            return
        if token is None:
            raise Fenced("the key is lease-guarded: writes must carry the current token", key=key)
        if token != entry.fence:
            raise Fenced(f"token {token} is not the current token {entry.fence}", key=key)
        if not entry.live(now):
            raise LeaseExpired(f"the lease of token {token} is no longer live", key=key)

    def renew(self, lease: Lease, ttl: float, *, now: float) -> Lease:
        """Extend ``lease`` to ``now + ttl``.

        Raises:
            Fenced: a newer lease was granted since (or the token was never issued).
            LeaseExpired: the lease ran out or was released and nobody took over.
            StateError: the ttl is invalid.
        """
        check_ttl(ttl, lease.key)
        self.check(lease.key, lease.token, now=now)
        entry = self._entries[lease.key]
        entry.deadline = now + ttl
        return Lease(lease.key, lease.owner, lease.token, ttl)

    def release(self, lease: Lease, *, now: float) -> bool:
        """End ``lease`` now; return whether it was the live lease (otherwise nothing changes)."""
        entry = self._entries.get(lease.key)
        if entry is None or entry.fence != lease.token or not entry.live(now):
            return False
        entry.owner = None
        return True

    def release_owner(self, owner: str, *, now: float) -> list[str]:
        """Release every live lease ``owner`` holds; return their keys."""
        released = []
        for key, entry in self._entries.items():
            if entry.owner == owner and entry.live(now):
                entry.owner = None
                released.append(key)
        return released

    def expire(self, *, now: float) -> list[str]:
        """Forget the owners of leases whose deadline passed; return their keys."""
        ended = []
        for key, entry in self._entries.items():
            if entry.owner is not None and now >= entry.deadline:
                entry.owner = None
                ended.append(key)
        return ended

    def next_deadline(self) -> float | None:
        """The earliest deadline of a lease not yet expired by ``expire``, for a driver's timer."""
        deadlines = [e.deadline for e in self._entries.values() if e.owner is not None]
        return min(deadlines, default=None)

    def holder(self, key: str, *, now: float) -> Lease | None:
        """The live lease on ``key`` (``expires_in`` counted from ``now``), or None."""
        entry = self._entries.get(key)
        if entry is None or entry.owner is None or not entry.live(now):
            return None
        return Lease(key, entry.owner, entry.fence, entry.deadline - now)

    def fence(self, key: str) -> int:
        """The last token issued for ``key``; 0 if it was never leased."""
        entry = self._entries.get(key)
        return 0 if entry is None else entry.fence

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
