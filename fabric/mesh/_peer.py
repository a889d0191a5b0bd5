"""One peer link's bookkeeping: its handshake state, liveness and round trip. Pure.

States and the frames each accepts live in ``_ACCEPTS`` (the h11 way): before the handshake
only the handshake frames are allowed, anything else is the remote's protocol error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ..errors import RemoteProtocolError

__all__ = ["LinkState", "PeerLinkState"]


class LinkState(Enum):
    HANDSHAKE = "handshake"  #: link open, hello/welcome not exchanged yet
    UP = "up"  #: peer known; interest and messages flow
    CLOSED = "closed"


_ACCEPTS: dict[LinkState, frozenset[str]] = {
    LinkState.HANDSHAKE: frozenset({"hello", "welcome", "refuse", "ping", "pong"}),
    # hello/welcome repeat while the dialer waits for its answer; both are idempotent.
    LinkState.UP: frozenset(
        {"interest", "pub", "status", "ping", "pong", "refuse", "hello", "welcome"}
    ),
    LinkState.CLOSED: frozenset(),
}

#: Weight of a new round-trip sample in the moving average.
_ALPHA = 0.25


@dataclass(slots=True)
class PeerLinkState:
    """Liveness and round trip of one link; every method takes ``now`` (monotonic seconds)."""

    last_rx: float
    state: LinkState = LinkState.HANDSHAKE
    #: Smoothed round trip in seconds (None until the first PONG).
    rtt: float | None = None
    _pings: dict[int, float] = field(default_factory=dict)
    _seq: int = 0

    def check(self, what: str) -> None:
        """Raise unless a frame of type ``what`` is allowed in the current state.

        Raises:
            RemoteProtocolError: the frame has no place in this state.
        """
        if what not in _ACCEPTS[self.state]:
            raise RemoteProtocolError(f"mesh {what} not allowed in state {self.state.value}")

    def up(self, now: float) -> None:
        self.state = LinkState.UP
        self.last_rx = now

    def close(self) -> None:
        self.state = LinkState.CLOSED

    def received(self, now: float) -> None:
        self.last_rx = now

    def ping(self, now: float) -> int:
        """Record a PING being sent; returns its id."""
        self._seq += 1
        self._pings[self._seq] = now
        if len(self._pings) > 16:  # unanswered pings to a dead peer must not pile up
            del self._pings[min(self._pings)]
        return self._seq

    def pong(self, seq: int, now: float) -> None:
        sent = self._pings.pop(seq, None)
        if sent is None:
            return
        sample = now - sent
        self.rtt = sample if self.rtt is None else (1 - _ALPHA) * self.rtt + _ALPHA * sample

    def silent(self, now: float, limit: float) -> bool:
        """True when nothing arrived for longer than ``limit`` seconds."""
        return now - self.last_rx > limit
