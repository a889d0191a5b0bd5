"""The broker node: a thin asyncio driver around the interest table and agent sessions.

It listens on a Unix socket for agents on its host and, optionally, on a ZeroMQ ROUTER for
agents elsewhere. Every frame is decoded (header only), checked against the session's state,
and routed. Payload bytes pass through untouched. A frame that breaks the protocol is counted
and answered with ERR; only a stream that lost framing is closed, because nothing after it can
be trusted. Nothing an agent sends can stop the node serving the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import msgpack
from typing_extensions import Buffer

from . import _node_control
from ._remote_direct import GrantIssuer
from .auth import Authorizer
from .config import NodeSettings
from .errors import (
    FabricError,
    InvalidSubject,
    NotAuthorized,
    PayloadTooLarge,
    RemoteProtocolError,
    SlowConsumer,
)
from .mesh import Mesh, start_mesh
from .metrics import HOP_SAMPLE_MASK, Monitoring, start_monitoring, transport_of
from .private import (
    GRANT_GRACE_S,
    GRANT_TTL_S,
    SENDER_HEADER,
    ReplyGrants,
    encode_names,
    inbox_root,
    owns_inbox_pattern,
)
from .protocol import (
    DIR_INVALIDATE,
    MAX_HEADER_BYTES,
    Flags,
    Header,
    Kind,
    PendingBudget,
    Status,
    WelcomeKey,
    WelcomePath,
    decode_header,
    encode_header,
    encode_msg,
)
from .router import (
    Action,
    Answer,
    Behind,
    Count,
    Forward,
    Invalidate,
    Payload,
    PeerOrigin,
    Replay,
    Router,
    role_for,
)
from .routing import INBOX_PREFIX
from .session import Session, SessionState
from .shm import PoolService, SharedDelivery
from .socket_claim import SocketClaim, claim_socket
from .state import StateHandover, StateService, handover_for, make_state_backend
from .subjects import validate_subject
from .telemetry import NodeTracer
from .transports import Link, StreamLink, ZmqRouterListener

__all__ = ["Node", "NodeStats"]

log = logging.getLogger("fabric.node")

_MAX_CONTROL_BYTES = 1024 * 1024
#: Largest frame a connection may send before its HELLO is accepted (a HELLO is a few
#: hundred bytes): an unauthenticated peer can make the node hold almost nothing.
HANDSHAKE_MAX_PAYLOAD = 64 * 1024


@dataclass(slots=True)
class NodeStats:
    """Counters the node reports (``fabric status``, metrics)."""

    frames_in: int = 0
    frames_out: int = 0
    malformed: int = 0
    no_responders: int = 0
    dropped_slow: int = 0
    sessions_opened: int = 0
    sessions_dropped: int = 0
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    requests: int = 0
    timeouts: int = 0
    state_operations: int = 0
    state_errors: int = 0
    migrations: int = 0
    directory_lookups: int = 0
    #: Directory answers that reached responders on peers, and grants signed for them.
    remote_resolves: int = 0
    grants_issued: int = 0
    #: Publishes into an inbox by a session the request was never routed to (refused).
    forged_replies: int = 0
    #: ``dropped_slow`` by the transport of the agent that fell behind.
    dropped_slow_unix: int = 0
    dropped_slow_tcp: int = 0
    dropped_slow_webrtc: int = 0
    #: STATUS SLOW_CONSUMER notices sent (each tells one subscription how many it lost).
    slow_notices: int = 0


def _all_behind(subject: str) -> SlowConsumer:
    """The answer to a request whose every responder is over ``slow_consumer_bytes``."""
    return SlowConsumer(
        "every responder is too far behind to take it (their backlog is over "
        "slow_consumer_bytes); retry later or add responders",
        subject=subject,
    )


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
        """Start listening.

        Raises:
            SocketInUse: another live node serves on the Unix socket (fabric/socket_claim.py).
            ConnectionLost: when an endpoint cannot be bound (in use, no permission).
        """
        self._loop = asyncio.get_running_loop()
        if self.settings.auth_file is not None:
            self.auth = Authorizer.from_file(self.settings.auth_file)
        if self.settings.metrics or self.settings.metrics_otlp_endpoint:
            self.monitoring = await start_monitoring(self)  # first: a bad port binds nothing
        loop = asyncio.get_running_loop()
        path = self.settings.socket
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # One node per socket: refuse when a live node holds it (fabric/socket_claim.py).
        self._claim = claim_socket(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket from a node that died; binding would fail
        self._unix_server = await loop.create_unix_server(self._accept_stream, str(path))
        self._claim.bound()
        os.chmod(path, 0o600)
        if self.settings.listen:
            self._zmq = ZmqRouterListener(
                self.settings.listen,
                self._accept,
                max_message=self.settings.max_payload + MAX_HEADER_BYTES,
            )
        self._sweeper = loop.create_task(self._sweep())
        self.state = StateService(make_state_backend(self.settings))
        if self.settings.shm:
            self.handover = handover_for(self.state, self._agent_of, self.settings.pool.threshold)
            self.pool = PoolService(
                self.settings.pool,
                self.settings.name,
                self._pool_attached,
                blobs=self.state.blob_host(),
                handlers=self.handover.handlers() if self.handover is not None else None,
            )
            await self.pool.start(path.with_name(path.name + ".pool"))
        self.mesh = await start_mesh(self, self.settings)
        if self.mesh is not None:
            self.mesh.directory.answerer = lambda peer, subject, requester: (
                self.direct_grants.local_targets(self, peer, subject, requester)
            )

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def aclose(self) -> None:
        """Stop listening and drop every session."""
        self._closed.set()
        if self.monitoring is not None:
            await self.monitoring.aclose()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._unix_server is not None:
            self._unix_server.close()
        if self._zmq is not None:
            self._zmq.close()
        if self.mesh is not None:
            self.mesh.close()
        for bound in list(self._links.values()):
            bound.link.close()
        if self._claim is not None:
            self._claim.release()  # removes the socket file only if it is still ours
        for task in list(self._tasks):
            task.cancel()
        if self.state is not None:
            with contextlib.suppress(FabricError):
                await self.state.aclose()
        if self.pool is not None:
            await self.pool.aclose()
        self._closed.set()

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
            task = asyncio.ensure_future(self._forget_holder(str(session.id)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        log.debug("session %s closed", session)

    async def _sweep(self) -> None:
        """Drop sessions silent for three heartbeat intervals (agents ping while idle)."""
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            self.grants.sweep(now)
            deadline = now - 3 * interval
            for bound in list(self._links.values()):
                if bound.session.lost and not bound.link.closed:
                    self._tell_lost(bound)  # nothing else was sent to it since it drained
                if bound.session.last_seen < deadline:
                    log.info("session %s missed its heartbeats; dropping it", bound.session)
                    bound.link.close()
                    self._drop(bound)

    def _state_identity(self) -> str:
        """Which state store this node serves: agents moving between two nodes with the same
        identity find their state in place; otherwise they carry it over."""
        s = self.settings
        if s.state_backend == "redis":
            return f"redis:{s.state_url}#{s.state_namespace}"
        return f"embedded:{s.name}:{os.getpid()}"

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

    def _share(
        self,
        bound: _SessionLink,
        header: Header,
        payload: memoryview,
        targets: list[tuple[_SessionLink, int]],
    ) -> SharedDelivery:
        """Validate a shared-memory publish and give each local receiver its hold.

        Raises:
            BadDescriptor: the descriptor is not a slot this publisher allocated.
        """
        if self.pool is None:
            raise RemoteProtocolError("this node serves no shared-memory pool")
        receivers = [t.session for t, _ in targets]
        return self.pool.publish(bound.session, payload, receivers, self.settings.max_payload)

    async def _forget_holder(self, holder: str) -> None:
        assert self.state is not None
        try:
            await self.state.session_closed(holder)
        except FabricError as exc:
            log.warning("could not release state held by session %s: %s", holder, exc)

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
                    self._check_reply(session, header)
                elif self.auth is not None:
                    self.auth.check_publish(session.name, header.subject)
                if header.reply.startswith(INBOX_PREFIX):
                    self._check_reply_to(session, header.reply)
                monitoring = self.monitoring
                if monitoring is None or self.stats.messages_in & HOP_SAMPLE_MASK:
                    self._publish(bound, header, payload)
                else:
                    started = time.perf_counter()
                    self._publish(bound, header, payload)
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
                self._hello(bound, header, payload)
            elif kind is Kind.CONTROL:
                self._control(bound, header, payload)
            # PONG and ERR from an agent need no answer; last_seen is already updated.
        except FabricError as exc:
            self._reject(bound, exc, header)

    def _check_reply(self, session: Session, header: Header) -> None:
        """A publish into an inbox: the session's own, or one it was handed as a ``reply``.
        The responder's identity is stamped on it (``SENDER_HEADER``), replacing any claim.

        Raises:
            NotAuthorized: a forged reply (the request was never routed to this session).
        """
        self._check_inbox(
            session, header.subject, "only a responder the request was routed to may reply"
        )
        headers = dict(header.headers) if header.headers else {}
        headers[SENDER_HEADER] = f"{session.name}@{self.settings.name}"
        header.headers = headers

    def _check_reply_to(self, session: Session, reply: str) -> None:
        """A message may ask for replies only into the sender's own inbox (or one it may
        answer into): otherwise it could have a real responder answer someone else's pending
        request with content of its choosing (a reflected forgery).

        Raises:
            NotAuthorized: ``reply`` is another agent's inbox.
        """
        self._check_inbox(
            session, reply, "replies can only be asked for into the sender's own inbox"
        )

    def _check_inbox(self, session: Session, inbox: str, refusal: str) -> None:
        """``inbox`` is the session's own, or one it holds a live grant for; otherwise the
        attempt is counted (``forged_replies``) and refused.

        Raises:
            NotAuthorized: with ``refusal`` as the message.
        """
        if not owns_inbox_pattern(session.inbox, inbox) and not self.grants.allowed(
            session, inbox, self.clock()
        ):
            self.stats.forged_replies += 1
            raise NotAuthorized(refusal, subject=inbox)

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

    def _hello(self, bound: _SessionLink, header: Header, payload: memoryview) -> None:
        info = _decode_map(payload)
        name = info.get("name")
        labels = info.get("labels") or {}
        if type(name) is not str or not name or not isinstance(labels, dict):
            raise RemoteProtocolError("HELLO needs a name and a map of labels")
        labels = {str(k): str(v) for k, v in labels.items()}
        if self.auth is not None:
            self.auth.authenticate(name, info.get("credential"))
        bound.session.activate(name, labels, self.clock())
        bound.session.inbox = inbox_root(name)
        if isinstance(bound.link, StreamLink):
            bound.link.set_max_payload(self.settings.max_payload)
        direct = info.get("direct")
        if isinstance(direct, str) and isinstance(bound.link, StreamLink):
            bound.session.direct = direct
        direct_tcp = info.get("direct_tcp")
        if isinstance(direct_tcp, str) and direct_tcp.startswith("tcp://"):
            bound.session.direct_tcp = direct_tcp
        welcome = {
            WelcomeKey.NODE: self.settings.name,
            WelcomeKey.SITE: self.settings.site,
            WelcomeKey.SESSION: bound.session.id,
            WelcomeKey.MAX_PAYLOAD: self.settings.max_payload,
            WelcomeKey.HEARTBEAT: self.settings.heartbeat_interval,
            WelcomeKey.STATE: self._state_identity(),
            # Where this agent's inboxes must live (fabric/private.py); clients that do not
            # derive it themselves (the browser SDK) take it from here.
            WelcomeKey.INBOX: bound.session.inbox,
        }
        local = isinstance(bound.link, StreamLink)
        if self.pool is not None and local:
            # Only agents on this host (the Unix socket) can map the pool.
            welcome[WelcomeKey.POOL] = self.pool.welcome(bound.session.id)
        # What this session may use, so the SDK need not guess from its URL (older SDKs
        # ignore the field; docs/protocol.md).
        welcome[WelcomeKey.PATHS] = {
            WelcomePath.SHM: WelcomeKey.POOL in welcome,
            WelcomePath.DIRECT: bool(bound.session.direct),
        }
        grant_key = self.direct_grants.welcome_key(bound.session)
        if grant_key is not None:
            welcome[WelcomeKey.GRANT_KEY] = grant_key
        self._send(bound, Header(Kind.WELCOME, msg_id=header.msg_id), msgpack.packb(welcome))

    def publish_from_peer(self, origin: PeerOrigin, header: Header, payload: memoryview) -> None:
        """A message a peer forwarded: routed like an agent's, with ``origin`` as its sender
        (the mesh checked it is a plain forwarded PUB)."""
        self._publish(origin, header, payload)

    def _publish(
        self,
        bound: _SessionLink | PeerOrigin,
        header: Header,
        payload: Payload,
        replay: bool = False,
    ) -> None:
        subject = header.subject
        stats = self.stats
        stats.messages_in += 1
        stats.bytes_in += len(payload)
        if header.reply:
            stats.requests += 1
        if subject not in self._valid_subjects:
            validate_subject(subject)
            if len(self._valid_subjects) >= 4096:
                self._valid_subjects.clear()  # bounded; refilled by the hot subjects
            if not subject.startswith(INBOX_PREFIX):
                self._valid_subjects.add(subject)
        origin: Hashable = bound if isinstance(bound, PeerOrigin) else bound.session
        router = self.router
        routing = router.route(origin, header)
        links = self._links
        targets = [
            (target, sub.sid)
            for sub in routing.local
            if (target := links.get(sub.session)) is not None
        ]
        shared = None
        if header.flags & Flags.SHM:
            if isinstance(bound, PeerOrigin):
                raise RemoteProtocolError("a forwarded message carries no shared-memory slot")
            shared = self._share(bound, header, memoryview(payload), targets)
        reached = 0
        missed: list[_SessionLink] = []
        dropped_before = stats.dropped_slow
        reply = header.reply
        if reply and targets:
            # Each receiver may answer into ``reply`` until the deadline (fabric/private.py).
            expires = self.clock() + (
                header.timeout_ms / 1000 + GRANT_GRACE_S if header.timeout_ms else GRANT_TTL_S
            )
            grant = self.grants.grant
            for target, _ in targets:
                grant(target.session, reply, expires)
        out = b""
        out_sid = -1  # the sid ``out`` was encoded for: agents number alike, so a fan-out
        for target, sid in targets:  # to many agents mostly repeats one (encoded once)
            body: memoryview | bytes = payload
            flags = 0
            if shared is not None:
                body, flags = shared.body_for(target.session)
                out_sid = -1
            if sid != out_sid:
                out = encode_msg(
                    subject,
                    header.reply,
                    header.msg_id,
                    header.timeout_ms,
                    header.traceparent,
                    header.headers,
                    sid,
                    header.status,
                    header.seq,
                    flags,
                )
                if shared is None:
                    out_sid = sid
            if target.session.held is not None:
                if self._hold(target, out, body, sid):
                    reached += 1
                else:
                    missed.append(target)
            elif self._send_encoded(target, out, body, sid):
                reached += 1
            else:
                missed.append(target)
                if shared is not None:
                    shared.undeliverable(target.session)
        stats.messages_out += reached
        stats.bytes_out += reached * len(payload)
        if self._tracer is not None:
            self._tracer.hop(subject, header.traceparent, reached)
        names = None
        if header.flags & Flags.COUNT:
            # A gather learns who was reached, so it can name who did not answer.
            node = self.settings.name
            names = [f"{t.session.name}@{node}" for t, _ in targets if t not in missed]
        if not (header.flags or routing.peers):
            return  # a plain publish delivered here: the router has nothing left to decide
        actions = router.routed(
            origin,
            header,
            # Peers get bytes, never a slot of this host's pool (copied only if they get it).
            payload if shared is None or not routing.peers else shared.body_for(None)[0],
            routing,
            reached,
            self.clock(),
            names=names,
            all_behind=stats.dropped_slow > dropped_before,
            replay=replay,
        )
        if actions:
            self.run(actions)
        elif router.timers_moved():
            self._arm()  # a request held (``run`` arms otherwise)

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
                    self._publish(bound, action.header, action.payload, replay=True)
            elif isinstance(action, Behind):
                bound = self._links.get(action.session)
                if bound is not None:
                    # Responders exist, each too far behind to take it: say so, not "nobody".
                    self._reject(bound, _all_behind(action.header.subject), action.header)
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

    def _hold(
        self, bound: _SessionLink, header: bytes, payload: memoryview | bytes, sid: int
    ) -> bool:
        """Queue a delivery for a migrating agent; bounded like a slow consumer's buffer."""
        session = bound.session
        assert session.held is not None
        size = len(header) + len(payload)
        if session.held_bytes + size > self.settings.slow_consumer_bytes:
            self._dropped_slow(bound, sid)
            return False
        # Payload views over a receive buffer stay valid: the frame decoder never reuses one.
        session.held.append((header, payload))
        session.held_bytes += size
        return True

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
        if link.buffered() > self.settings.slow_consumer_bytes:
            self._dropped_slow(bound, sid)
            return False
        if bound.session.lost:
            self._tell_lost(bound)  # before what follows the gap
        try:
            link.send(header, payload)
        except FabricError:
            return False
        bound.session.frames_out += 1
        self.stats.frames_out += 1
        return True

    def _dropped_slow(self, bound: _SessionLink, sid: int) -> None:
        """A delivery for an agent that fell behind is dropped: counted here, by transport,
        and remembered so the agent is told (``_tell_lost``) once it has caught up."""
        session = bound.session
        session.dropped += 1
        lost = session.lost
        lost[sid] = lost.get(sid, 0) + 1
        stats = self.stats
        stats.dropped_slow += 1
        transport = bound.link.transport
        if transport == "unix":
            stats.dropped_slow_unix += 1
        elif transport == "tcp":
            stats.dropped_slow_tcp += 1
        elif transport == "webrtc":
            stats.dropped_slow_webrtc += 1

    def _tell_lost(self, bound: _SessionLink) -> None:
        """STATUS SLOW_CONSUMER per subscription that lost messages, once the agent's backlog
        is back under the limit (no silent drop: the agent raises ``SlowConsumer``)."""
        link = bound.link
        if link.buffered() > self.settings.slow_consumer_bytes:
            return
        lost, bound.session.lost = bound.session.lost, {}
        for sid, count in lost.items():
            notice = Header(Kind.STATUS, sid=max(sid, 0), status=Status.SLOW_CONSUMER, seq=count)
            try:
                link.send(encode_header(notice), b"")
            except FabricError:
                return
            self.stats.slow_notices += 1

    # -- introspection ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A snapshot for ``fabric status`` and the control plane."""
        return {
            "node": self.settings.name,
            "site": self.settings.site,
            "endpoints": self.endpoints,
            "stats": asdict(self.stats),
            "pool": self.pool.stats() if self.pool is not None else None,
            "handover": None if self.handover is None else asdict(self.handover.stats),
            "mesh": self.mesh.status() if self.mesh is not None else None,
            "latency": None if self.monitoring is None else self.monitoring.metrics.summary(),
            "sessions": [
                {
                    "id": b.session.id,
                    "name": b.session.name,
                    "labels": b.session.labels,
                    "state": b.session.state.value,
                    "peer": b.link.peer,
                    "subscriptions": [
                        {"sid": s.sid, "subject": s.pattern, "queue": s.queue}
                        for s in self.router.subscriptions(b.session)
                    ],
                    "dropped": b.session.dropped,
                    "transport": transport_of(b.link),
                    "buffered": b.link.buffered(),
                    "frames_in": b.session.frames_in,
                    "frames_out": b.session.frames_out,
                }
                for b in self._links.values()
            ],
        }


def _decode_map(payload: memoryview) -> dict[str, Any]:
    if len(payload) > _MAX_CONTROL_BYTES:
        raise RemoteProtocolError(f"control payload larger than {_MAX_CONTROL_BYTES} bytes")
    try:
        value = msgpack.unpackb(payload, raw=False)
    except Exception:
        raise RemoteProtocolError("control payload is not msgpack") from None
    if not isinstance(value, dict):
        raise RemoteProtocolError("control payload must be a map")
    return value

