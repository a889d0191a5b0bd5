"""The mesh driver: peer links, interest announcements, forwarding and counting, around the
pure pieces (``Strategy``, ``MeshInterest``, ``plan_route``, ``TallyBook``, ``PeerLinkState``).

The node calls in at a handful of points (``route``/``forward`` in its publish path, the
``local_*`` hooks where agent interest changes); a message from a peer enters the node's own
publish path with a ``PeerOrigin`` standing in for the sending session, so local delivery,
validation and counters are the node's, not a second copy here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from typing_extensions import Buffer

from ..errors import ConfigError, ConnectionLost, FabricError, RemoteProtocolError, Timeout
from ..private import decode_names, encode_names
from ..routing import INBOX_PREFIX, Route
from ..session import SessionState
from ..wire import MAX_HEADER_BYTES, Flags, Header, Kind, Status, decode_header, encode_header
from ._interest import InterestKey, Labels, MeshInterest
from ._links import CurveKeys, PeerDialer, PeerListener
from ._peer import LinkState, PeerLinkState
from ._peer_link import (
    DUPLICATE,
    NO_HANDSHAKE,
    Action,
    Close,
    Flush,
    Frame,
    PeerDown,
    PeerLinkMachine,
    PeerSwitched,
    PeerUp,
    Ping,
    SendRefuse,
    SendWelcome,
    Verdict,
)
from ._plan import GroupKey, decode_groups, decode_prefer, encode_groups, mismatch, plan_route
from ._protocol import (
    HELLO,
    INTEREST,
    REFUSE,
    WELCOME,
    PeerInfo,
    decode_announce,
    decode_info,
    encode_announce,
    encode_info,
)
from ._settle import SettleBook
from ._strategy import PeerKind, Role, strategy_for
from ._tally import Tally, TallyBook
from ._tcp import TcpEnd, dial_tcp, listen_tcp

if TYPE_CHECKING:
    from ..config import NodeSettings
    from ..node import Node

__all__ = ["Mesh", "MeshRoute", "PeerOrigin", "parse_peer_url", "start_mesh"]

log = logging.getLogger("fabric.mesh")

#: How long a counted message waits for peers' counts when it carries no deadline.
_DEFAULT_TALLY_S = 5.0
_HANDSHAKE_S = 3.0
#: Dials that fail this soon after the node started are counted as ``dial_retries``, not
#: ``dial_failures``: nodes of a mesh start together and a peer may not listen yet.
_START_GRACE_S = 10.0
#: Largest frame a peer may send on the plain-TCP cluster port before its HELLO is accepted.
_HANDSHAKE_MAX_PAYLOAD = 64 * 1024
#: Frames held for a peer while it switches links (then sending fails as for a dead peer).
_BACKLOG = 10_000
#: How long a ZeroMQ dialer closed after a duplicate REFUSE keeps sending what it queued.
_DUPLICATE_LINGER_MS = 2000
#: Requests held at once while interest settles; past this, "no responders" at once.
_MAX_HELD = 10_000
#: Barrier pings number from here up, so they never collide with heartbeat sequence numbers.
_BARRIER_BASE = 1 << 48


def parse_peer_url(text: str) -> tuple[str, bytes | None]:
    """``tcp://host:port[?key=Z85]`` -> (endpoint, server key or None)."""
    url, sep, key = text.partition("?key=")
    return url, (key.encode() if sep else None)


@dataclass(slots=True)
class MeshRoute(Route):
    """A route with the peers the message goes to and the groups each must serve."""

    peers: dict[str, list[GroupKey]] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class PeerOrigin:
    """Stands in for the sending session when a peer's message enters the node's publish path."""

    peer: str
    kind: PeerKind


@dataclass(slots=True)
class _LocalUpstream:
    bound: Any
    reply: str
    msg_id: int
    flags: int
    #: The request itself, to route again if it reached nobody while interest was in flight.
    header: Header | None = None
    payload: Any = None


@dataclass(slots=True)
class _PeerUpstream:
    peer: str
    corr: int
    #: The upstream only needs to hear "reached nobody" (a request, not a gather).
    zero_only: bool = False


@dataclass(eq=False, slots=True)
class _End:
    """One transport end of a peer link (a dialer, or one identity on the listener)."""

    send: Callable[[bytes, Buffer], bool]
    close_transport: Callable[[], None]
    dialed: bool
    #: The link's record in the lifecycle machine (``Mesh.peerlinks``): its state is there.
    state: PeerLinkState
    #: Set once the transport is closed (the link may live on as SWITCHING for a while).
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: Called once the peer's handshake is accepted (lifts the pre-handshake frame limit).
    on_up: Callable[[], None] | None = None

    @property
    def peer(self) -> str:
        return self.state.peer


#: A frame held for a peer that is switching links: (header, payload copy).
_Held = tuple[bytes, bytes]


