"""One transport end of a peer link, and the peer it carries once up: the mesh's view of a
``Link`` (``_mesh.py`` drives them)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from typing_extensions import Buffer

from ..router import PeerKind, PeerOrigin
from ..transports import Link, ZmqDealerLink
from ._peer import LinkState, PeerLinkState
from ._protocol import PeerInfo

if TYPE_CHECKING:
    from ._dialing import Dialing

#: How long a ZeroMQ dialer closed after a duplicate REFUSE keeps sending what it queued.
_DUPLICATE_LINGER_MS = 2000


@dataclass(eq=False, slots=True)
class _End:
    """One transport end of a peer link (a dialer, or one identity on the listener): a
    ``Link`` and the mesh's view of it."""

    link: Link
    dialed: bool
    #: The link's record in the lifecycle machine (``Mesh.peerlinks``): its state is there.
    state: PeerLinkState
    #: Set once the transport is closed (the link may live on as SWITCHING for a while).
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Called once the peer's handshake is accepted (lifts the pre-handshake frame limit).
    on_up: Callable[[], None] | None = None
    #: Called when the end is closed (the mesh forgets it).
    on_close: Callable[[], None] | None = None

    @property
    def peer(self) -> str:
        return self.state.peer

    def send(self, header: bytes, payload: Buffer = b"") -> bool:
        """False when the link is closed or the peer is too far behind (``Link.limit``):
        memory stays bounded, and the caller counts the refusal."""
        return self.link.try_send(header, payload)

    def close_transport(self) -> None:
        if self.on_close is not None:
            self.on_close()
        link = self.link
        if isinstance(link, ZmqDealerLink) and self.state.state is LinkState.SWITCHING:
            # Entering SWITCHING, what we sent last on the link (our answer to the peer's
            # REFUSE) must still go out: the peer drains it. Otherwise drop at once.
            link.close(linger_ms=_DUPLICATE_LINGER_MS)
        else:
            link.close()


class _EndHandler:
    """Frames and the loss of one end's link, into the mesh."""

    __slots__ = ("end", "mesh")

    def __init__(self, mesh: Dialing, end: _End) -> None:
        self.mesh = mesh
        self.end = end

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self.mesh._frame(self.end, header, payload)

    def link_lost(self, exc: BaseException | None) -> None:
        self.mesh._transport_lost(self.end)


#: A frame held for a peer that is switching links: (header, payload copy).
_Held = tuple[bytes, bytes]


@dataclass(eq=False, slots=True)
class _Peer:
    info: PeerInfo
    kind: PeerKind
    #: The end of the peer's link (UP, or SWITCHING while it moves to the link it kept).
    end: _End
    origin: PeerOrigin
