"""The router: who gets a message, which peers get a copy, who answers STATUS. Pure, no I/O.

It owns every piece of routing state of a node: local interest (``InterestTable``), peers'
interest and what each peer is told (``MeshInterest``), the forwarding rule (``Strategy``),
queue-group placement (``plan_route``), counts across the mesh (``TallyBook``), and requests
held while interest may still be on its way (``SettleBook``). The node and the mesh are its
drivers: they feed it inputs (each taking ``now``, monotonic seconds) and carry out the
actions it returns (``_actions.py``).

Rules, in one place:

1. Loop freedom is the strategy's: a message from a peer goes only to peer kinds
   ``Strategy.may_forward`` allows (never from one cluster peer to another) and never back to
   the peer it came from.
2. A reply subject (``_INBOX.``) reaches only ``_INBOX.`` interest, here and at peers.
3. A message from a peer serves only the queue groups that peer assigned it (``queue``).
4. STATUS for a local requester is decided here only: ``NO_RESPONDERS`` when a request
   reached nobody anywhere, ``ROUTED`` with the total for a counted message (gather), and
   ``Behind`` when every responder exists but is too far behind.
5. A request that reached nobody while interest may be in flight is held (bounded in number
   and in time, never past half its own timeout) and routed again once interest moved or the
   wait ran out. Only a request that reached nobody is held, so nothing is delivered twice.
6. A peer that is lost counts 0 in every open tally; its interest is forgotten at once.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from ..routing import INBOX_PREFIX, InterestTable, Subscription
from ..wire import Flags, Header, Kind, Status
from ._actions import (
    Action,
    Answer,
    Behind,
    Count,
    Forward,
    Invalidate,
    Origin,
    Payload,
    PeerOrigin,
    Replay,
    Routing,
)
from ._interest import Delta, InterestKey, Labels, MeshInterest
from ._plan import decode_groups, decode_prefer, encode_groups, mismatch, plan_route
from ._settle import SettleBook
from ._strategy import PeerKind, Role, strategy_for
from ._tally import Tally, TallyBook

__all__ = ["Router", "role_for"]

#: How long a counted message waits for peers' counts when it carries no deadline.
DEFAULT_TALLY_S = 5.0
#: Requests held at once while interest settles; past this, "no responders" at once.
MAX_HELD = 10_000
#: Flags a held request may not carry: a gather is counted, not held; a shared-memory
#: payload's slot is released once delivered, so it cannot wait.
_NOT_HELD = Flags.COUNT | Flags.SHM
#: Bound on cached plain routings (hot subjects fill it again after it is cleared).
_PLAIN_ROUTES = 4096


def role_for(role: str, leaf: bool) -> Role:
    """A node's mesh role from its settings (``auto``: edge when it is a leaf of a hub)."""
    if role == "auto":
        return Role.EDGE if leaf else Role.CLOUD
    return Role(role)


@dataclass(slots=True)
class _LocalUpstream:
    session: Hashable
    reply: str
    msg_id: int
    flags: int
    #: The request itself, to hold if it reached nobody anywhere (None for a replay).
    header: Header | None
    payload: Payload


@dataclass(slots=True)
class _PeerUpstream:
    peer: str
    corr: int
    #: The upstream only needs to hear "reached nobody" (a request, not a gather).
    zero_only: bool


@dataclass(slots=True)
class _Held:
    session: Hashable
    header: Header
    payload: Payload
    #: Never held past this (half the request's own timeout, or the settle grace).
    until: float


_Upstream = _LocalUpstream | _PeerUpstream