@dataclass(eq=False, slots=True)
class _Peer:
    info: PeerInfo
    kind: PeerKind
    #: The end of the peer's link (UP, or SWITCHING while it moves to the link it kept).
    end: _End
    origin: PeerOrigin


class Mesh:
    """A node's part in the mesh. Create with ``start_mesh``; ``close()`` to leave."""

    def __init__(self, node: Node, settings: NodeSettings, curve: CurveKeys | None) -> None:
        self.node = node
        self.settings = settings
        self.curve = curve
        role = settings.role
        if role == "auto":
            role = "edge" if settings.leaf_of else "cloud"
        self.role = Role(role)
        self.strategy = strategy_for(self.role)
        self.interest = MeshInterest(self.strategy)
        self.tallies: TallyBook[_LocalUpstream | _PeerUpstream] = TallyBook()
        labels = dict(settings.labels)
        monitoring = getattr(node, "monitoring", None)
        if monitoring is not None and monitoring.advertised is not None:
            labels.setdefault("metrics", monitoring.advertised)  # `fabric top --mesh` finds it
        self.info = PeerInfo(settings.name, settings.site, self.role, labels, os.urandom(8).hex())
        self._peers: dict[str, _Peer] = {}
        # Pings queue behind data on a busy link, so silence must last a while to mean death;
        # a refused duplicate is drained, and a switch waited for, as long.
        dead_after = max(3 * settings.mesh_heartbeat, settings.mesh_dead_after)
        #: Every peer link's lifecycle (docs/mesh.md, "Peer links"); this class drives it.
        self.peerlinks: PeerLinkMachine[_Held] = PeerLinkMachine(
            settings.name,
            handshake_s=_HANDSHAKE_S,
            dead_after_s=dead_after,
            drain_s=dead_after,
            switch_s=dead_after,
            max_held=_BACKLOG,
        )
        #: The transport end of each open link, by the machine's link id.
        self._ends: dict[int, _End] = {}
        #: Set (and replaced) whenever a peer comes up or goes down: dial loops look again.
        self._peers_moved = asyncio.Event()
        self._ends_by_identity: dict[bytes, _End] = {}
        self._local_keys: dict[Hashable, dict[int, InterestKey]] = {}
        self._listener: PeerListener | None = None
        # ZeroMQ carries CURVE; without keys, plain TCP frames are far cheaper (see _tcp.py).
        transport = settings.mesh_transport
        if transport == "auto":
            transport = "zmq" if curve is not None else "tcp"
        if transport == "tcp" and curve is not None:
            raise ConfigError("curve keys need mesh_transport = zmq (or auto)")
        self.transport = transport
        self._tcp_server: asyncio.AbstractServer | None = None
        self._tcp_endpoint: str | None = None
        self._tcp_ends: set[_End] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False
        # Barrier pings in flight: seq -> (peer, future). Their seqs live above heartbeats'.
        self._barriers: dict[int, tuple[str, asyncio.Future[None]]] = {}
        self._barrier_seq = _BARRIER_BASE
        self._started = time.monotonic()
        #: Messages forwarded to each peer, by name (metrics, ``/peers``).
        self.forwarded_to: dict[str, int] = {}
        #: Interest that may still be on its way here (requests wait for it, bounded).
        self.settle = SettleBook(max(3 * settings.mesh_heartbeat, settings.mesh_dead_after))
        #: Set (and replaced) whenever peers' interest changes: held requests look again.
        self._interest_moved = asyncio.Event()
        self._held_requests = 0
        #: True while a held request is routed again (it is not held a second time).
        self._replaying = False
        self.stats = {
            "forwarded": 0,
            "received": 0,
            "send_failed": 0,
            # Counters a reader can take at face value on a healthy mesh (docs/mesh.md):
            # dial_retries: dials that failed in the first seconds (peers still starting);
            # dial_failures: dials that failed after that; duplicates: both sides dialled at
            # once and one link was kept (normal); refused: a peer refused us (key, role).
            "dial_retries": 0,
            "dial_failures": 0,
            "duplicates": 0,
            "refused": 0,
            "malformed": 0,
            "stale": 0,
        }

    # -- barriers -----------------------------------------------------------------------

    async def barrier(self, timeout: float, *, came_from: str | None = None) -> None:
        """Return once every node reachable from here has processed all this node sent it so
        far (interest changes included) and everything forwarded here before that arrived.

        Peer links are ordered, so a barrier PING sent after the interest changes is handled
        only after them. A peer answers it only once its own barrier towards the peers it
        passes that interest on to has returned (``_relay_barrier``), so the answer means
        every node the interest travels to has it: a leaf's handler is known in the whole
        cluster and at the other leaves. A peer that goes down meanwhile counts as done: it
        forwards nothing more. ``came_from`` is the peer whose barrier this one relays: it is
        not asked back, and only the peers its interest is exported to are asked.

        Raises:
            Timeout: a live peer did not answer within ``timeout`` seconds.
        """
        self._flush()
        loop = asyncio.get_running_loop()
        waits = []
        source = self._peers.get(came_from) if came_from is not None else None
        for name, peer in list(self._peers.items()):
            if came_from is not None and (
                name == came_from
                or source is None
                or not self.strategy.exports(source.kind, peer.kind)
            ):
                continue
            self._barrier_seq += 1
            fut: asyncio.Future[None] = loop.create_future()
            self._barriers[self._barrier_seq] = (name, fut)
            peer.end.send(encode_header(Header(Kind.PING, msg_id=self._barrier_seq)), b"")
            waits.append(fut)
        if not waits:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            raise Timeout("a peer did not answer the barrier in time") from None
        finally:
            for seq in [s for s, (_, f) in self._barriers.items() if f in waits]:
                del self._barriers[seq]

    async def _relay_barrier(self, end: _End, seq: int) -> None:
        """A peer's barrier PING: answer once our onward barrier returned (or not at all if it
        times out, so the asker's barrier times out too rather than lying)."""
        budget = max(1.0, 2 * self.settings.mesh_dead_after)
        with contextlib.suppress(Timeout):
            await self.barrier(budget, came_from=end.peer)
            end.send(encode_header(Header(Kind.PONG, msg_id=seq)), b"")

    def _barrier_answered(self, seq: int) -> bool:
        entry = self._barriers.get(seq)
        if entry is None:
            return False
        if not entry[1].done():
            entry[1].set_result(None)
        return True

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen for peers and dial seeds / hubs.

        Raises:
            ConnectionLost: the cluster endpoint cannot be bound.
        """
        if self.settings.cluster:
            if self.role is Role.EDGE:
                raise ConfigError("an edge node does not accept peers: drop 'cluster'")
            if self.transport == "zmq":
                self._listener = PeerListener(
                    self.settings.cluster,
                    self._listener_frame,
                    self.curve,
                    max_message=self.settings.max_payload + MAX_HEADER_BYTES,
                )
            else:
                try:
                    self._tcp_server, self._tcp_endpoint = await listen_tcp(
                        self.settings.cluster,
                        self.settings.max_payload,
                        self._accept_tcp,
                        budget=getattr(self.node, "pending", None),
                        stall_timeout=self.settings.frame_stall_timeout,
                    )
                except OSError as exc:
                    raise ConnectionLost(
                        f"cannot listen for peers on {self.settings.cluster}: {exc}"
                    ) from None
        for seed in self.settings.seeds:
            self._spawn(self._dial_loop(seed))
        if self.settings.leaf_of:
            self.settle.hub_lost(time.monotonic())  # no hub yet: requests wait for the first
            self._spawn(self._hub_loop(list(self.settings.leaf_of)))
        self._spawn(self._heartbeat())

    @property
    def endpoint(self) -> str | None:
        if self._listener is not None:
            return self._listener.endpoint
        return self._tcp_endpoint

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._run(self.peerlinks.shutdown(time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        if self._tcp_server is not None:
            self._tcp_server.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dialling -----------------------------------------------------------------------

    def _new_end(
        self, send: Callable[[bytes, Buffer], bool], close: Callable[[], None], dialed: bool
    ) -> _End:
        """A transport end, opened as a link in the lifecycle machine."""
        link = self.peerlinks.open(dialed, time.monotonic())
        end = _End(send, close, dialed, link)
        self._ends[link.id] = end
        return end

    def _tcp_end(self, link: Any, dialed: bool) -> _End:
        box: list[_End] = []
        tcp = TcpEnd(
            link,
            self.settings.slow_consumer_bytes,
            lambda _t, h, p: self._frame(box[0], h, p),
            lambda _t: self._transport_lost(box[0]),
        )

        def close() -> None:
            self._tcp_ends.discard(box[0])
            tcp.close()

        end = self._new_end(tcp.send, close, dialed)
        box.append(end)
        self._tcp_ends.add(end)
        return end

    def _accept_tcp(self, link: Any) -> None:
        # Until its HELLO is accepted a peer may send only small frames (docs/limits.md).
        link.set_max_payload(_HANDSHAKE_MAX_PAYLOAD)
        end = self._tcp_end(link, dialed=False)
        end.on_up = lambda: link.set_max_payload(self.settings.max_payload)

    async def _dial_once(self, text: str) -> _End | None:
        """Dial, send HELLO until WELCOME or the handshake time runs out. Returns the end if
        the peer said who it is (whatever became of the link since), else None."""
        url, server_key = parse_peer_url(text)
        if self.transport == "tcp":
            try:
                link = await dial_tcp(url, self.settings.max_payload, _HANDSHAKE_S)
            except (OSError, TimeoutError, ConfigError) as exc:
                log.debug("dial %s: %s", url, exc)
                self._dial_failed()
                return None
            end = self._tcp_end(link, dialed=True)
        else:
            end_box: list[_End] = []

            def on_frame(header: bytes, payload: memoryview) -> None:
                self._frame(end_box[0], header, payload)

            try:
                dialer = PeerDialer(url, on_frame, self.curve, server_key)
            except ConnectionLost as exc:
                log.error("%s", exc)
                return None

            def close_dialer() -> None:
                # Entering SWITCHING, what we sent last on the link (our answer to the
                # peer's REFUSE) must still go out: the peer drains it. Otherwise drop at once.
                switching = end_box[0].state.state is LinkState.SWITCHING
                dialer.close(linger_ms=_DUPLICATE_LINGER_MS if switching else 0)

            end = self._new_end(dialer.send, close_dialer, True)
            end_box.append(end)
        hello = encode_header(Header(Kind.CONTROL, subject=HELLO))
        payload = encode_info(self.info)
        loop = asyncio.get_running_loop()
        until = loop.time() + _HANDSHAKE_S
        sent = False
        while end.state.state is LinkState.HANDSHAKE and not end.closed.is_set():
            if loop.time() > until:
                self._run(self.peerlinks.give_up(end.state, time.monotonic()))
                break
            # ZeroMQ drops sends until it has connected (IMMEDIATE), so HELLO repeats there;
            # a TCP stream delivers the first one or fails.
            if not sent or self.transport == "zmq":
                sent = end.send(hello, payload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(end.closed.wait(), 0.1)
        if end.peer:
            return end
        if not end.state.refused:
            self._dial_failed()
        return None

    def _dial_failed(self) -> None:
        starting = time.monotonic() - self._started < _START_GRACE_S
        self.stats["dial_retries" if starting else "dial_failures"] += 1

    async def _dial_loop(self, seed: str) -> None:
        delay = 0.1
        while True:
            end = await self._dial_once(seed)
            if end is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            await end.closed.wait()
            # Dial again once the peer is down here, not before: while it is up on another
            # link (the one kept of a duplicate pair), a new link would only be refused.
            while not self.peerlinks.may_redial(end.state):
                await self._peers_moved.wait()
            if end.state.refused not in ("", DUPLICATE):
                await asyncio.sleep(delay)  # it took us, then refused us: do not hammer it
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1

    async def _hub_loop(self, urls: list[str]) -> None:
        i = 0
        delay = 0.1
        while True:
            end = await self._dial_once(urls[i % len(urls)])
            if end is not None and end.state.state is LinkState.UP:
                delay = 0.1
                await end.closed.wait()
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            i += 1  # after a loss or a failure, fail over to the next hub of the list

    # -- inbound ------------------------------------------------------------------------

    def _listener_frame(self, identity: bytes, header: bytes, payload: memoryview) -> None:
        end = self._ends_by_identity.get(identity)
        if end is None:
            listener = self._listener
            assert listener is not None

            def send(h: bytes, p: Buffer = b"") -> bool:
                return listener.send(identity, h, p)

            def forget() -> None:
                self._ends_by_identity.pop(identity, None)

            end = self._new_end(send, forget, False)
            self._ends_by_identity[identity] = end
        self._frame(end, header, payload)

    def _frame(self, end: _End, raw: bytes, payload: memoryview) -> None:
        if end.closed.is_set():
            return
        now = time.monotonic()
        try:
            header = decode_header(raw)
            kind = header.kind
            if kind is Kind.PUB:
                if self._admit(end, Frame.PUB, now):
                    self._peer_publish(end, header, payload)
            elif kind is Kind.STATUS:
                if self._admit(end, Frame.STATUS, now):
                    self._peer_status(end, header, payload)
            elif kind is Kind.PING:
                if not self._admit(end, Frame.PING, now):
                    return
                if header.msg_id >= _BARRIER_BASE:
                    self._spawn(self._relay_barrier(end, header.msg_id))
                else:
                    end.send(encode_header(Header(Kind.PONG, msg_id=header.msg_id)), b"")
            elif kind is Kind.PONG:
                if self._admit(end, Frame.PONG, now) and not self._barrier_answered(
                    header.msg_id
                ):
                    end.state.pong(header.msg_id, now)
            elif kind is Kind.CONTROL:
                self._control(end, header, payload, now)
            else:
                raise RemoteProtocolError(f"{kind.name} is not a mesh frame")
        except FabricError as exc:
            self.stats["malformed"] += 1
            log.warning("bad frame from peer %s: %s", end.peer or "?", exc)

    def _admit(self, end: _End, frame: Frame, now: float) -> bool:
        verdict = self.peerlinks.admit(end.state, frame, now)
        if verdict is Verdict.TAKE:
            return True
        if verdict is Verdict.EARLY:
            # The dialer believes this link is up: it was, with an earlier run of this node.
            self._run(self.peerlinks.reject(end.state, NO_HANDSHAKE, now))
        return False

    def _control(self, end: _End, header: Header, payload: memoryview, now: float) -> None:
        subject = header.subject
        link = end.state
        if subject == INTEREST:
            if not self._admit(end, Frame.INTEREST, now):
                return  # a superseded link: the peer sends its full set on the link we kept
            ann = decode_announce(payload)
            if ann.full:
                self.interest.peer_replace(end.peer, ann.add)
                self.settle.announced(end.peer)
            else:
                self.interest.peer_delta(end.peer, ann.add, ann.remove)
            self._schedule_flush()
            self._remote_changed([k[0] for k in (*ann.add, *ann.remove)])
            self._moved()
        elif subject == HELLO:
            info = decode_info(payload)
            kind = self.strategy.accepts(info.role)
            if kind is None or info.name == self.info.name:
                if link.state is LinkState.HANDSHAKE:
                    reason = f"a {self.role.value} node does not take {info.role.value} peers"
                    self._run(self.peerlinks.reject(link, reason, now))
                return
            self._run(self.peerlinks.hello(link, info, kind, now))
            if end.on_up is not None and link.peer and not end.closed.is_set():
                end.on_up()
                end.on_up = None
        elif subject == WELCOME:
            info = decode_info(payload)
            if info.role is Role.CLOUD and self.role is Role.CLOUD:
                kind = PeerKind.CLUSTER
            elif info.role is Role.CLOUD and self.role is Role.EDGE:
                kind = PeerKind.HUB
            else:
                if link.state is LinkState.HANDSHAKE:
                    self._run(self.peerlinks.reject(link, "peer role does not fit", now))
                return
            self._run(self.peerlinks.welcome(link, info, kind, now))
        elif subject == REFUSE:
            reason = _refuse_reason(payload)
            if reason != DUPLICATE and link.state in (LinkState.HANDSHAKE, LinkState.UP):
                self.stats["refused"] += 1
                log.warning("peer %s refused the link: %s", end.peer or "?", reason)
            self._run(self.peerlinks.refused(link, reason, now))
        else:
            raise RemoteProtocolError(f"unknown mesh control {subject!r}")

    def _welcome(self, end: _End) -> None:
        end.send(encode_header(Header(Kind.CONTROL, subject=WELCOME)), encode_info(self.info))

    def _send_refuse(self, end: _End, reason: str) -> None:
        import msgpack

        end.send(
            encode_header(Header(Kind.CONTROL, subject=REFUSE)), msgpack.packb({"reason": reason})
        )

    # -- the lifecycle machine's actions ------------------------------------------------

    def _transport_lost(self, end: _End) -> None:
        self._run(self.peerlinks.transport_lost(end.state, time.monotonic()))

    def _run(self, actions: list[Action[_Held]]) -> None:
        """Carry out what the lifecycle machine decided, in its order."""
        ends = self._ends
        for action in actions:
            match action:
                case PeerUp(name, link, info, kind):
                    self._peer_up(name, ends[link.id], info, kind)
                case PeerSwitched(name, link, info):
                    peer = self._peers[name]
                    peer.end = ends[link.id]
                    peer.info = info
                    log.info("peer %s switched to its kept link", name)
                    self._send_full(name)
                    for seq, (asked, fut) in self._barriers.items():
                        if asked == name and not fut.done():  # its answer may be lost
                            peer.end.send(encode_header(Header(Kind.PING, msg_id=seq)), b"")
                case Flush(link, frames):
                    end = ends[link.id]
                    for frame_header, frame_payload in frames:
                        end.send(frame_header, frame_payload)
                case PeerDown(name, why):
                    self._peer_down(name, why)
                case SendWelcome(link):
                    self._welcome(ends[link.id])
                case SendRefuse(link, reason):
                    if link.state is LinkState.SUPERSEDED:
                        self.stats["duplicates"] += 1  # we refused it: one link kept of two
                    self._send_refuse(ends[link.id], reason)
                case Ping(link, seq):
                    ends[link.id].send(encode_header(Header(Kind.PING, msg_id=seq)), b"")
                case Close(link):
                    closing = ends.pop(link.id, None)
                    if closing is not None:
                        self._close_end(closing)

    def _close_end(self, end: _End) -> None:
        """Close the transport (the machine has already moved the link on)."""
        if end.closed.is_set():
            return
        end.closed.set()
        end.close_transport()

    # -- peers up and down --------------------------------------------------------------

    def _peer_up(self, name: str, end: _End, info: PeerInfo, kind: PeerKind) -> None:
        self._peers[name] = _Peer(info, kind, end, PeerOrigin(name, kind))
        self.settle.linked(name, time.monotonic())
        if kind is PeerKind.HUB:
            self.settle.hub_found()
        log.info("peer %s (%s, site %s) is up", name, kind.value, info.site)
        self._send_full(name)
        self._schedule_flush()
        self._peers_changed()

    def _peers_changed(self) -> None:
        self._peers_moved.set()
        self._peers_moved = asyncio.Event()

    def _send_full(self, name: str) -> None:
        peer = self._peers[name]
        full = self.interest.peer_up(name, peer.kind)
        header = encode_header(Header(Kind.CONTROL, subject=INTEREST))
        peer.end.send(header, encode_announce(True, full, set()))

    def _peer_down(self, name: str, why: str = "") -> None:
        gone = self._peers.pop(name, None)
        log.info("peer %s is down (%s); dropping its interest", name, why or "closed")
        lost = self.interest.remote_keys(name)
        now = time.monotonic()
        self.settle.lost(name, [k[0] for k in lost], now)
        if gone is not None and gone.kind is PeerKind.HUB:
            self.settle.hub_lost(now)
        self._moved()
        self.interest.peer_down(name)
        self._remote_changed([k[0] for k in lost])
        for tally in self.tallies.peer_lost(name):
            self._finish(tally)
        for peer_name, fut in self._barriers.values():
            if peer_name == name and not fut.done():
                fut.set_result(None)  # a dead peer forwards nothing more
        self._schedule_flush()
        self._peers_changed()

    async def _heartbeat(self) -> None:
        interval = self.settings.mesh_heartbeat
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            # Heartbeats, and every lifecycle timer: handshake, silence, drain, switch.
            self._run(self.peerlinks.tick(now))
            for tally in self.tallies.expire(now):
                self._finish(tally)

    # -- interest -----------------------------------------------------------------------

    def _labels(self, session: Any) -> Labels:
        labels = {"site": self.settings.site}
        labels.update(getattr(session, "labels", {}) or {})
        return tuple(sorted(labels.items()))

    def local_sub(self, session: Hashable, sid: int, pattern: str, queue: str) -> None:
        """An agent subscribed (after the interest table accepted it)."""
        keys = self._local_keys.setdefault(session, {})
        old = keys.pop(sid, None)
        if old is not None:
            self.interest.local_remove(old)
        key: InterestKey = (pattern, queue, self._labels(session) if queue else ())
        keys[sid] = key
        self.interest.local_add(key)
        self._schedule_flush()

    def local_unsub(self, session: Hashable, sid: int) -> None:
        keys = self._local_keys.get(session)
        if keys and sid in keys:
            self.interest.local_remove(keys.pop(sid))
            self._schedule_flush()

    def local_drop(self, session: Hashable) -> None:
        for key in self._local_keys.pop(session, {}).values():
            self.interest.local_remove(key)
        self._schedule_flush()

    def has_remote_interest(self, subject: str) -> bool:
        """Whether a message a local agent publishes on ``subject`` would go to a peer (the
        node's directory must then route it, not hand out direct paths)."""
        for entry in self.interest.trie.match(subject, cache=False):
            peer = self._peers.get(entry.peer)
            if peer is not None and self.strategy.may_forward(None, peer.kind):
                return True
        return False

    def _remote_changed(self, patterns: list[str]) -> None:
        """Peers' interest changed: the node's directory caches may be stale."""
        notify = getattr(self.node, "_interest_changed", None)
        if notify is None:
            return
        for pattern in patterns:
            if not pattern.startswith(INBOX_PREFIX):
                notify(pattern)
                return  # one notice invalidates every cached answer

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        header = encode_header(Header(Kind.CONTROL, subject=INTEREST))
        for name, delta in self.interest.take_deltas().items():
            peer = self._peers.get(name)
            # A switching peer gets the full set on its kept link (deltas included).
            if peer is not None and peer.end.state.state is LinkState.UP:
                peer.end.send(header, encode_announce(False, delta.add, delta.remove))

    # -- requests that reached nobody while interest was in flight -----------------------

    def _moved(self) -> None:
        self._interest_moved.set()
        self._interest_moved = asyncio.Event()

    def hold_request(self, bound: Any, header: Header, payload: Any) -> bool:
        """A local agent's request reached nobody. If interest in its subject may still be on
        its way (``SettleBook``), hold it and route it again once interest moved or the wait
        ran out (bounded by the settle grace and the request's own timeout). Returns whether
        it was held (then the caller must not answer ``NoResponders``).
        """
        if self._replaying or header.flags & (Flags.COUNT | Flags.SHM):
            return False
        if self._held_requests >= _MAX_HELD:
            return False
        now = time.monotonic()
        until = self.settle.until(header.subject, now)
        if until is None:
            return False
        if header.timeout_ms:
            # Half the request's time at most: a requester still gets its typed answer
            # ("no responders") before its own timeout would fire.
            until = min(until, now + header.timeout_ms / 2000)
        self._held_requests += 1
        self._spawn(self._route_again(bound, header, payload, until))
        return True

    def _routable(self, subject: str) -> bool:
        return bool(self.node.interest.route(subject).targets) or bool(
            self.interest.trie.match(subject, cache=False)
        )

    async def _route_again(self, bound: Any, header: Header, payload: Any, until: float) -> None:
        try:
            while not self._routable(header.subject):
                now = time.monotonic()
                settles = self.settle.until(header.subject, now)
                if settles is None or now >= until:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._interest_moved.wait(), min(until, settles) - now
                    )
        finally:
            self._held_requests -= 1
        if bound.session.state is SessionState.CLOSED:
            return  # the requester is gone: nobody to answer
        self._replaying = True
        try:
            self.node._publish(bound, header, payload)
        finally:
            self._replaying = False

    # -- publish path -------------------------------------------------------------------

    def route(self, subject: str, header: Header, bound: Any) -> Route:
        """Local targets and peer copies for one message (called by ``Node._publish``)."""
        origin = bound if isinstance(bound, PeerOrigin) else None
        prefer = decode_prefer(header.headers)
        labels = self._labels
        rank = (lambda s: float(mismatch(prefer, labels(s.session)))) if prefer else None
        local = self.node.interest.route(subject, rank)
        inbox = subject.startswith(INBOX_PREFIX)
        remote = self.interest.trie.match(subject, cache=not inbox)
        if inbox and remote:
            # Replies go only where their inbox is: a peer's ``>`` never sees them.
            remote = frozenset(e for e in remote if e.pattern.startswith(INBOX_PREFIX))
        if not remote and origin is None:
            return local
        strategy = self.strategy
        peers = self._peers
        came_from = origin.peer if origin is not None else None
        origin_kind = origin.kind if origin is not None else None

        def may_send(name: str) -> bool:
            peer = peers.get(name)
            return (
                peer is not None
                and name != came_from
                and strategy.may_forward(origin_kind, peer.kind)
            )

        plan = plan_route(
            local.targets,
            remote,
            may_send=may_send,
            only_groups=decode_groups(header.queue) if origin is not None else None,
            prefer=prefer,
            local_labels=lambda s: dict(labels(s.session)),
            site=self.settings.site,
            rtt=self._rtt,
        )
        return MeshRoute(plan.local, plan.peers)

    def _rtt(self, name: str) -> float:
        peer = self._peers.get(name)
        if peer is None or peer.end.state.rtt is None:
            return 1.0  # unmeasured: behind every measured peer
        return peer.end.state.rtt

    def forward(
        self,
        bound: Any,
        header: Header,
        payload: Buffer,
        route: Route,
        reached: int,
        names: list[str] | None = None,
    ) -> bool:
        """Send the peer copies; returns True when the mesh owns the STATUS answer.

        ``names`` (gathers only) are the ``agent@node`` of the local responders reached; the
        STATUS that answers a gather carries every node's names so the requester can say who
        did not answer."""
        origin = bound if isinstance(bound, PeerOrigin) else None
        targets = route.peers if isinstance(route, MeshRoute) else {}
        flags = header.flags
        # Two ways to count: a gather (COUNT) needs every peer's total; a request only needs
        # to learn that nobody anywhere was reached, so peers speak up only when they reached
        # none (NO_RESPONDERS), which keeps a frame per request off the wire.
        upstream_wants = bool(flags & (Flags.COUNT | Flags.NO_RESPONDERS)) and (
            origin is not None or bool(header.reply)
        )
        full = bool(flags & Flags.COUNT)
        counted = upstream_wants and (full or reached == 0)
        if not targets:
            if origin is not None and counted:
                self._send_count(origin.peer, header.sid, reached, names)
            return origin is not None
        corr = 0
        out_flags = 0
        if counted:
            out_flags = Flags.COUNT if full else Flags.NO_RESPONDERS
            budget = header.timeout_ms / 1000 if header.timeout_ms else _DEFAULT_TALLY_S
            upstream: _LocalUpstream | _PeerUpstream = (
                _PeerUpstream(origin.peer, header.sid, zero_only=not full)
                if origin is not None
                else _LocalUpstream(
                    bound,
                    header.reply,
                    header.msg_id,
                    flags,
                    None if self._replaying else header,
                    payload,
                )
            )
            corr = self.tallies.open(
                upstream, header.msg_id, reached, set(targets), time.monotonic() + budget, names
            )
        for name, groups in targets.items():
            out = Header(
                Kind.PUB,
                subject=header.subject,
                reply=header.reply,
                msg_id=header.msg_id,
                timeout_ms=header.timeout_ms,
                traceparent=header.traceparent,
                headers=header.headers,
                sid=corr,
                queue=encode_groups(groups),
                status=header.status,
                seq=header.seq,
                flags=out_flags,
            )
            peer = self._peers.get(name)
            ok = peer is not None and self._send_peer(peer, encode_header(out), payload)
            if ok:
                self.stats["forwarded"] += 1
                self.forwarded_to[name] = self.forwarded_to.get(name, 0) + 1
            else:
                self.stats["send_failed"] += 1
                if counted:
                    done = self.tallies.answer(name, corr, 0)
                    if done is not None:
                        self._finish(done)
        return origin is not None or counted

    def _peer_publish(self, end: _End, header: Header, payload: memoryview) -> None:
        peer = self._peers.get(end.peer)
        if peer is None:
            self.stats["stale"] += 1
            return  # a link of a peer that is gone
        # On a SUPERSEDED link (the machine admitted it), a message the peer sent before it
        # saw our REFUSE: it was sent once, on that link only, so delivering it duplicates
        # nothing.
        if header.flags & ~(Flags.COUNT | Flags.NO_RESPONDERS):
            raise RemoteProtocolError("a forwarded message carries only counting flags")
        self.stats["received"] += 1
        self.node._publish(peer.origin, header, payload)  # type: ignore[arg-type]

    def _peer_status(self, end: _End, header: Header, payload: memoryview) -> None:
        if header.status != Status.ROUTED:
            raise RemoteProtocolError(f"unexpected mesh STATUS {header.status}")
        done = self.tallies.answer(end.peer, header.sid, header.seq, decode_names(payload))
        if done is not None:
            self._finish(done)

    def _send_count(
        self, name: str, corr: int, count: int, names: list[str] | None = None
    ) -> None:
        peer = self._peers.get(name)
        if peer is not None:
            status = Header(Kind.STATUS, sid=corr, status=Status.ROUTED, seq=count)
            self._send_peer(peer, encode_header(status), encode_names(names))

    def _send_peer(self, peer: _Peer, header: bytes, payload: Buffer) -> bool:
        """Send a message or count to ``peer``; while it switches links, hold it for the link
        it kept (a count lost there would leave the upstream waiting for the deadline)."""
        if peer.end.state.state is LinkState.UP:
            return peer.end.send(header, payload)
        # A copy: the payload may be a view of a receive buffer that is reused.
        return self.peerlinks.hold(peer.info.name, (header, bytes(payload)))

    def _finish(self, tally: Tally[_LocalUpstream | _PeerUpstream]) -> None:
        up = tally.upstream
        if isinstance(up, _PeerUpstream):
            if not up.zero_only:
                self._send_count(up.peer, up.corr, tally.total, tally.names)
            elif tally.total == 0 and not tally.expired:
                self._send_count(up.peer, up.corr, 0)
            return
        if tally.expired and not up.flags & Flags.COUNT:
            return  # some peer never said "none": it reached someone, the reply will tell
        if tally.total == 0 and up.flags & Flags.NO_RESPONDERS:
            # Every peer said "none" (a lost peer may have delivered it: never route twice).
            if not tally.peer_lost and up.header is not None and self.hold_request(
                up.bound, up.header, up.payload
            ):
                return
            self.node.stats.no_responders += 1
            status = Header(
                Kind.STATUS, subject=up.reply, msg_id=up.msg_id, status=Status.NO_RESPONDERS
            )
        elif up.flags & Flags.COUNT:
            status = Header(
                Kind.STATUS,
                subject=up.reply,
                msg_id=up.msg_id,
                status=Status.ROUTED,
                seq=tally.total,
            )
            self.node._send(up.bound, status, encode_names(tally.names))
            return
        else:
            return
        self.node._send(up.bound, status)

    # -- introspection ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Peers, links, round trips and interest, for ``fabric mesh``."""
        return {
            "role": self.role.value,
            "cluster": self.endpoint,
            "peers": [
                {
                    "name": name,
                    "kind": p.kind.value,
                    "site": p.info.site,
                    "labels": p.info.labels,
                    "dialed": p.end.dialed,
                    "rtt_ms": None if p.end.state.rtt is None else round(p.end.state.rtt * 1e3, 3),
                    "state": p.end.state.state.value,
                    "forwarded": self.forwarded_to.get(name, 0),
                    "interest": sorted([k[0], k[1]] for k in self.interest.remote_keys(name)),
                }
                for name, p in sorted(self._peers.items())
            ],
            "local_interest": len(self.interest.local),
            "open_tallies": len(self.tallies),
            "stats": dict(self.stats),
        }


