"""One peer link's record: its lifecycle state, who is at the other end, liveness and round
trip. Pure. The transitions between the states are ``_peer_link.PeerLinkMachine``'s alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = ["LinkState", "PeerLinkState"]


class LinkState(Enum):
    HANDSHAKE = "handshake"  #: link open, hello/welcome not exchanged yet
    UP = "up"  #: the peer's live link: interest and messages flow
    #: The peer refused this link as a duplicate: it keeps another one that is not up here
    #: yet. What we forward to the peer is held until that one is up. Transport closed.
    SWITCHING = "switching"
    #: We refused this link as a duplicate once it was up: we send nothing more on it but
    #: read what the peer sent before it saw the refusal, until the peer answers or closes.
    SUPERSEDED = "superseded"
    CLOSED = "closed"


#: Weight of a new round-trip sample in the moving average.
_ALPHA = 0.25


@dataclass(eq=False, slots=True)
class PeerLinkState:
    """One link as the lifecycle machine sees it; every method takes ``now`` (monotonic s)."""

    #: The machine's handle for this link (actions name links by it).
    id: int
    #: We dialled it (else we accepted it).
    dialed: bool
    last_rx: float
    state: LinkState = LinkState.HANDSHAKE
    #: When the link entered its state (handshake, drain and switch timers run from here).
    since: float = 0.0
    #: The peer's name and incarnation, known once its hello/welcome was accepted.
    peer: str = ""
    boot: str = ""
    #: The reason the peer gave when it refused this link ("" if it did not).
    refused: str = ""
    #: Smoothed round trip in seconds (None until the first PONG).
    rtt: float | None = None
    _pings: dict[int, float] = field(default_factory=dict)
    _seq: int = 0

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
