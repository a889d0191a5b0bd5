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
import time
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
    state: PeerLinkState
    peer: str = ""
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    refused: str = ""
    #: Replaced by a duplicate link to the same peer. Interest frames still in flight on it
    #: are older than the full set the peer sends on the kept link, and the two links are
    #: not ordered with each other: applying them late would roll the peer's interest back.
    superseded: bool = False
    #: We refused this link as a duplicate after it was up. We send nothing more on it, but
    #: the peer may have sent messages on it before our REFUSE reached it (to the peer it
    #: was its live link): they are read and delivered until the peer answers our REFUSE,
    #: closes, or ``_drain_bound`` runs out. Closing at once lost them (and their replies).
    draining: bool = False
    #: Called once the peer's handshake is accepted (lifts the pre-handshake frame limit).
    on_up: Callable[[], None] | None = None
    #: Called when the end is closed (the mesh forgets it).
    on_close: Callable[[], None] | None = None

    def send(self, header: bytes, payload: Buffer = b"") -> bool:
        """False when the link is closed or the peer is too far behind (``Link.limit``):
        memory stays bounded, and the caller counts the refusal."""
        return self.link.try_send(header, payload)

    def close_transport(self) -> None:
        if self.on_close is not None:
            self.on_close()
        link = self.link
        if isinstance(link, ZmqDealerLink) and self.refused == "duplicate":
            # After a duplicate REFUSE, what we sent last on the link (our answer included)
            # must still go out: the peer drains it. Otherwise drop at once.
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
        self.mesh._close_end(self.end)


