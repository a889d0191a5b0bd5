"""The peer-link lifecycle: one state machine for every link of a node to its peer nodes.
Pure: no socket, no task, no clock; every input takes ``now``.

The mesh is its driver. It feeds in what happens to a link (a HELLO or WELCOME accepted, a
REFUSE received, the transport lost, the clock) and carries out the actions that come back:
send a WELCOME or a REFUSE, close a link, send a peer its interest set and the frames held for
it, a peer up, switched to another link, or down. Nothing else changes a link's state.

Every move from one state to another is in ``TRANSITIONS`` (h11's ``_state.py`` is the model:
an event with no entry is the driver's bug, ``LocalProtocolError``); what a link does on
entering a state is in ``_enter``; which frames each state takes is ``FRAMES``. docs/mesh.md
("Peer links") has the same tables with the reasons.

Two links to one peer (both nodes dialled at once, or one side dialled again before the other
noticed its old link was dead) become one by ``resolve``, which both ends evaluate on the same
facts and so answer alike. Each end switches when *it* sees the kept link up (an acceptor on
HELLO, a dialer only on WELCOME), so for a moment one end may still use the link the other has
just given up; the states SWITCHING (our link was refused: hold what we forward until the kept
one is up here) and SUPERSEDED (we refused a link that was up: read what the peer sent on it
until it answers) are what make that moment lose nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Generic, TypeVar

from ..errors import LocalProtocolError, RemoteProtocolError
from ..router import PeerKind
from ._peer import LinkState, PeerLinkState
from ._protocol import PeerInfo

__all__ = [
    "DUPLICATE",
    "FRAMES",
    "NO_HANDSHAKE",
    "TRANSITIONS",
    "Action",
    "Close",
    "Event",
    "Flush",
    "Frame",
    "PeerDown",
    "PeerLinkMachine",
    "PeerSwitched",
    "PeerUp",
    "Ping",
    "Resolution",
    "SendRefuse",
    "SendWelcome",
    "Verdict",
    "resolve",
]

F = TypeVar("F")

#: REFUSE reason for the link that loses to another link to the same peer.
DUPLICATE = "duplicate"
#: REFUSE reason for a link whose first frame was not its HELLO: the dialer believes it is up,
#: so it was up with an earlier run of this node (a ZeroMQ dialer reconnects by itself).
NO_HANDSHAKE = "no handshake"


class Event(Enum):
    """What can happen to a link (``TRANSITIONS`` says what each does in each state)."""

    #: Its HELLO (we accepted the link) or WELCOME (we dialled it) was accepted, and no other
    #: link of the peer beats it.
    KEPT = "kept"
    #: Its HELLO/WELCOME was accepted, but the peer's live link beats it.
    LOST = "lost"
    #: A duplicate link of the peer came up and beats this one.
    SUPERSEDED = "superseded"
    #: A link from the peer's next incarnation, or dialled again by this link's dialer, came
    #: up: at the other end this one is already over.
    REPLACED = "replaced"
    #: The link the peer kept came up: what was held for the peer goes there.
    SWITCHED = "switched"
    #: The peer refused the link as a duplicate (it keeps another one).
    REFUSED_DUPLICATE = "refused_duplicate"
    #: The peer refused the link for another reason, or answered our refusal.
    REFUSED = "refused"
    #: We refuse the link (its role, our own name, a frame before its HELLO).
    REJECTED = "rejected"
    TRANSPORT_LOST = "transport_lost"
    #: The state's time ran out (handshake, silence, drain or switch).
    TIMEOUT = "timeout"
    #: The node leaves the mesh.
    SHUTDOWN = "shutdown"


_H, _UP, _SW, _SU, _C = (
    LinkState.HANDSHAKE,
    LinkState.UP,
    LinkState.SWITCHING,
    LinkState.SUPERSEDED,
    LinkState.CLOSED,
)

#: Everything that moves a link: (state, event) -> next state. A CLOSED link ignores every
#: event (its transport may still hand in frames read before the close); any other pair not
#: listed is a bug in the driver.
TRANSITIONS: dict[tuple[LinkState, Event], LinkState] = {
    # handshake: nobody knows yet who is at the other end
    (_H, Event.KEPT): _UP,
    (_H, Event.LOST): _SU,  # up at the other end already (or soon): drain it
    (_H, Event.REFUSED): _C,
    (_H, Event.REFUSED_DUPLICATE): _C,
    (_H, Event.REJECTED): _C,
    (_H, Event.TRANSPORT_LOST): _C,
    (_H, Event.TIMEOUT): _C,
    (_H, Event.SHUTDOWN): _C,
    # up: the one link to the peer that carries interest and messages
    (_UP, Event.SUPERSEDED): _SU,
    (_UP, Event.REPLACED): _C,  # the peer is down, then up on the new link
    (_UP, Event.REFUSED_DUPLICATE): _SW,
    (_UP, Event.REFUSED): _C,  # peer down
    (_UP, Event.TRANSPORT_LOST): _C,  # peer down
    (_UP, Event.TIMEOUT): _C,  # silent too long: peer down
    (_UP, Event.SHUTDOWN): _C,
    # switching: refused by the peer, which keeps a link not up here yet; transport closed
    (_SW, Event.SWITCHED): _C,  # the peer lives on, on the kept link
    (_SW, Event.REPLACED): _C,  # the peer restarted meanwhile: down, then up
    (_SW, Event.TRANSPORT_LOST): _SW,  # we closed it ourselves on entering
    (_SW, Event.REFUSED): _SW,  # read before our close: nothing to do
    (_SW, Event.REFUSED_DUPLICATE): _SW,
    (_SW, Event.TIMEOUT): _C,  # the kept link never came up: peer down
    (_SW, Event.SHUTDOWN): _C,
    # superseded: we refused it; we read on until the peer has said all it sent on it
    (_SU, Event.REFUSED): _C,  # the peer's last frame on it (its answer, or its own refusal)
    (_SU, Event.REFUSED_DUPLICATE): _C,
    (_SU, Event.TRANSPORT_LOST): _C,
    (_SU, Event.TIMEOUT): _C,  # the peer never answered (it may have died)
    (_SU, Event.SHUTDOWN): _C,
}


class Frame(IntEnum):
    """The frames a link carries once its handshake is done."""

    PUB = 0
    STATUS = 1
    INTEREST = 2
    PING = 3
    PONG = 4


class Verdict(Enum):
    TAKE = "take"  #: handle it
    IGNORE = "ignore"  #: drop it, it is not an error
    #: Before the handshake, at an acceptor: the dialer believes the link is up (it was, with
    #: an earlier run of this node): refuse it (``NO_HANDSHAKE``) so it finds out. (At a
    #: dialer the WELCOME went missing in a ZeroMQ reconnect: ignored, HELLO is repeated.)
    EARLY = "early"


_T, _I, _E = Verdict.TAKE, Verdict.IGNORE, Verdict.EARLY

#: What each state does with each ``Frame`` (indexed by the frame's value).
FRAMES: dict[LinkState, tuple[Verdict, ...]] = {
    #              PUB STATUS INTEREST PING PONG
    _H: (_E, _E, _E, _E, _E),
    _UP: (_T, _T, _T, _T, _T),
    # Interest on it is older than the full set the peer sends on the kept link, and the two
    # links are not ordered with each other: applying it late would roll that set back. A
    # PING gets no answer: the peer stops reading at our REFUSE, which went out before (its
    # barriers are asked again on the kept link, see ``PeerSwitched``).
    _SU: (_T, _T, _I, _I, _T),
    _SW: (_I, _I, _I, _I, _I),
    _C: (_I, _I, _I, _I, _I),
}


class Resolution(Enum):
    KEEP_OLD = "keep_old"  #: refuse the new link
    SWITCH = "switch"  #: refuse the old link, move the peer to the new one
    REPLACE = "replace"  #: the old link is over at the other end: close it, peer down then up


def resolve(me: str, peer: str, old: PeerLinkState, new: PeerLinkState) -> Resolution:
    """Which of two links to ``peer`` survives: ``old`` is its live link here, ``new`` the one
    that just came up. Both ends decide from the same facts, so they decide alike.

    - a new incarnation of the peer (``boot``): the old link belongs to a dead process;
    - both dialled by the same side: that side dialled again because, to it, the old link is
      over (a dial loop redials only once its peer is down);
    - otherwise both nodes dialled each other: keep the link dialled by the lower name.
    """
    if old.boot != new.boot:
        return Resolution.REPLACE
    old_dialer = me if old.dialed else peer
    new_dialer = me if new.dialed else peer
    if old_dialer == new_dialer:
        return Resolution.REPLACE
    return Resolution.SWITCH if new_dialer == min(me, peer) else Resolution.KEEP_OLD


# -- actions (what the driver carries out, in order) ----------------------------------------


@dataclass(frozen=True, slots=True)
class SendWelcome:
    link: PeerLinkState


@dataclass(frozen=True, slots=True)
class SendRefuse:
    link: PeerLinkState
    reason: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the link's transport. When it enters SWITCHING, what was sent last (our answer
    to the peer's refusal) must still go out: the peer reads the link until it sees it."""

    link: PeerLinkState


