"""The mesh driver: peer links and their lifecycle, carrying the router's decisions to peers.

Routing is the router's (``fabric.router``: interest, placement, tallies, held requests);
this module keeps peer links up and turns peer frames into router inputs. It reaches its node
only through ``MeshHost`` (``_host.py``): a message from a peer enters the node's publish path
with a ``PeerOrigin`` standing in for the sending session, and the actions peer events produce
(STATUS to agents, counts upstream) are carried out by the node's ``run``. The node sends
copies and counts through ``forward`` and ``send_count``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from typing_extensions import Buffer

from ..errors import ConfigError, ConnectionLost, FabricError, RemoteProtocolError, Timeout
from ..private import decode_names, encode_names
from ..router import PeerKind, PeerOrigin, Role
from ..transports import Link, StreamLink, ZmqDealerLink, ZmqPeerLink
from ..wire import MAX_HEADER_BYTES, Flags, Header, Kind, Status, decode_header, encode_header
from ._direct import RESOLVE, RESOLVED, MeshDirectory
from ._host import MeshHost
from ._links import CurveKeys, PeerListener, dial_peer
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
from ._tcp import dial_tcp, listen_tcp

if TYPE_CHECKING:
    from ..config import NodeSettings

__all__ = ["Mesh", "PeerOrigin", "parse_peer_url", "start_mesh"]

log = logging.getLogger("fabric.mesh")

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
#: Barrier pings number from here up, so they never collide with heartbeat sequence numbers.
_BARRIER_BASE = 1 << 48


def parse_peer_url(text: str) -> tuple[str, bytes | None]:
    """``tcp://host:port[?key=Z85]`` -> (endpoint, server key or None)."""
    url, sep, key = text.partition("?key=")
    return url, (key.encode() if sep else None)


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

    def __init__(self, mesh: Mesh, end: _End) -> None:
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