@dataclass(eq=False, slots=True)
class _Peer:
    info: PeerInfo
    kind: PeerKind
    end: _End
    origin: PeerOrigin
    #: While the peer switches to the duplicate link it kept (ours was refused before that
    #: one came up here): frames to forward once it is up. None when not switching.
    backlog: list[tuple[bytes, Any]] | None = None


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
        self.info = PeerInfo(settings.name, settings.site, self.role, labels)
        self._peers: dict[str, _Peer] = {}
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
        self._peer_down_events: dict[str, asyncio.Event] = {}
        # Barrier pings in flight: seq -> (peer, future). Their seqs live above heartbeats'.
        self._barriers: dict[int, tuple[str, asyncio.Future[None]]] = {}
        self._barrier_seq = _BARRIER_BASE
        self._started = time.monotonic()
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
        for peer in list(self._peers.values()):
            self._close_end(peer.end)
        for end in list(self._ends_by_identity.values()):
            self._close_end(end)
        for end in list(self._tcp_ends):
            self._close_end(end)
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
        """Wrap a new peer link: its frames go to ``_frame``, its loss to ``_close_end``."""
        link.limit = self.settings.slow_consumer_bytes
        end = _End(link, dialed, PeerLinkState(last_rx=self.clock()))
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
        """Dial, send HELLO until WELCOME or the handshake time runs out."""
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
                break
            # ZeroMQ drops sends until it has connected (IMMEDIATE), so HELLO repeats there;
            # a TCP stream delivers the first one or fails.
            if not sent or self.transport == "zmq":
                sent = end.send(hello, payload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(end.closed.wait(), 0.1)
        if end.state.state is LinkState.UP:
            return end
        if end.refused:
            return end
        self._dial_failed()
        self._close_end(end)
        return None

    def _dial_failed(self) -> None:
        starting = time.monotonic() - self._started < _START_GRACE_S
        self.stats["dial_retries" if starting else "dial_failures"] += 1

    async def _dial_loop(self, seed: str) -> None:
        delay = 0.1
        while True:
            end = await self._dial_once(seed)
            if end is not None and end.refused == "duplicate":
                await self._until_down(end.peer)
                delay = 0.1
                continue
            if end is not None and end.state.state is LinkState.UP:
                delay = 0.1
                await end.closed.wait()
                if end.refused == "duplicate" or (
                    end.peer in self._peers and self._peers[end.peer].end is not end
                ):
                    await self._until_down(end.peer)
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _until_down(self, peer: str) -> None:
        """The other direction carries this peer: redial once it is gone. Bounded, because
        the other side may hold a dead link it has not noticed yet (the peer restarted)."""
        down = self._peer_down_events.setdefault(peer, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(down.wait(), max(5.0, 2 * self.settings.mesh_dead_after))

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
        if end.state.state is LinkState.CLOSED:
            return
        now = time.monotonic()
        end.state.received(now)
        try:
            header = decode_header(raw)
            kind = header.kind
            if kind is Kind.PUB:
                end.state.check("pub")
                self._peer_publish(end, header, payload)
            elif kind is Kind.STATUS:
                end.state.check("status")
                self._peer_status(end, header, payload)
            elif kind is Kind.PING:
                if header.msg_id >= _BARRIER_BASE and end.peer:
                    self._spawn(self._relay_barrier(end, header.msg_id))
                else:
                    end.send(encode_header(Header(Kind.PONG, msg_id=header.msg_id)), b"")
            elif kind is Kind.PONG:
                if not self._barrier_answered(header.msg_id):
                    end.state.pong(header.msg_id, now)
                    self.router.peer_rtt(end.peer, end.state.rtt)
            elif kind is Kind.CONTROL:
                self._control(end, header, payload)
            else:
                raise RemoteProtocolError(f"{kind.name} is not a mesh frame")
        except FabricError as exc:
            self.stats["malformed"] += 1
            log.warning("bad frame from peer %s: %s", end.peer or "?", exc)

    def _control(self, end: _End, header: Header, payload: memoryview) -> None:
        subject = header.subject
        if subject == INTEREST:
            end.state.check("interest")
            if end.superseded or end.draining:
                return  # the peer sends its full set on the link we kept
            ann = decode_announce(payload)
            actions = self.router.peer_interest(
                end.peer, ann.full, ann.add, ann.remove, self.clock()
            )
            self._schedule_flush()
            self.host.run(actions)
        elif subject == HELLO:
            end.state.check("hello")
            if end.dialed:
                raise RemoteProtocolError("HELLO on a link we dialled")
            info = decode_info(payload)
            kind = self.strategy.accepts(info.role)
            if kind is None or info.name == self.info.name:
                self._refuse(end, f"a {self.role.value} node does not take {info.role.value} peers")
                return
            if end.state.state is LinkState.UP:
                # Our WELCOME was lost and the dialer repeats itself: answer again.
                self._welcome(end)
                return
            self._welcome(end)
            self._link_up(end, info, kind)
        elif subject == WELCOME:
            end.state.check("welcome")
            info = decode_info(payload)
            if end.state.state is LinkState.UP:
                return  # answer to a repeated HELLO
            if info.role is Role.CLOUD and self.role is Role.CLOUD:
                kind = PeerKind.CLUSTER
            elif info.role is Role.CLOUD and self.role is Role.EDGE:
                kind = PeerKind.HUB
            else:
                self._refuse(end, "peer role does not fit")
                return
            self._link_up(end, info, kind)
        elif subject == REFUSE:
            end.state.check("refuse")
            if end.draining:
                # The peer's last frame on a link we refused (its answer to our REFUSE, or
                # its own refusal crossing ours): everything it sent here has been read.
                self._close_end(end)
                return
            reason = _refuse_reason(payload)
            end.refused = reason
            if reason != "duplicate":
                log.warning("peer %s refused the link: %s", end.peer or "?", reason)
            self.stats["duplicates" if reason == "duplicate" else "refused"] += 1
            if reason == "duplicate" and end.state.state is LinkState.UP:
                # Answer last on this link, so the peer, which drains it, knows it has read
                # everything we sent on it (ZeroMQ shows it no close; TCP would).
                self._send_refuse(end, reason)
            self._close_end(end)
        elif subject in (RESOLVE, RESOLVED):
            if end.peer and end.state.state is LinkState.UP:
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

    def _refuse(self, end: _End, reason: str) -> None:
        end.refused = reason
        self._send_refuse(end, reason)
        if reason == "duplicate" and end.state.state is LinkState.UP:
            # The peer may already send on this link (to it, it is up and maybe its only
            # one): read on until it answers the REFUSE or closes, then close (bounded).
            end.draining = True
            self._spawn(self._drain(end))
            return
        self._close_end(end)

    def _drain_bound(self) -> float:
        return max(3 * self.settings.mesh_heartbeat, self.settings.mesh_dead_after)

    async def _drain(self, end: _End) -> None:
        """Close a refused duplicate link once the peer is done with it, or after a bound (a
        peer that died meanwhile never answers)."""
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(end.closed.wait(), self._drain_bound())
        finally:
            self._close_end(end)  # also when the mesh closes meanwhile (this task cancelled)

    # -- links up and down --------------------------------------------------------------

    def _link_up(self, end: _End, info: PeerInfo, kind: PeerKind) -> None:
        if end.on_up is not None:
            end.on_up()
        end.peer = info.name
        end.state.up(time.monotonic())
        existing = self._peers.get(info.name)
        if existing is not None and existing.backlog is not None:
            # The link the peer kept is up: the switch is over, nothing was lost.
            backlog, existing.backlog = existing.backlog, None
            existing.end = end
            existing.info = info
            self._send_full(info.name)
            for frame_header, payload in backlog:
                end.send(frame_header, payload)
            return
        if existing is not None and existing.end is not end:
            if self._keeps(existing.end, end, info.name):
                self._refuse(end, "duplicate")
                return
            old = existing.end
            old.superseded = True
            existing.end = end
            existing.info = info
            self._refuse(old, "duplicate")
            self._send_full(info.name)
            return
        peer = _Peer(info, kind, end, PeerOrigin(info.name, kind))
        self._peers[info.name] = peer
        self._peer_down_events.pop(info.name, None)
        log.info("peer %s (%s, site %s) is up", info.name, kind.value, info.site)
        self._send_full(info.name)
        self._schedule_flush()

    def _keeps(self, old: _End, new: _End, peer: str) -> bool:
        """With two links to one peer, keep the one dialled by the lower name (both ends agree);
        with two dialled by the same side, the newer (the older is stale)."""
        me = self.info.name

        def dialer(e: _End) -> str:
            return me if e.dialed else peer

        if dialer(old) == dialer(new):
            return False
        return dialer(old) == min(me, peer)

    def _send_full(self, name: str) -> None:
        peer = self._peers[name]
        full = self.router.peer_up(name, peer.kind, self.clock())
        header = encode_header(Header(Kind.CONTROL, subject=INTEREST))
        peer.end.send(header, encode_announce(True, full, set()))

    def _close_end(self, end: _End) -> None:
        if end.state.state is LinkState.CLOSED:
            return
        end.state.close()
        end.close_transport()
        end.closed.set()
        peer = self._peers.get(end.peer)
        if peer is not None and peer.end is end:
            if end.refused == "duplicate" and peer.backlog is None:
                # The peer refused this link because it keeps another one to us that is not
                # up here yet (a link is up at its acceptor on HELLO, at its dialer only on
                # WELCOME). That is a switch, not a death: counting it as one would answer
                # every open request "no responders" and drop the peer's interest.
                peer.backlog = []
                self._spawn(self._switch_or_down(peer, end))
            else:
                self._peer_down(end.peer)

    async def _switch_or_down(self, peer: _Peer, old: _End) -> None:
        """Give a switching peer until ``mesh_dead_after`` for its kept link to come up."""
        await asyncio.sleep(max(3 * self.settings.mesh_heartbeat, self.settings.mesh_dead_after))
        if self._peers.get(peer.info.name) is peer and peer.end is old:
            peer.backlog = None
            self._peer_down(peer.info.name)

    def _peer_down(self, name: str) -> None:
        self._peers.pop(name, None)
        log.info("peer %s is down; dropping its interest", name)
        self.host.run(self.router.peer_down(name, self.clock()))
        self._peer_down_events.setdefault(name, asyncio.Event()).set()
        self.directory.peer_down(name)
        for peer_name, fut in self._barriers.values():
            if peer_name == name and not fut.done():
                fut.set_result(None)  # a dead peer forwards nothing more
        self._schedule_flush()

    async def _heartbeat(self) -> None:
        interval = self.settings.mesh_heartbeat
        # Pings queue behind data on a busy link, so silence must last a while to mean death.
        dead_after = max(3 * interval, self.settings.mesh_dead_after)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for peer in list(self._peers.values()):
                end = peer.end
                if end.state.silent(now, dead_after):
                    log.warning("peer %s missed its heartbeats", peer.info.name)
                    self._close_end(end)
                    continue
                seq = end.state.ping(now)
                end.send(encode_header(Header(Kind.PING, msg_id=seq)), b"")
            for end in list(self._tcp_ends):
                if end.state.state is LinkState.HANDSHAKE and end.state.silent(now, _HANDSHAKE_S):
                    self._close_end(end)
            for identity, end in list(self._ends_by_identity.items()):
                if end.state.state is LinkState.HANDSHAKE and end.state.silent(now, _HANDSHAKE_S):
                    self._close_end(end)
                elif end.state.state is LinkState.CLOSED:
                    self._ends_by_identity.pop(identity, None)

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
            if peer is not None:
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
        if peer is None or (peer.end is not end and not end.draining):
            self.stats["stale"] += 1
            return  # a link of a peer that is gone
        # On a link we are draining, a message the peer sent before it saw our REFUSE: it
        # was sent once, on that link only, so delivering it duplicates nothing.
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
        if peer.backlog is not None and len(peer.backlog) < _BACKLOG:
            # A copy: the payload may be a view of a receive buffer that is reused.
            peer.backlog.append((header, bytes(payload)))
            return True
        return peer.end.send(header, payload)

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