class Router:
    """One node's routing state. Inputs take ``now``; outputs are lists of actions."""

    def __init__(self, *, role: Role = Role.CLOUD, site: str = "", settle_grace: float = 10.0):
        self.role = role
        self.site = site
        self.strategy = strategy_for(role)
        #: Local subscriptions (who on this node gets what).
        self.local = InterestTable()
        #: Peers' interest, and what each peer has been told of ours and others'.
        self.remote = MeshInterest(self.strategy)
        self.tallies: TallyBook[_Upstream] = TallyBook()
        self.settle = SettleBook(settle_grace)
        self._kinds: dict[str, PeerKind] = {}
        self._rtt: dict[str, float] = {}
        #: Each session's labels with this node's site (placement, ``prefer=``).
        self._labels: dict[Hashable, Labels] = {}
        self._keys: dict[Hashable, dict[int, InterestKey]] = {}
        self._held: list[_Held] = []
        self._timers_moved = False
        #: Routings of local agents' messages on subjects that match no queue group (here or
        #: at a peer): the same every time until interest or peers change (nothing to pick,
        #: no round-robin cursor to move).
        self._plain: dict[str, Routing] = {}
        #: The same for a peer's copies (no queue groups assigned), by subject and peer.
        self._plain_from: dict[tuple[str, str], Routing] = {}

    # -- local interest -----------------------------------------------------------------

    def subscribe(
        self,
        session: Hashable,
        sid: int,
        pattern: str,
        queue: str,
        labels: Mapping[str, str],
        now: float,
    ) -> list[Action]:
        """A local agent subscribed (replacing its earlier ``sid``).

        Raises:
            InvalidSubject: the pattern is malformed.
        """
        self.local.add(session, sid, pattern, queue)
        self._forget_routes()
        own = self._labels[session] = self._labels_of(labels)
        keys = self._keys.setdefault(session, {})
        old = keys.pop(sid, None)
        if old is not None:
            self.remote.local_remove(old)
        key: InterestKey = (pattern, queue, own if queue else ())
        keys[sid] = key
        self.remote.local_add(key)
        return self._interest_moved([pattern], now)

    def unsubscribe(self, session: Hashable, sid: int, now: float) -> list[Action]:
        removed = self.local.remove(session, sid)
        self._forget_routes()
        keys = self._keys.get(session)
        if keys and sid in keys:
            self.remote.local_remove(keys.pop(sid))
        return [] if removed is None else self._interest_moved([removed.pattern], now)

    def drop(self, session: Hashable) -> list[Action]:
        """A local session is gone: its interest and held requests with it."""
        subs = self.local.drop_session(session)
        self._forget_routes()
        for key in self._keys.pop(session, {}).values():
            self.remote.local_remove(key)
        self._labels.pop(session, None)
        self._held = [h for h in self._held if h.session != session]
        return self._invalidate([s.pattern for s in subs])

    def subscriptions(self, session: Hashable) -> list[Subscription]:
        return self.local.subscriptions(session)

    # -- peers --------------------------------------------------------------------------

    @property
    def peers(self) -> dict[str, PeerKind]:
        return dict(self._kinds)

    def peer_up(self, peer: str, kind: PeerKind, now: float) -> set[InterestKey]:
        """A link to ``peer`` is up (new, or replacing the one it had); returns the full
        interest set to send it first."""
        if peer not in self._kinds:
            self.settle.linked(peer, now)
            if kind is PeerKind.HUB:
                self.settle.hub_found()
            self._timers_moved = True
        self._kinds[peer] = kind
        self._forget_routes()
        return self.remote.peer_up(peer, kind)

    def peer_interest(
        self,
        peer: str,
        full: bool,
        add: Iterable[InterestKey],
        remove: Iterable[InterestKey],
        now: float,
    ) -> list[Action]:
        """``peer`` announced interest (its full set first, deltas after)."""
        add, remove = list(add), list(remove)
        self._forget_routes()
        if full:
            self.remote.peer_replace(peer, add)
            self.settle.announced(peer)
        else:
            self.remote.peer_delta(peer, add, remove)
        return self._interest_moved([k[0] for k in (*add, *remove)], now)

    def peer_down(self, peer: str, now: float) -> list[Action]:
        """``peer`` is gone: its interest goes, it counts 0 in every open tally."""
        kind = self._kinds.pop(peer, None)
        self._forget_routes()
        self._rtt.pop(peer, None)
        lost = [k[0] for k in self.remote.remote_keys(peer)]
        self.settle.lost(peer, lost, now)
        if kind is PeerKind.HUB:
            self.settle.hub_lost(now)
        self.remote.peer_down(peer)
        actions: list[Action] = []
        for tally in self.tallies.peer_lost(peer):
            actions += self._finish(tally, now)
        return self._interest_moved(lost, now) + actions

    def hub_lost(self, now: float) -> None:
        """This edge node has no hub (also at start, before the first one): requests wait."""
        self.settle.hub_lost(now)
        self._timers_moved = True

    def peer_rtt(self, peer: str, rtt: float | None) -> None:
        """The smoothed round trip to ``peer`` (placement's last tie-breaker)."""
        if rtt is not None and peer in self._kinds:
            self._rtt[peer] = rtt

    def take_announcements(self) -> dict[str, Delta]:
        """Interest to announce to (or withdraw from) each peer now."""
        return self.remote.take_deltas()

    def remote_interest(self, subject: str) -> bool:
        """Whether a local agent's message on ``subject`` would go to a peer (a directory
        answer must then say "not direct")."""
        for entry in self.remote.trie.match(subject, cache=False):
            kind = self._kinds.get(entry.peer)
            if kind is not None and self.strategy.may_forward(None, kind):
                return True
        return False

    # -- messages -----------------------------------------------------------------------

    def route(self, origin: Origin, header: Header) -> Routing:
        """Local targets and peer copies for one message (rules 1-3). Picking a queue member
        moves that group's round-robin cursor: call once per message."""
        subject = header.subject
        peer = origin if isinstance(origin, PeerOrigin) else None
        if header.headers:
            prefer = decode_prefer(header.headers)
        else:
            if peer is None:
                cached = self._plain.get(subject)
                if cached is not None:
                    return cached  # the hot path: a local agent's repeated subject
            elif not header.queue:
                cached = self._plain_from.get((subject, peer.peer))
                if cached is not None:
                    return cached  # a peer's copy of a repeated subject
            prefer = {}
        rank = None
        if prefer:
            labels = self._session_labels
            rank = lambda s: float(mismatch(prefer, labels(s.session)))  # noqa: E731
        local = self.local.route(subject, rank)
        # Cacheable: a local agent's message, no prefer=, not a one-off reply subject, and no
        # queue group anywhere (nothing to pick, no cursor to move); checked as we go.
        plain = (
            (peer is None or not header.queue)
            and not prefer
            and not subject.startswith(INBOX_PREFIX)
            and not any(sub.queue for sub in local.targets)
        )
        if not self._kinds:
            return self._remember(subject, peer, Routing(local.targets), plain)
        inbox = subject.startswith(INBOX_PREFIX)
        remote = self.remote.trie.match(subject, cache=not inbox)
        if inbox and remote:
            remote = frozenset(e for e in remote if e.pattern.startswith(INBOX_PREFIX))
        if not remote and peer is None:
            return self._remember(subject, peer, Routing(local.targets), plain)
        kinds = self._kinds
        strategy = self.strategy
        came_from = peer.peer if peer is not None else None
        origin_kind = peer.kind if peer is not None else None

        def may_send(name: str) -> bool:
            kind = kinds.get(name)
            return (
                kind is not None
                and name != came_from
                and strategy.may_forward(origin_kind, kind)
            )

        plan = plan_route(
            local.targets,
            remote,
            may_send=may_send,
            only_groups=decode_groups(header.queue) if peer is not None else None,
            prefer=prefer,
            local_labels=lambda s: dict(self._session_labels(s.session)),
            site=self.site,
            rtt=lambda name: self._rtt.get(name, 1.0),  # unmeasured: behind the measured
        )
        routing = Routing(plan.local, plan.peers)
        plain = plain and not any(e.queue for e in remote)
        return self._remember(subject, peer, routing, plain)

    def _forget_routes(self) -> None:
        self._plain.clear()
        self._plain_from.clear()

    def _remember(
        self, subject: str, peer: PeerOrigin | None, routing: Routing, plain: bool
    ) -> Routing:
        """Keep a plain routing for ``subject`` (from ``peer``) until interest or peers
        change."""
        if plain:
            if len(self._plain) + len(self._plain_from) >= _PLAIN_ROUTES:
                self._forget_routes()
            if peer is None:
                self._plain[subject] = routing
            else:
                self._plain_from[(subject, peer.peer)] = routing
        return routing

    def routed(
        self,
        origin: Origin,
        header: Header,
        payload: Payload,
        routing: Routing,
        reached: int,
        now: float,
        *,
        names: list[str] | None = None,
        all_behind: bool = False,
        replay: bool = False,
    ) -> list[Action]:
        """The driver delivered ``routing.local`` and reached ``reached`` of them (``names``:
        who, for a gather; ``all_behind``: every miss was a slow consumer). Returns the peer
        copies to send and the STATUS to answer (rule 4), or holds the request (rule 5).
        ``payload`` is what peers get; ``replay`` marks a held request routed again."""
        flags = header.flags
        if not flags and not routing.peers:
            return []  # a plain publish that stays here: nothing to answer, nobody to copy to
        peer = origin if isinstance(origin, PeerOrigin) else None
        # Two ways to count: a gather (COUNT) needs every peer's total; a request only needs
        # to learn that nobody anywhere was reached, so peers speak up only when they reached
        # none (NO_RESPONDERS), which keeps a frame per request off the wire.
        wants = bool(flags & (Flags.COUNT | Flags.NO_RESPONDERS)) and (
            peer is not None or bool(header.reply)
        )
        full = bool(flags & Flags.COUNT)
        counted = wants and (full or reached == 0)
        if routing.peers:
            corr = 0
            if counted:
                corr = self._open_tally(
                    origin, header, payload, routing, reached, now, names, replay
                )
            return self._copies(header, payload, routing, corr, counted)
        if peer is not None:
            return [Count(peer.peer, header.sid, reached, names)] if counted else []
        if not (flags and header.reply):
            return []
        if reached == 0 and flags & Flags.NO_RESPONDERS:
            if all_behind:
                return [Behind(origin, header)]
            if not replay and self._hold(origin, header, payload, now):
                return []
            return [Answer(origin, header.reply, header.msg_id, Status.NO_RESPONDERS)]
        if full:
            return [Answer(origin, header.reply, header.msg_id, Status.ROUTED, reached, names)]
        return []

    def _open_tally(
        self,
        origin: Origin,
        header: Header,
        payload: Payload,
        routing: Routing,
        reached: int,
        now: float,
        names: list[str] | None,
        replay: bool,
    ) -> int:
        """Count what the copies reach; returns the correlation id they carry."""
        full = bool(header.flags & Flags.COUNT)
        budget = header.timeout_ms / 1000 if header.timeout_ms else DEFAULT_TALLY_S
        upstream: _Upstream
        if isinstance(origin, PeerOrigin):
            upstream = _PeerUpstream(origin.peer, header.sid, zero_only=not full)
        else:
            upstream = _LocalUpstream(
                origin, header.reply, header.msg_id, header.flags,
                None if replay else header, payload,
            )
        self._timers_moved = True
        return self.tallies.open(
            upstream, header.msg_id, reached, set(routing.peers), now + budget, names
        )

    @staticmethod
    def _copies(
        header: Header, payload: Payload, routing: Routing, corr: int, counted: bool
    ) -> list[Action]:
        out_flags = 0
        if counted:
            out_flags = Flags.COUNT if header.flags & Flags.COUNT else Flags.NO_RESPONDERS
        actions: list[Action] = []
        for name, groups in routing.peers.items():
            out = Header(
                Kind.PUB,
                subject=header.subject,
                reply=header.reply,
                msg_id=header.msg_id,
                timeout_ms=header.timeout_ms,
                traceparent=header.traceparent,
                headers=header.headers,
                sid=corr,
                queue=encode_groups(groups) if groups else "",
                status=header.status,
                seq=header.seq,
                flags=out_flags,
            )
            actions.append(Forward(name, out, payload, corr))
        return actions

    def copy_failed(self, peer: str, corr: int, now: float) -> list[Action]:
        """A copy could not be sent to ``peer``: it counts 0 in that tally."""
        if not corr:
            return []
        return self.peer_count(peer, corr, 0, None, now)

    def peer_count(
        self, peer: str, corr: int, count: int, names: list[str] | None, now: float
    ) -> list[Action]:
        """``peer`` reported how many responders a counted copy reached."""
        done = self.tallies.answer(peer, corr, count, names)
        return [] if done is None else self._finish(done, now)

    # -- time ---------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Close tallies past their deadline; replay held requests whose wait is over."""
        actions: list[Action] = []
        for tally in self.tallies.expire(now):
            actions += self._finish(tally, now)
        return actions + self._release(now)

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do (None: nothing pending)."""
        self._timers_moved = False
        times = [h.until for h in self._held]
        tally = self.tallies.next_deadline()
        if tally is not None:
            times.append(tally)
        return min(times) if times else None

    def timers_moved(self) -> bool:
        """Whether a deadline may have been added since ``next_deadline`` was last asked."""
        return self._timers_moved

    @property
    def held(self) -> int:
        """Requests held while interest settles."""
        return len(self._held)

    # -- internals ----------------------------------------------------------------------

    def _hold(self, session: Hashable, header: Header, payload: Payload, now: float) -> bool:
        if header.flags & _NOT_HELD or len(self._held) >= MAX_HELD:
            return False
        until = self.settle.until(header.subject, now)
        if until is None:
            return False
        if header.timeout_ms:
            # Half the request's time at most: a requester still gets its typed answer
            # ("no responders") before its own timeout would fire.
            until = min(until, now + header.timeout_ms / 2000)
        self._held.append(_Held(session, header, payload, until))
        self._timers_moved = True
        return True

    def _release(self, now: float) -> list[Action]:
        if not self._held:
            return []
        keep: list[_Held] = []
        out: list[Action] = []
        for held in self._held:
            subject = held.header.subject
            if (
                now >= held.until
                or self.local.matching(subject)
                or self.remote.trie.match(subject, cache=False)
                or self.settle.until(subject, now) is None
            ):
                out.append(Replay(held.session, held.header, held.payload))
            else:
                keep.append(held)
        self._held = keep
        return out

    def _interest_moved(self, patterns: list[str], now: float) -> list[Action]:
        return self._invalidate(patterns) + self._release(now)

    @staticmethod
    def _invalidate(patterns: list[str]) -> list[Action]:
        # Inboxes only ever match reply subjects, which are never resolved.
        if any(not p.startswith(INBOX_PREFIX) for p in patterns):
            return [Invalidate()]
        return []

    def _finish(self, tally: Tally[_Upstream], now: float) -> list[Action]:
        up = tally.upstream
        if isinstance(up, _PeerUpstream):
            if not up.zero_only:
                return [Count(up.peer, up.corr, tally.total, tally.names)]
            if tally.total == 0 and not tally.expired:
                return [Count(up.peer, up.corr, 0)]
            return []
        if tally.expired and not up.flags & Flags.COUNT:
            return []  # some peer never said "none": it reached someone, the reply will tell
        if tally.total == 0 and up.flags & Flags.NO_RESPONDERS:
            # Every peer said "none" (a lost peer may have delivered it: never route twice).
            if not tally.peer_lost and up.header is not None and self._hold(
                up.session, up.header, up.payload, now
            ):
                return []
            return [Answer(up.session, up.reply, up.msg_id, Status.NO_RESPONDERS)]
        if up.flags & Flags.COUNT:
            return [
                Answer(up.session, up.reply, up.msg_id, Status.ROUTED, tally.total, tally.names)
            ]
        return []

    def _labels_of(self, labels: Mapping[str, str]) -> Labels:
        own = {"site": self.site}
        own.update(labels)
        return tuple(sorted(own.items()))

    def _session_labels(self, session: Hashable) -> Labels:
        labels = self._labels.get(session)
        return labels if labels is not None else (("site", self.site),)
