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
import logging
import os
from typing import TYPE_CHECKING, Any

from typing_extensions import Buffer

from ..errors import ConfigError, ConnectionLost, FabricError, RemoteProtocolError
from ..private import decode_names, encode_names
from ..router import PeerKind, PeerOrigin, Role
from ..wire import MAX_HEADER_BYTES, Flags, Header, Kind, Status, decode_header, encode_header
from ._barrier import _BARRIER_BASE, Barriers
from ._dialing import _HANDSHAKE_S, Dialing, _curve_from, parse_peer_url
from ._direct import RESOLVE, RESOLVED, MeshDirectory
from ._end import _End, _Held, _Peer
from ._host import MeshHost
from ._links import CurveKeys, PeerListener
from ._peer import LinkState
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
from ._status import mesh_status
from ._tcp import listen_tcp

if TYPE_CHECKING:
    from ..config import NodeSettings

__all__ = ["Mesh", "PeerOrigin", "parse_peer_url", "start_mesh"]

log = logging.getLogger("fabric.mesh")

#: Frames held for a peer while it switches links (then sending fails as for a dead peer).
_BACKLOG = 10_000


class Mesh(Dialing, Barriers):
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
        return mesh_status(self)


def _refuse_reason(payload: memoryview) -> str:
    import msgpack

    try:
        value = msgpack.unpackb(payload, raw=False)
        return str(value.get("reason", "refused"))
    except Exception:
        return "refused"


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
