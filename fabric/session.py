"""An agent's session on a node: its states and the only transitions between them.

Everything that changes a session's state lives in ``_TRANSITIONS`` (the h11 way): a frame
that has no transition from the current state is the peer's protocol error.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

from .errors import ConnectionLost, RemoteProtocolError
from .wire import Kind

__all__ = ["Session", "SessionState"]


class SessionState(Enum):
    HANDSHAKE = "handshake"  #: link open, no HELLO yet
    ACTIVE = "active"  #: HELLO accepted; may subscribe and publish
    CLOSED = "closed"  #: link gone or dropped by the node

    # Looked up per frame (``Session.check``): the identity hash is C, Enum's is Python.
    __hash__ = object.__hash__


# Kinds accepted in each state; HELLO moves HANDSHAKE → ACTIVE.
_TRANSITIONS: dict[SessionState, frozenset[Kind]] = {
    SessionState.HANDSHAKE: frozenset({Kind.HELLO}),
    SessionState.ACTIVE: frozenset(
        {Kind.SUB, Kind.UNSUB, Kind.PUB, Kind.PING, Kind.PONG, Kind.CONTROL, Kind.ERR}
    ),
    SessionState.CLOSED: frozenset(),
}

_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Session:
    """One agent connection as the node sees it. Hashable by identity."""

    id: int = field(default_factory=lambda: next(_ids))
    state: SessionState = SessionState.HANDSHAKE
    #: The agent's declared name and labels (from HELLO).
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    #: ``_INBOX.<token>`` of the agent's name (fabric/private.py): its inboxes are below it.
    inbox: str = ""
    #: Monotonic time of the last frame received.
    last_seen: float = 0.0
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    #: The agent mapped this node's shared-memory pool: it can be sent descriptors.
    shm: bool = False
    #: The agent's own Unix socket for direct requests from agents on this host, if any.
    direct: str = ""
    #: Its TCP address for direct requests from other hosts (``tcp://host:port``), if any.
    direct_tcp: str = ""
    #: Deliveries held back while the agent migrates (``$agent.hold``): encoded MSG headers
    #: and payloads, in order; None when delivering normally.
    held: list[tuple[bytes, bytes | memoryview]] | None = None
    held_bytes: int = 0
    #: Deliveries dropped because the agent fell behind, by subscription id (-1: frames of
    #: the node's own), not yet reported to it (STATUS SLOW_CONSUMER).
    lost: dict[int, int] = field(default_factory=dict)

    def __hash__(self) -> int:
        return self.id

    def __str__(self) -> str:
        return f"{self.name or '?'}#{self.id}"

    def check(self, kind: Kind) -> None:
        """Raise unless a frame of ``kind`` is allowed now.

        Raises:
            ConnectionLost: anything but HELLO before the handshake. The agent reads it as
                "this node does not know you" (it restarted, or dropped the session) and
                dials again; on ZeroMQ that is the only way it can tell.
            RemoteProtocolError: the frame has no transition from the current state.
        """
        if kind not in _TRANSITIONS[self.state]:
            if self.state is SessionState.HANDSHAKE:
                raise ConnectionLost(f"{kind.name} before HELLO: no session, handshake first")
            raise RemoteProtocolError(f"{kind.name} not allowed in state {self.state.value}")

    def activate(self, name: str, labels: dict[str, str], now: float) -> None:
        """HELLO accepted."""
        self.check(Kind.HELLO)
        self.state = SessionState.ACTIVE
        self.name = name
        self.labels = labels
        self.last_seen = now

    def close(self) -> None:
        self.state = SessionState.CLOSED