class Mesh:
    """A node's part in the mesh. Create with ``start_mesh``; ``close()`` to leave."""

    def __init__(self, host: MeshHost, settings: NodeSettings, curve: CurveKeys | None) -> None:
        self.host = host
        self.router = host.router
        self.clock = host.clock
        self.settings = settings
        self.curve = curve
        self.role = self.router.role
        self.strategy = self.router.strategy
        labels = dict(settings.labels)
        if host.metrics_url is not None:
            labels.setdefault("metrics", host.metrics_url)  # `fabric top --mesh` finds it
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
        self._started = self.clock()
        #: Direct targets on peers, for requesters on this node (``_direct.py``).
        self.directory = MeshDirectory(self)
        #: Messages forwarded to each peer, by name (metrics, ``/peers``).
        self.forwarded_to: dict[str, int] = {}
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
        self.flush()
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
                        budget=self.host.pending,
                        stall_timeout=self.settings.frame_stall_timeout,
                    )
                except OSError as exc:
                    raise ConnectionLost(
                        f"cannot listen for peers on {self.settings.cluster}: {exc}"
                    ) from None
        for seed in self.settings.seeds:
            self._spawn(self._dial_loop(seed))
        if self.settings.leaf_of:
            self.router.hub_lost(self.clock())  # no hub yet: requests wait for the first
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
        self._run(self.peerlinks.shutdown(self.clock()))
        if self._listener is not None:
            self._listener.close()
        if self._tcp_server is not None:
            self._tcp_server.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dialling -----------------------------------------------------------------------

    def _end(self, link: Link, dialed: bool) -> _End:
        """Wrap a new peer link, opened as a link in the lifecycle machine: its frames go to
        ``_frame``, its loss to ``_transport_lost``."""
        link.limit = self.settings.slow_consumer_bytes
        state = self.peerlinks.open(dialed, self.clock())
        end = _End(link, dialed, state)
        self._ends[state.id] = end
        link.handler = _EndHandler(self, end)
        return end

    def _tcp_end(self, link: StreamLink, dialed: bool) -> _End:
        end = self._end(link, dialed)
        end.on_close = lambda: self._tcp_ends.discard(end)
        self._tcp_ends.add(end)
        return end

    def _accept_tcp(self, link: StreamLink) -> None:
        # Until its HELLO is accepted a peer may send only small frames (docs/limits.md).
        link.set_max_payload(_HANDSHAKE_MAX_PAYLOAD)
        end = self._tcp_end(link, dialed=False)
        end.on_up = lambda: link.set_max_payload(self.settings.max_payload)

    def attach(self, link: Link, *, dialed: bool) -> None:
        """A peer link over a ``Link`` the caller opened (in memory, in tests): its frames and
        its loss reach the mesh through the link's handler. A dialled link says HELLO."""
        end = self._end(link, dialed)
        if dialed:
            end.send(encode_header(Header(Kind.CONTROL, subject=HELLO)), encode_info(self.info))

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
            try:
                end = self._end(dial_peer(url, self.curve, server_key), dialed=True)
            except ConnectionLost as exc:
                log.error("%s", exc)
                return None
        hello = encode_header(Header(Kind.CONTROL, subject=HELLO))
        payload = encode_info(self.info)
        loop = asyncio.get_running_loop()
        until = loop.time() + _HANDSHAKE_S
        sent = False
        while end.state.state is LinkState.HANDSHAKE and not end.closed.is_set():
            if loop.time() > until:
                self._run(self.peerlinks.give_up(end.state, self.clock()))
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
        starting = self.clock() - self._started < _START_GRACE_S
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

    def _listener_frame(self, link: ZmqPeerLink) -> None:
        """A new identity on the ZeroMQ listener (its first frame follows at once)."""
        identity = link.identity
        end = self._end(link, dialed=False)

        def forget() -> None:
            if self._ends_by_identity.get(identity) is end:
                del self._ends_by_identity[identity]

        end.on_close = forget
        self._ends_by_identity[identity] = end

    def _frame(self, end: _End, raw: bytes, payload: memoryview) -> None:
        if end.closed.is_set():
            return
        now = self.clock()
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
                    self.router.peer_rtt(end.peer, end.state.rtt)
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
            actions = self.router.peer_interest(
                end.peer, ann.full, ann.add, ann.remove, self.clock()
            )
            self._schedule_flush()
            self.host.run(actions)
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
        elif subject in (RESOLVE, RESOLVED):
            if end.peer and link.state is LinkState.UP:
                self.directory.control(end.peer, header, payload)
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
        self._run(self.peerlinks.transport_lost(end.state, self.clock()))

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
        log.info("peer %s (%s, site %s) is up", name, kind.value, info.site)
        self._send_full(name)
        self._schedule_flush()
        self._peers_changed()

    def _peers_changed(self) -> None:
        self._peers_moved.set()
        self._peers_moved = asyncio.Event()

    def _send_full(self, name: str) -> None:
        peer = self._peers[name]
        full = self.router.peer_up(name, peer.kind, self.clock())
        header = encode_header(Header(Kind.CONTROL, subject=INTEREST))
        peer.end.send(header, encode_announce(True, full, set()))

    def _peer_down(self, name: str, why: str = "") -> None:
        self._peers.pop(name, None)
        log.info("peer %s is down (%s); dropping its interest", name, why or "closed")
        self.host.run(self.router.peer_down(name, self.clock()))
        self.directory.peer_down(name)
        for peer_name, fut in self._barriers.values():
            if peer_name == name and not fut.done():
                fut.set_result(None)  # a dead peer forwards nothing more
        self._schedule_flush()
        self._peers_changed()

    async def _heartbeat(self) -> None:
        interval = self.settings.mesh_heartbeat
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            # Heartbeats, and every lifecycle timer: handshake, silence, drain, switch.
            self._run(self.peerlinks.tick(now))

    # -- interest and messages (the router decides; this carries it to peers) ------------

    def announce(self) -> None:
        """Local interest changed: send peers what the router says they must hear (batched
        to the end of this loop turn)."""
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send every pending interest announcement now."""
        self._flush_scheduled = False
        header = encode_header(Header(Kind.CONTROL, subject=INTEREST))
        for name, delta in self.router.take_announcements().items():
            peer = self._peers.get(name)
            # A switching peer gets the full set on its kept link (deltas included).
            if peer is not None and peer.end.state.state is LinkState.UP:
                peer.end.send(header, encode_announce(False, delta.add, delta.remove))

    def forward(self, name: str, header: bytes, payload: Buffer) -> bool:
        """Send a copy of a message to peer ``name``; False when it cannot take it (gone)."""
        peer = self._peers.get(name)
        if peer is not None and self._send_peer(peer, header, payload):
            self.stats["forwarded"] += 1
            self.forwarded_to[name] = self.forwarded_to.get(name, 0) + 1
            return True
        self.stats["send_failed"] += 1
        return False

    def send_control(self, name: str, header: Header, payload: Buffer = b"") -> bool:
        """A mesh control frame to peer ``name``; False when it is gone."""
        peer = self._peers.get(name)
        return peer is not None and self._send_peer(peer, encode_header(header), payload)

    def send_count(
        self, name: str, corr: int, count: int, names: list[str] | None = None
    ) -> None:
        """Tell peer ``name`` how many responders its counted copy ``corr`` reached."""
        peer = self._peers.get(name)
        if peer is not None:
            status = Header(Kind.STATUS, sid=corr, status=Status.ROUTED, seq=count)
            self._send_peer(peer, encode_header(status), encode_names(names))

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
        self.host.publish_from_peer(peer.origin, header, payload)

    def _peer_status(self, end: _End, header: Header, payload: memoryview) -> None:
        if header.status != Status.ROUTED:
            raise RemoteProtocolError(f"unexpected mesh STATUS {header.status}")
        names = decode_names(payload)
        self.host.run(self.router.peer_count(end.peer, header.sid, header.seq, names, self.clock()))

    def _send_peer(self, peer: _Peer, header: bytes, payload: Buffer) -> bool:
        """Send a message or count to ``peer``; while it switches links, hold it for the link
        it kept (a count lost there would leave the upstream waiting for the deadline)."""
        if peer.end.state.state is LinkState.UP:
            return peer.end.send(header, payload)
        # A copy: the payload may be a view of a receive buffer that is reused.
        return self.peerlinks.hold(peer.info.name, (header, bytes(payload)))

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
                    "interest": sorted(
                        [k[0], k[1]] for k in self.router.remote.remote_keys(name)
                    ),
                }
                for name, p in sorted(self._peers.items())
            ],
            "local_interest": len(self.router.remote.local),
            "open_tallies": len(self.router.tallies),
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


async def start_mesh(node: MeshHost, settings: NodeSettings) -> Mesh | None:
    """The node's mesh, started; None when the settings name no peers and no cluster.

    Raises:
        ConfigError: inconsistent mesh or key settings. ConnectionLost: cannot listen.
    """
    if not (settings.cluster or settings.seeds or settings.leaf_of):
        return None
    mesh = Mesh(node, settings, _curve_from(settings))
    await mesh.start()
    return mesh