def _refuse_reason(payload: memoryview) -> str:
    import msgpack

    try:
        value = msgpack.unpackb(payload, raw=False)
        return str(value.get("reason", "refused"))
    except Exception:
        return "refused"


def _curve_from(settings: NodeSettings) -> CurveKeys | None:
    from ..auth import load_keypair, resolve_public_key

    if settings.curve_key is None:
        if settings.curve_allowed:
            raise ConfigError("curve_allowed needs curve_key (this node's own key pair)")
        return None
    public, secret = load_keypair(settings.curve_key)
    allowed = frozenset(resolve_public_key(k) for k in settings.curve_allowed)
    for url in [*settings.seeds, *settings.leaf_of]:
        if parse_peer_url(url)[1] is None:
            # Fail closed: without the server's key this link could only be plaintext.
            raise ConfigError(f"curve_key is set but peer {url} has no ?key= server key")
    return CurveKeys(public, secret, allowed)


async def start_mesh(node: Node) -> Mesh | None:
    """The node's mesh, started; None when the settings name no peers and no cluster.

    Raises:
        ConfigError: inconsistent mesh or key settings. ConnectionLost: cannot listen.
    """
    settings = node.settings
    if not (settings.cluster or settings.seeds or settings.leaf_of):
        return None
    mesh = Mesh(node, settings, _curve_from(settings))
    await mesh.start()
    return mesh
