"""When "no responders" may only mean "interest not arrived yet". Pure, no I/O, driven by ``now``.

A node answers a request ``NoResponders`` when nobody it knows of has interest in the subject.
That answer is wrong while interest is still travelling towards it:

1. a peer link is up but the peer's full interest set has not arrived on it yet;
2. a peer was lost a moment ago with interest in the subject (a leaf switching hubs shows up
   again through another cloud node, a cluster peer's leaves move to us);
3. this edge node has no hub right now (it is failing over to the next one on its list).

In each case the node holds the request (bounded in time: ``grace`` seconds from the event, and
never past the request's own deadline) and routes it again once interest changed or the time
is up. Holding never delivers twice: a request is held only when it reached nobody.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..subjects import matches

__all__ = ["SettleBook"]

#: Lost peers remembered at most (the oldest are forgotten first): bounded memory.
_MAX_LOST = 256


class SettleBook:
    """Reasons interest may still be in flight, each with the time it stops counting."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        #: peer -> until when its full interest set is awaited (rule 1).
        self._awaiting: dict[str, float] = {}
        #: peer -> (patterns it had, until when they count) (rule 2).
        self._lost: dict[str, tuple[frozenset[str], float]] = {}
        #: Until when this edge node counts as failing over (rule 3); None while it has a hub.
        self._hubless_until: float | None = None

    def linked(self, peer: str, now: float) -> None:
        """A link to ``peer`` is up; its full interest set is on its way."""
        self._awaiting[peer] = now + self.grace

    def announced(self, peer: str) -> None:
        """``peer``'s full interest set arrived: what it has is known again."""
        self._awaiting.pop(peer, None)
        self._lost.pop(peer, None)

    def lost(self, peer: str, patterns: Iterable[str], now: float) -> None:
        """``peer`` went down holding interest in ``patterns``."""
        self._awaiting.pop(peer, None)
        kept = frozenset(patterns)
        if kept:
            self._lost.pop(peer, None)
            self._lost[peer] = (kept, now + self.grace)
            while len(self._lost) > _MAX_LOST:
                del self._lost[next(iter(self._lost))]

    def hub_lost(self, now: float) -> None:
        """This edge node has no hub since ``now`` (also at start, before the first one)."""
        self._hubless_until = now + self.grace

    def hub_found(self) -> None:
        self._hubless_until = None

    def until(self, subject: str, now: float) -> float | None:
        """Until when a request on ``subject`` that reached nobody should wait for interest
        still in flight; None when nothing is in flight for it (answer ``NoResponders``)."""
        latest: float | None = None

        def later(t: float) -> None:
            nonlocal latest
            if t > now and (latest is None or t > latest):
                latest = t

        for t in self._awaiting.values():
            later(t)
        if self._hubless_until is not None:
            later(self._hubless_until)
        for peer, (patterns, t) in list(self._lost.items()):
            if t <= now:
                del self._lost[peer]
            elif any(matches(p, subject) for p in patterns):
                later(t)
        return latest
