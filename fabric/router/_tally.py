"""Counting responders across the mesh, so ``gather`` knows how many answers to expect.

A node that forwards a counted message to peers opens a tally: its own local count plus one
pending answer per peer. Each peer answers with the count it reached (itself tallying its own
forwards first). The tally closes when every peer answered, when a peer's link drops (it
counts 0: its responders cannot answer through a dead link anyway), or at the message's
deadline with what it has. Pure: every entry point takes ``now``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["MAX_NAMES", "Tally", "TallyBook"]

#: Responder names carried per tally (a gather to more responders still counts them all).
MAX_NAMES = 4096

U = TypeVar("U")


@dataclass(slots=True)
class Tally(Generic[U]):
    """One open count."""

    #: Who wants the total (a local session, or an upstream peer); opaque here.
    upstream: U
    #: The upstream's correlation id (peer) or the message id (local).
    upstream_id: int
    total: int
    pending: set[str] = field(default_factory=set)
    deadline: float = 0.0
    #: Whether it closed because time ran out (some peers never answered).
    expired: bool = False
    #: Whether a peer was counted as 0 because it was lost, not because it said so (it may
    #: have delivered the message before it went).
    peer_lost: bool = False
    #: ``agent@node`` of the responders reached so far (gathers: who must answer).
    names: list[str] = field(default_factory=list)


class TallyBook(Generic[U]):
    """Open tallies by correlation id."""

    def __init__(self) -> None:
        self._open: dict[int, Tally[U]] = {}
        self._next = 0
        self._timers: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._open)

    def open(
        self,
        upstream: U,
        upstream_id: int,
        local: int,
        peers: set[str],
        deadline: float,
        names: list[str] | None = None,
    ) -> int:
        """Start counting; returns the correlation id to put on the forwarded copies."""
        self._next += 1
        corr = self._next
        self._open[corr] = Tally(
            upstream, upstream_id, local, set(peers), deadline, names=list(names or ())
        )
        heapq.heappush(self._timers, (deadline, corr))
        return corr

    def answer(
        self, peer: str, corr: int, count: int, names: list[str] | None = None
    ) -> Tally[U] | None:
        """A peer reported its count (and who it reached); returns the tally if that closed
        it."""
        tally = self._open.get(corr)
        if tally is None or peer not in tally.pending:
            return None  # late, duplicate, or from a peer we never asked
        tally.pending.discard(peer)
        tally.total += count
        if names:
            tally.names.extend(names[: max(0, MAX_NAMES - len(tally.names))])
        if tally.pending:
            return None
        return self._open.pop(corr)

    def peer_lost(self, peer: str) -> list[Tally[U]]:
        """A peer is gone: it answers 0 everywhere. Returns the tallies that closed."""
        done = []
        for corr, tally in list(self._open.items()):
            if peer in tally.pending:
                tally.pending.discard(peer)
                tally.peer_lost = True
                if not tally.pending:
                    done.append(self._open.pop(corr))
        return done

    def expire(self, now: float) -> list[Tally[U]]:
        """Close tallies whose deadline passed, with the counts they have."""
        done = []
        while self._timers and self._timers[0][0] <= now:
            _, corr = heapq.heappop(self._timers)
            tally = self._open.pop(corr, None)
            if tally is not None:
                tally.expired = True
                done.append(tally)
        return done

    def next_deadline(self) -> float | None:
        """When ``expire`` next has something to do."""
        while self._timers and self._timers[0][1] not in self._open:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None
