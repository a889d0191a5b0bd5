"""The broker node: a thin asyncio driver around the interest table and agent sessions.

It listens on a Unix socket for agents on its host and, optionally, on a ZeroMQ ROUTER for
agents elsewhere. Every frame is decoded (header only), checked against the session's state,
and routed. Payload bytes pass through untouched. A frame that breaks the protocol is counted
and answered with ERR; only a stream that lost framing is closed, because nothing after it can
be trusted. Nothing an agent sends can stop the node serving the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import msgpack
from typing_extensions import Buffer

from . import _node_admission, _node_control, _node_lifecycle, _node_publish, _node_slow
from ._node_admission import HANDSHAKE_MAX_PAYLOAD
from ._node_stats import NodeStats, node_status
from ._remote_direct import GrantIssuer
from .auth import Authorizer
from .config import NodeSettings
from .errors import (
    FabricError,
    InvalidSubject,
    NotAuthorized,
    PayloadTooLarge,
    RemoteProtocolError,
)
from .mesh import Mesh
from .metrics import HOP_SAMPLE_MASK, Monitoring
from .private import (
    ReplyGrants,
    encode_names,
    owns_inbox_pattern,
)
from .protocol import (
    DIR_INVALIDATE,
    Header,
    Kind,
    PendingBudget,
    Status,
    decode_header,
    encode_header,
)
from .router import (
    Action,
    Answer,
    Behind,
    Count,
    Forward,
    Invalidate,
    PeerOrigin,
    Replay,
    Router,
    role_for,
)
from .routing import INBOX_PREFIX
from .session import Session, SessionState
from .shm import PoolService
from .socket_claim import SocketClaim
from .state import StateHandover, StateService
from .telemetry import NodeTracer
from .transports import Link, StreamLink, ZmqRouterListener

__all__ = ["Node", "NodeStats"]

log = logging.getLogger("fabric.node")


class _SessionLink:
    """Binds one link to its session and forwards link events to the node."""

    __slots__ = ("link", "node", "session")

    def __init__(self, node: Node, link: Link) -> None:
        self.node = node
        self.link = link
        self.session = Session(last_seen=node.clock())

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        self.node._frame(self, header, payload)

    def link_lost(self, exc: BaseException | None) -> None:
        if exc is not None and isinstance(exc, FabricError):
            self.node.stats.malformed += 1
            log.warning("closing %s: %s", self.session, exc)
        self.node._drop(self)


class Node:
    """One broker process. ``await node.start()``, then ``await node.aclose()``.

    A node that is never started binds nothing: links handed to ``attach`` (agents) and a
    mesh whose peer links are attached by hand make a whole node in memory, driven by the
    ``clock`` given (tests/inprocess).
    """

    def __init__(
        self, settings: NodeSettings | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings = settings or NodeSettings()
        #: Monotonic seconds; every routing decision and deadline reads this clock.
        self.clock = clock
        #: Where every message goes and who answers STATUS (fabric/router); this node and its
        #: mesh carry out what it decides.
        self.router = Router(
            role=role_for(settings.role, bool(settings.leaf_of)),
            site=settings.site,
            settle_grace=max(3 * settings.mesh_heartbeat, settings.mesh_dead_after),
        )
        self.interest = self.router.local
        self.stats = NodeStats()
        self._links: dict[Hashable, _SessionLink] = {}
        self._unix_server: asyncio.AbstractServer | None = None
        self._zmq: ZmqRouterListener | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._valid_subjects: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Span per routed message when ``tracing`` is on (imports OpenTelemetry only then).
        self._tracer: NodeTracer | None = None
        if self.settings.tracing != "off":
            self._tracer = NodeTracer(
                self.settings.name, self.settings.tracing, self.settings.otlp_endpoint
            )
        #: Sessions that cached the directory (``$node.resolve``) and must hear of changes.
        self._resolvers: set[_SessionLink] = set()
        #: Serves ``$state.*`` control calls; created by ``start()``.
        self.state: StateService | None = None
        #: The shared-memory pool (``$pool.*`` calls, SHM publishes); None when disabled.
        self.pool: PoolService | None = None
        #: Migrating agents' state as sealed memfds over the pool socket (docs/migration.md).
        self.handover: StateHandover | None = None
        #: Peer links and forwarding (fabric/mesh); None when no cluster or hub is configured.
        self.mesh: Mesh | None = None
        #: Keys and grants for direct requests from other hosts (fabric/_remote_direct.py).
        self.direct_grants = GrantIssuer(self.settings.direct_grant_ttl)
        #: Agent credentials and subject permissions; None when no auth file is configured.
        self.auth: Authorizer | None = None
        #: This node's exclusive claim on its Unix socket; set by ``start()``.
        self._claim: SocketClaim | None = None
        #: Frames received by kind (index: wire Kind).
        self.kinds_in = [0] * (max(Kind) + 1)
        #: Metrics and the monitoring port (fabric/metrics); None unless configured.
        self.monitoring: Monitoring | None = None
        #: Reply subjects each session was handed and may answer into (fabric/private.py).
        self.grants = ReplyGrants()
        #: Bytes of partial incoming frames, over every stream connection (fabric/framing.py).
        self.pending = PendingBudget(self.settings.max_pending_bytes)
        #: The router's next deadline (tallies, held requests), armed once started.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Where agents can reach this node."""
        urls = [f"unix://{self.settings.socket}"]
        if self._zmq is not None:
            urls.append(self._zmq.endpoint)
        return urls

    @property
    def metrics_url(self) -> str | None:
        """Where this node's monitoring port answers, if it advertises one."""
        return None if self.monitoring is None else self.monitoring.advertised

    async def start(self) -> None:
        """Start listening (``_node_lifecycle.start``).

        Raises:
            SocketInUse: another live node serves on the Unix socket (fabric/socket_claim.py).
            ConnectionLost: when an endpoint cannot be bound (in use, no permission).
        """
        await _node_lifecycle.start(self)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def aclose(self) -> None:
        """Stop listening and drop every session."""
        await _node_lifecycle.aclose(self)

    def _accept_stream(self) -> StreamLink:
        link = StreamLink(
            HANDSHAKE_MAX_PAYLOAD,
            budget=self.pending,
            stall_timeout=self.settings.frame_stall_timeout,
        )
        self._accept(link)
        return link

    def attach(self, link: Link) -> None:
        """Serve an agent on ``link`` (any transport; an in-memory one in tests)."""
        self._accept(link)

    def _accept(self, link: Link) -> None:
        # One notion of "too far behind": the link's own limit, as on the mesh's links.
        link.limit = self.settings.slow_consumer_bytes
        bound = _SessionLink(self, link)
        link.handler = bound
        self._links[bound.session] = bound
        self.stats.sessions_opened += 1

    def _drop(self, bound: _SessionLink) -> None:
        session = bound.session
        if session.state is SessionState.CLOSED:
            return
        session.close()
        self._links.pop(session, None)
        self._resolvers.discard(bound)
        self.grants.forget(session)
        self.run(self.router.drop(session))
        if self.mesh is not None:
            self.mesh.announce()
        self.stats.sessions_dropped += 1
        if self.pool is not None:
            self.pool.session_closed(session.id, session)
        if self.state is not None and not self._closed.is_set():
            task = asyncio.ensure_future(_node_lifecycle.forget_holder(self, str(session.id)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        log.debug("session %s closed", session)

    def _agent_of(self, session_id: int) -> str | None:
        for bound in self._links.values():
            if bound.session.id == session_id:
                return bound.session.name
        return None

    def _pool_attached(self, session_id: int) -> bool:
        for bound in self._links.values():
            if bound.session.id == session_id:
                bound.session.shm = True
                return True
        return False

    # -- frames -------------------------------------------------------------------------

    def _frame(self, bound: _SessionLink, raw_header: bytes, payload: memoryview) -> None:
        session = bound.session
        session.last_seen = self.clock()
        session.frames_in += 1
        self.stats.frames_in += 1
        try:
            header = decode_header(raw_header)
        except FabricError as exc:
            self._reject(bound, exc, None)
            return
        self.kinds_in[header.kind] += 1
        try:
            if len(payload) > self.settings.max_payload:
                # Stream links refuse this before buffering; ZeroMQ hands it over whole.
                raise PayloadTooLarge(size=len(payload), limit=self.settings.max_payload)
            session.check(header.kind)
            kind = header.kind
            if kind is Kind.PUB:
                if header.subject.startswith(INBOX_PREFIX):
                    _node_admission.check_reply(self, session, header)
                elif self.auth is not None:
                    self.auth.check_publish(session.name, header.subject)
                if header.reply.startswith(INBOX_PREFIX):
                    _node_admission.check_reply_to(self, session, header.reply)
                monitoring = self.monitoring
                if monitoring is None or self.stats.messages_in & HOP_SAMPLE_MASK:
                    _node_publish.publish(self, bound, header, payload)
                else:
                    started = time.perf_counter()
                    _node_publish.publish(self, bound, header, payload)
                    monitoring.metrics.hop_sample(time.perf_counter() - started)
            elif kind is Kind.SUB:
                if header.subject.startswith(INBOX_PREFIX):
                    if not owns_inbox_pattern(session.inbox, header.subject):
                        raise NotAuthorized(
                            "an inbox can only be read by the agent it belongs to",
                            subject=header.subject,
                        )
                elif self.auth is not None:
                    self.auth.check_subscribe(session.name, header.subject, header.queue)
                self.run(
                    self.router.subscribe(
                        session, header.sid, header.subject, header.queue, session.labels,
                        self.clock(),
                    )
                )
                if self.mesh is not None:
                    self.mesh.announce()
            elif kind is Kind.UNSUB:
                self.run(self.router.unsubscribe(session, header.sid, self.clock()))
                if self.mesh is not None:
                    self.mesh.announce()
            elif kind is Kind.PING:
                self._send(bound, Header(Kind.PONG, msg_id=header.msg_id))
            elif kind is Kind.HELLO:
                _node_admission.hello(self, bound, header, payload)
            elif kind is Kind.CONTROL:
                self._control(bound, header, payload)
            # PONG and ERR from an agent need no answer; last_seen is already updated.
        except FabricError as exc:
            self._reject(bound, exc, header)

    def _reject(self, bound: _SessionLink, exc: FabricError, header: Header | None) -> None:
        """Answer a bad frame with ERR; the session and every other one carry on."""
        if isinstance(exc, RemoteProtocolError | InvalidSubject | PayloadTooLarge):
            self.stats.malformed += 1
        log.debug("rejecting frame from %s: %s", bound.session, exc)
        err = Header(
            Kind.ERR,
            subject=(header.subject if header else "") or "",
            reply=header.reply if header else "",
            msg_id=header.msg_id if header else 0,
            sid=header.sid if header else 0,
        )
        self._send(bound, err, msgpack.packb((exc.code, exc.message)))

    def publish_from_peer(self, origin: PeerOrigin, header: Header, payload: memoryview) -> None:
        """A message a peer forwarded: routed like an agent's, with ``origin`` as its sender
        (the mesh checked it is a plain forwarded PUB)."""
        _node_publish.publish(self, origin, header, payload)

    # -- carrying out what the router decided ---------------------------------------------

    def run(self, actions: Iterable[Action]) -> None:
        """Carry out the router's actions: STATUS to local requesters (answered here only),
        copies and counts to peers (through the mesh), held requests routed again."""
        for action in actions:
            if isinstance(action, Forward):
                mesh = self.mesh
                sent = mesh is not None and mesh.forward(
                    action.peer, encode_header(action.header), action.payload
                )
                if not sent:
                    self.run(self.router.copy_failed(action.peer, action.corr, self.clock()))
            elif isinstance(action, Answer):
                self._answer(action)
            elif isinstance(action, Count):
                if self.mesh is not None:
                    self.mesh.send_count(action.peer, action.corr, action.count, action.names)
            elif isinstance(action, Replay):
                bound = self._links.get(action.session)
                if bound is not None and bound.session.state is not SessionState.CLOSED:
                    _node_publish.publish(self, bound, action.header, action.payload, replay=True)
            elif isinstance(action, Behind):
                bound = self._links.get(action.session)
                if bound is not None:
                    # Responders exist, each too far behind to take it: say so, not "nobody".
                    self._reject(bound, _node_slow.all_behind(action.header.subject), action.header)
            elif isinstance(action, Invalidate):
                self._interest_changed()
        if self.router.timers_moved():
            self._arm()  # a tally opened or a request held: wake up at its deadline

    def _answer(self, answer: Answer) -> None:
        bound = self._links.get(answer.session)
        if bound is None:
            return  # the requester is gone: nobody to answer
        if answer.status is Status.NO_RESPONDERS:
            self.stats.no_responders += 1
        status = Header(
            Kind.STATUS,
            subject=answer.reply,
            msg_id=answer.msg_id,
            status=answer.status,
            seq=answer.count,
        )
        self._send(bound, status, encode_names(answer.names))

    def tick(self) -> None:
        """Let the router act on time: tallies past their deadline, held requests whose wait
        is over. Called by the node's timer once started; by hand on a manual clock."""
        self.run(self.router.tick(self.clock()))
        self._arm()

    def _arm(self) -> None:
        deadline = self.router.next_deadline()
        if deadline is None or self._loop is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self._loop.call_later(max(0.0, deadline - self.clock()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.tick()

    def _control(self, bound: _SessionLink, header: Header, payload: memoryview) -> None:
        """Control-plane calls: answered in fabric/_node_control.py (``$state.*`` through the
        state service)."""
        _node_control.dispatch(self, bound, header, payload)

    def _interest_changed(self) -> None:
        """Tell every agent that cached the directory to forget it."""
        if not self._resolvers:
            return
        invalidate = Header(Kind.CONTROL, subject=DIR_INVALIDATE.subject)
        for bound in list(self._resolvers):
            if bound.link.closed:
                self._resolvers.discard(bound)
            else:
                self._send(bound, invalidate)

    def _send(self, bound: _SessionLink, header: Header, payload: Buffer = b"") -> bool:
        """Send to one session; False when it is gone or too far behind (slow consumer)."""
        return self._send_encoded(bound, encode_header(header), payload)

    def _send_encoded(
        self, bound: _SessionLink, header: bytes, payload: Buffer = b"", sid: int = -1
    ) -> bool:
        link = bound.link
        if link.closed:
            return False
        if link.buffered() > link.limit:
            _node_slow.dropped_slow(self, bound, sid)
            return False
        if bound.session.lost:
            _node_slow.tell_lost(self, bound)  # before what follows the gap
        try:
            link.send(header, payload)
        except FabricError:
            return False
        bound.session.frames_out += 1
        self.stats.frames_out += 1
        return True

    # -- introspection ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A snapshot for ``fabric status`` and the control plane."""
        return node_status(self)