@dataclass(frozen=True, slots=True)
class Ping:
    link: PeerLinkState
    seq: int


@dataclass(frozen=True, slots=True)
class PeerUp:
    """A peer is up on ``link``: send it our full interest set."""

    name: str
    link: PeerLinkState
    info: PeerInfo
    kind: PeerKind


@dataclass(frozen=True, slots=True)
class PeerSwitched:
    """The peer lives on, on ``link`` now: send our full interest set there (before anything
    held for it), and ask again what we asked on the old link and may never hear back (barrier
    pings); its interest is the one it had, the switch is no loss."""

    name: str
    link: PeerLinkState
    info: PeerInfo


@dataclass(frozen=True, slots=True)
class Flush(Generic[F]):
    """Send the frames held for the peer while it switched onto ``link``, in order."""

    link: PeerLinkState
    frames: list[F]


@dataclass(frozen=True, slots=True)
class PeerDown:
    """The peer is gone: drop its interest, answer what waited on it."""

    name: str
    #: The event that ended its link (for the log).
    why: str


Action = SendWelcome | SendRefuse | Close | Ping | PeerUp | PeerSwitched | PeerDown | Flush[F]


@dataclass(eq=False, slots=True)
class _Peer(Generic[F]):
    link: PeerLinkState
    info: PeerInfo
    kind: PeerKind
    #: Frames forwarded while the link is SWITCHING, for the link the peer kept.
    held: list[F]


