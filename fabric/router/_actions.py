"""What the router asks its drivers to do, and where a message came from. Plain data.

The router decides; the node and the mesh carry out. Every action names its target by what the
router knows of it: a local session (opaque, hashable: the node maps it to its link) or a
peer's name (the mesh maps it to its link).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from ..routing import Subscription
from ..wire import Header, Status
from ._plan import GroupKey
from ._strategy import PeerKind

__all__ = [
    "Action",
    "Answer",
    "Behind",
    "Count",
    "Forward",
    "Invalidate",
    "Origin",
    "Payload",
    "PeerOrigin",
    "Replay",
    "Routing",
]


@dataclass(frozen=True, slots=True)
class PeerOrigin:
    """Stands in for the sending session when a peer's message is routed."""

    #: The peer's node name.
    peer: str
    #: What that peer is to this node (the forwarding rule depends on it).
    kind: PeerKind


#: A local session (opaque to the router) or a peer.
Origin = Hashable
#: Payload bytes as they came (a view of a receive buffer), or a copy.
Payload = bytes | memoryview


@dataclass(slots=True)
class Routing:
    """Where one message goes (``Router.route``); the driver delivers ``local`` itself."""

    #: Local subscriptions to deliver to (one chosen member per queue group).
    local: list[Subscription] = field(default_factory=list)
    #: Peer name -> queue groups that peer must serve (empty list: plain interest only).
    peers: dict[str, list[GroupKey]] = field(default_factory=dict)


@dataclass(slots=True)
class Answer:
    """Send a STATUS to a local requester (``NO_RESPONDERS``, or ``ROUTED`` with a count)."""

    session: Hashable
    reply: str
    msg_id: int
    status: Status
    #: Responders reached (``ROUTED``).
    count: int = 0
    #: ``agent@node`` of the responders reached (gathers), or None.
    names: list[str] | None = None


@dataclass(slots=True)
class Behind:
    """Refuse a request with ``SlowConsumer``: its responders exist, each too far behind."""

    session: Hashable
    header: Header


@dataclass(slots=True)
class Forward:
    """Send a copy of a message to a peer. If the send fails, tell the router
    (``Router.copy_failed(peer, corr)``): a counted message must not wait for that peer."""

    peer: str
    header: Header
    payload: Payload
    #: The tally the peer's count answers (0: not counted).
    corr: int = 0


@dataclass(slots=True)
class Count:
    """Tell an upstream peer how many responders a counted message reached here and beyond."""

    peer: str
    corr: int
    count: int
    names: list[str] | None = None


@dataclass(slots=True)
class Replay:
    """Route a held request again (its interest arrived, or its wait ran out). The router
    does not hold it a second time: a replay that reaches nobody is answered at once."""

    session: Hashable
    header: Header
    payload: Payload


@dataclass(slots=True)
class Invalidate:
    """Interest that a directory answer depends on changed: agents must forget the cache."""


Action = Answer | Behind | Forward | Count | Replay | Invalidate