class PeerLinkMachine(Generic[F]):
    """Every link of one node to its peers; ``F`` is what the driver forwards (held while a
    peer switches links). Methods return the actions to carry out, in order.

    Timers: a HANDSHAKE ends after ``handshake_s``; an UP link silent for ``dead_after_s`` is
    dead; a SUPERSEDED link is read for ``drain_s`` at most; a SWITCHING peer is down if its
    kept link is not up within ``switch_s``. ``tick`` checks them and emits the heartbeats.
    """

    def __init__(
        self,
        me: str,
        *,
        handshake_s: float,
        dead_after_s: float,
        drain_s: float,
        switch_s: float,
        max_held: int = 10_000,
    ) -> None:
        self.me = me
        self.handshake_s = handshake_s
        self.dead_after_s = dead_after_s
        self.drain_s = drain_s
        self.switch_s = switch_s
        self.max_held = max_held
        self._links: dict[int, PeerLinkState] = {}  # every link not CLOSED
        self._peers: dict[str, _Peer[F]] = {}
        self._next_id = 0

    # -- queries ------------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        """Whether the peer is up (on a live link, or switching to the one it kept)."""
        return name in self._peers

    def current(self, name: str) -> PeerLinkState | None:
        """The peer's link (UP, or SWITCHING), None when the peer is down."""
        peer = self._peers.get(name)
        return None if peer is None else peer.link

    def links(self) -> list[PeerLinkState]:
        """Every link not closed yet."""
        return list(self._links.values())

    def held(self, name: str) -> int:
        peer = self._peers.get(name)
        return 0 if peer is None else len(peer.held)

    def may_redial(self, last: PeerLinkState) -> bool:
        """Whether the dial loop whose link was ``last`` may dial again: not while that link
        lives, and not while its peer is up on another link (a second link would only be
        refused as a duplicate: dialling on a timer made one every few seconds)."""
        if last.state is not _C and last.state is not _SW:
            return False
        return last.peer not in self._peers

    # -- inputs -------------------------------------------------------------------------

    def open(self, dialed: bool, now: float) -> PeerLinkState:
        """A link was dialled, or accepted (before its first frame is handled)."""
        self._next_id += 1
        link = PeerLinkState(self._next_id, dialed, last_rx=now, since=now)
        self._links[link.id] = link
        return link

    def admit(self, link: PeerLinkState, frame: Frame, now: float) -> Verdict:
        """A frame arrived on ``link``; what to do with it (``FRAMES``)."""
        link.last_rx = now
        verdict = FRAMES[link.state][frame]
        if verdict is _E and link.dialed:
            return _I
        return verdict

    def hello(
        self, link: PeerLinkState, info: PeerInfo, kind: PeerKind, now: float
    ) -> list[Action[F]]:
        """A HELLO that fits (role, name) arrived on a link we accepted.

        Raises:
            RemoteProtocolError: HELLO on a link we dialled, or from another name.
        """
        link.last_rx = now
        if link.dialed:
            raise RemoteProtocolError("HELLO on a link we dialled")
        if link.state is not _H:
            if link.state is not _UP:
                return []  # refused or closed: a repeated HELLO gets no answer
            if link.peer != info.name:
                raise RemoteProtocolError("a second HELLO with another name")
            # The dialer repeats HELLO until it has our WELCOME (ZeroMQ may drop the first).
            return [SendWelcome(link)]
        out: list[Action[F]] = [SendWelcome(link)]
        self._came_up(link, info, kind, now, out)
        return out

    def welcome(
        self, link: PeerLinkState, info: PeerInfo, kind: PeerKind, now: float
    ) -> list[Action[F]]:
        """A WELCOME that fits arrived on a link we dialled.

        Raises:
            RemoteProtocolError: WELCOME on a link we accepted.
        """
        link.last_rx = now
        if not link.dialed:
            raise RemoteProtocolError("WELCOME on a link we accepted")
        out: list[Action[F]] = []
        if link.state is _H:
            self._came_up(link, info, kind, now, out)
        return out  # else: the answer to a repeated HELLO

    def refused(self, link: PeerLinkState, reason: str, now: float) -> list[Action[F]]:
        """The peer sent REFUSE on ``link``."""
        link.last_rx = now
        if link.state is _H or link.state is _UP:
            link.refused = reason
        out: list[Action[F]] = []
        event = Event.REFUSED_DUPLICATE if reason == DUPLICATE else Event.REFUSED
        self._to(link, event, now, out)
        return out

    def reject(self, link: PeerLinkState, reason: str, now: float) -> list[Action[F]]:
        """We refuse a link in its handshake (role, name, a frame before HELLO)."""
        out: list[Action[F]] = [SendRefuse(link, reason)]
        self._to(link, Event.REJECTED, now, out)
        return out

    def transport_lost(self, link: PeerLinkState, now: float) -> list[Action[F]]:
        out: list[Action[F]] = []
        self._to(link, Event.TRANSPORT_LOST, now, out)
        return out

    def give_up(self, link: PeerLinkState, now: float) -> list[Action[F]]:
        """The dialer stops waiting for the WELCOME (no effect once the link is past it)."""
        out: list[Action[F]] = []
        if link.state is _H:
            self._to(link, Event.TIMEOUT, now, out)
        return out

    def tick(self, now: float) -> list[Action[F]]:
        """Timers: ends the states whose time ran out, then pings every peer on its link."""
        out: list[Action[F]] = []
        for link in list(self._links.values()):
            state = link.state
            if state is _UP:
                expired = link.silent(now, self.dead_after_s)
            else:
                limit = {_H: self.handshake_s, _SU: self.drain_s, _SW: self.switch_s}[state]
                expired = now - link.since > limit
            if expired:
                self._to(link, Event.TIMEOUT, now, out)
        for peer in self._peers.values():
            if peer.link.state is _UP:
                out.append(Ping(peer.link, peer.link.ping(now)))
        return out

    def shutdown(self, now: float) -> list[Action[F]]:
        out: list[Action[F]] = []
        for link in list(self._links.values()):
            self._to(link, Event.SHUTDOWN, now, out)
        return out

    def hold(self, name: str, frame: F) -> bool:
        """Keep a frame for a peer that is switching links (flushed onto the kept link once it
        is up). False when the peer is not switching or too much is held already."""
        peer = self._peers.get(name)
        if peer is None or peer.link.state is not _SW or len(peer.held) >= self.max_held:
            return False
        peer.held.append(frame)
        return True

    # -- the machine --------------------------------------------------------------------

    def _came_up(
        self,
        link: PeerLinkState,
        info: PeerInfo,
        kind: PeerKind,
        now: float,
        out: list[Action[F]],
    ) -> None:
        name = info.name
        link.peer, link.boot = name, info.boot
        peer = self._peers.get(name)
        if peer is not None:
            old = peer.link
            if old.state is _SW and old.boot == link.boot:
                # The link the peer kept (or, if that one failed, the next one) is up here.
                self._to(link, Event.KEPT, now, out)
                held, peer.held = peer.held, []
                peer.link, peer.info = link, info
                self._to(old, Event.SWITCHED, now, out)
                out.append(PeerSwitched(name, link, info))
                if held:
                    out.append(Flush(link, held))
                return
            how = Resolution.REPLACE if old.state is _SW else resolve(self.me, name, old, link)
            if how is Resolution.KEEP_OLD:
                self._to(link, Event.LOST, now, out)
                return
            if how is Resolution.SWITCH:
                self._to(link, Event.KEPT, now, out)
                peer.link, peer.info = link, info
                self._to(old, Event.SUPERSEDED, now, out)
                out.append(PeerSwitched(name, link, info))
                return
            self._to(old, Event.REPLACED, now, out)  # peer down (its entry goes)
        self._to(link, Event.KEPT, now, out)
        self._peers[name] = _Peer(link, info, kind, [])
        out.append(PeerUp(name, link, info, kind))

    def _to(self, link: PeerLinkState, event: Event, now: float, out: list[Action[F]]) -> None:
        state = link.state
        nxt = TRANSITIONS.get((state, event))
        if nxt is None:
            if state is _C:
                return
            raise LocalProtocolError(f"peer link: no transition for {event.value} in {state.value}")
        if nxt is state:
            return
        link.state = nxt
        link.since = now
        self._enter(link, state, event, out)

    def _enter(
        self, link: PeerLinkState, was: LinkState, event: Event, out: list[Action[F]]
    ) -> None:
        """What a link does on entering its new state."""
        state = link.state
        if state is _SU:
            out.append(SendRefuse(link, DUPLICATE))
        elif state is _SW:
            # Answer last on this link, so the peer, which drains it, knows it has read all we
            # sent on it (ZeroMQ shows it no close; TCP would). Then close: the peer drains.
            out.append(SendRefuse(link, DUPLICATE))
            out.append(Close(link))
        elif state is _C:
            del self._links[link.id]
            if was is not _SW:
                out.append(Close(link))
            peer = self._peers.get(link.peer)
            if peer is not None and peer.link is link:
                del self._peers[link.peer]
                out.append(PeerDown(link.peer, event.value))
