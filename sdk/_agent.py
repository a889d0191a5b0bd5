"""``Agent``: what an agent process holds to talk to the fabric."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import os
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgpack

from fabric.errors import (
    Cancelled,
    ConnectionLost,
    FabricError,
    LocalProtocolError,
    NoResponders,
    NotAuthorized,
    PayloadTooLarge,
    RemoteError,
    Timeout,
    error_from_wire,
)
from fabric.paths import default_url
from fabric.private import SENDER_HEADER, control_subject, decode_names, inbox_root, parse_sender
from fabric.subjects import validate_pattern, validate_subject
from fabric.transports import Link, StreamLink
from fabric.wire import Flags, Header, Kind, Status, decode_header, encode_header

from ._chunks import BATCH_HEADER, DEFAULT_WINDOW, MAX_BATCH_BYTES, ChunkBatcher, Frame
from ._connection import Connection, parse_urls
from ._deadline import current_deadline, effective_deadline, timeout_ms
from ._direct import DirectPaths
from ._metrics import AgentMetrics
from ._migrate import MigrationReport, migrate
from ._msg import Msg, Sender
from ._payload import Payload, checked_reply, encode_payload
from ._replies import (
    CreditGate,
    GatherCollector,
    GatherResult,
    ReplyWaiter,
    RequestWaiter,
)
from ._state import StateClient
from ._stream import StreamReply
from ._subscription import DEFAULT_PENDING_LIMIT, Subscription
from ._tracing import AgentTracer

__all__ = ["Agent", "AgentStats", "connect"]

log = logging.getLogger("sdk.agent")

#: How long a publish waits for a lost link to come back before raising ConnectionLost.
RECONNECT_WAIT = 5.0
#: After a migration, how long the old node's link may stay open for replies in flight.
RETIRE_WAIT = 30.0
#: Refused subscriptions remembered for ``flush()`` to raise.
_MAX_REFUSALS = 64
#: Bytes queued on the link before ``publish`` waits for the kernel to take them.
_SEND_HIGH_WATER = 8 * 1024 * 1024

Handler = Callable[[Msg], Any]

#: Subscription id of the agent's own control subject (user subscriptions count from 1).
_CONTROL_SID = 1 << 31


@dataclass(slots=True)
class AgentStats:
    """What an agent counts."""

    published: int = 0
    received: int = 0
    #: Replies that arrived after their request, gather or stream had finished.
    late_replies: int = 0
    #: Messages dropped because a subscription's reader fell behind.
    dropped: int = 0
    handler_errors: int = 0
    #: Replies (or "no responders") that came on our direct socket from an agent the
    #: request was not sent to: dropped.
    forged_replies: int = 0


class Agent:
    """A named participant in the fabric. Create it with ``connect()``."""

    def __init__(
        self,
        name: str,
        url: str | None = None,
        *,
        labels: dict[str, str] | None = None,
        credential: str | None = None,
        default_timeout: float = 5.0,
        reconnect: bool = True,
        direct: bool = True,
        latency_mode: bool | None = None,
    ) -> None:
        validate_subject(name)  # names appear in subjects; same rules
        self.name = name
        self.labels = dict(labels or {})
        self.default_timeout = default_timeout
        self.stats = AgentStats()
        self._urls = parse_urls(url or default_url())
        hello: dict[str, Any] = {"name": name, "labels": self.labels}
        if credential is not None:
            hello["credential"] = credential
        self._hello = hello
        if latency_mode is None:
            latency_mode = os.environ.get("FABRIC_LATENCY_MODE", "") not in ("", "0", "false")
        #: Direct requests to agents on this host (only when our node is on this host too).
        self._direct: DirectPaths | None = None
        if direct and all(u.startswith("unix://") for u in self._urls):
            spin = float(os.environ.get("FABRIC_SPIN_US", "200")) / 1e6 if latency_mode else 0.0
            self._direct = DirectPaths(self._on_direct_frame, self._direct_lost, spin=spin)
        self._conn = Connection(
            self._urls,
            hello,
            self._on_frame,
            self._on_lost,
            self._on_restored,
            reconnect=reconnect,
        )
        # Under the name's inbox root: the node lets only this name read it (fabric/private.py).
        self._inbox = f"{inbox_root(name)}.{os.urandom(9).hex()}"
        self._inbox_len = len(self._inbox) + 1
        self._next_reply = 0
        self._waiters: dict[int, ReplyWaiter] = {}
        self._subs: dict[int, Subscription] = {}
        self._next_sid = 0
        self._handler_tasks: set[asyncio.Task[None]] = set()
        #: Subscriptions the node refused, not yet reported by ``flush()``.
        self._refusals: list[FabricError] = []
        #: Handler registrations (``@handler``) still on their way to the node.
        self._registering: set[asyncio.Task[None]] = set()
        #: Links to nodes this agent migrated away from, open until their replies are out.
        self._retiring: set[Connection] = set()
        self._tracer = AgentTracer.from_env(name)
        metrics = AgentMetrics.from_env()  # FABRIC_AGENT_METRICS; None (no cost) when off
        if metrics is not None:
            metrics.instrument(self)
        #: Private state under leases, and shared blobs (see ``StateClient``).
        self.state = StateClient(self._conn, default_timeout)
        self._closed = False

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} node={self._conn.node!r}>"

    # -- lifecycle ----------------------------------------------------------------------

    async def _open(self) -> None:
        if self._direct is not None:
            self._hello["direct"] = await self._direct.listen()
        await self._conn.open()
        self._conn.send(Header(Kind.SUB, subject=f"{self._inbox}.>", sid=0))
        # Lets an operator move this agent (`fabric agent migrate NAME --to URL`).
        control = Subscription(
            self,
            _CONTROL_SID,
            control_subject(self.name),
            "",
            callback=lambda m: self._dispatch(self._migrate_on_request, m),
        )
        self._subs[_CONTROL_SID] = control
        self._conn.send(Header(Kind.SUB, subject=control.subject, sid=_CONTROL_SID))

    async def _migrate_on_request(self, msg: Msg) -> str:
        report = await self.migrate(msg.text(), timeout=msg.time_left() or 30.0)
        return json.dumps(dataclasses.asdict(report))

    async def aclose(self) -> None:
        """Stop handlers, drop subscriptions, close the link. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._handler_tasks):
            task.cancel()
        for task in list(self._handler_tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for sub in list(self._subs.values()):
            sub._close_local()
        self._fail_waiters(ConnectionLost("agent closed"))
        for old in list(self._retiring):
            await old.aclose()
        await self._conn.aclose()
        if self._direct is not None:
            await self._direct.aclose()

    @property
    def node(self) -> str:
        """Name of the node this agent is connected to."""
        return self._conn.node

    @property
    def connected(self) -> bool:
        return self._conn.connected

    @property
    def reconnects(self) -> int:
        """How many times the link was lost and restored."""
        return self._conn.reconnects

    # -- publish / subscribe ------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        data: Payload = b"",
        *,
        headers: dict[str, str] | None = None,
        reply: str = "",
    ) -> None:
        """Send a message to every subscriber of ``subject`` (one per queue group).

        Raises:
            InvalidSubject: ``subject`` is not a literal dotted subject.
            PayloadTooLarge: larger than the node's limit.
            ConnectionLost: the node is unreachable for longer than the reconnect wait.
        """
        validate_subject(subject)
        payload = encode_payload(data)
        if not self._conn.connected:
            await self._ensure_connected()
        flags = 0
        if len(payload) >= self._conn.shared.threshold:
            payload, flags = await self._conn.shared.put(payload, None, subject)
        if self._tracer is None:
            self._send_pub(subject, payload, headers=headers, reply=reply, flags=flags)
        else:
            span = self._tracer.start("publish", subject)
            try:
                self._send_pub(subject, payload, headers=headers, reply=reply, flags=flags)
            finally:
                span.end()
        await self._backpressure()

    def _send_pub(
        self,
        subject: str,
        payload: bytes | memoryview,
        *,
        headers: dict[str, str] | None = None,
        reply: str = "",
        deadline: float | None = None,
        status: int = 0,
        seq: int = 0,
        flags: int = 0,
        conn: Connection | None = None,
    ) -> int:
        conn = conn or self._conn
        if len(payload) > conn.max_payload:
            raise PayloadTooLarge(subject=subject, size=len(payload), limit=conn.max_payload)
        msg_id = conn.next_id()
        traceparent = self._tracer.current_traceparent() if self._tracer else ""
        conn.send(
            Header(
                Kind.PUB,
                subject=subject,
                reply=reply,
                msg_id=msg_id,
                timeout_ms=timeout_ms(deadline),
                traceparent=traceparent,
                headers=headers,
                status=status,
                seq=seq,
                flags=flags,
            ),
            payload,
        )
        self.stats.published += 1
        return msg_id

    async def _backpressure(self) -> None:
        link = self._conn.link
        if link is not None and link.buffered() > _SEND_HIGH_WATER:
            await link.drain()

    async def _ensure_connected(self, deadline: float | None = None) -> None:
        if not self._conn.connected:
            await self._conn.ready(deadline or time.monotonic() + RECONNECT_WAIT)

    async def subscribe(
        self,
        subject: str,
        queue: str | None = None,
        *,
        callback: Callable[[Msg], Awaitable[None] | None] | None = None,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
    ) -> Subscription:
        """Receive messages matching ``subject`` (``*`` and ``>`` wildcards allowed).

        With ``queue``, each message goes to one member of the group. Iterate the returned
        subscription, or pass ``callback`` to have it called for each message.

        Returns once the node has taken the subscription (one round trip), so a message
        published after it returns is delivered; if the node does not answer in time (or the
        link drops meanwhile) it returns anyway and the subscription is restored on reconnect.

        Raises:
            NotAuthorized: the node refused the subscription (permissions, or another
                agent's inbox). InvalidSubject: malformed pattern. ConnectionLost: node
                unreachable.
        """
        validate_pattern(subject)
        await self._ensure_connected()
        self._next_sid += 1
        sub = Subscription(
            self,
            self._next_sid,
            subject,
            queue or "",
            callback=callback,
            pending_limit=pending_limit,
        )
        self._subs[sub.sid] = sub
        self._conn.send(Header(Kind.SUB, subject=subject, queue=sub.queue, sid=sub.sid))
        try:
            # A refusal is answered (ERR) before the PONG: by now we know the verdict.
            await self._conn.flush(self.default_timeout)
        except (ConnectionLost, Timeout):
            return sub
        if sub.refusal is not None:
            self._refusals = [r for r in self._refusals if r is not sub.refusal]
            raise sub.refusal
        return sub

    def _refused(self, sub: Subscription, error: FabricError) -> None:
        """The node refused a subscription: it ends, and says why when read (and at the
        next ``flush()`` for handlers, whose registration returned long ago)."""
        self._subs.pop(sub.sid, None)
        sub._refuse(error)
        self._remember_refusal(error)
        if sub.callback is not None:
            log.error("subscription to %s refused by the node: %s", sub.subject, error)

    def _remember_refusal(self, error: FabricError) -> None:
        """Kept for the next ``flush()`` to raise (bounded: the first ones say enough)."""
        if len(self._refusals) < _MAX_REFUSALS:
            self._refusals.append(error)

    def _direct_name(self, link: Link) -> str:
        direct = self._direct
        return direct.name_of(link) if direct is not None and isinstance(link, StreamLink) else ""

    async def _unsubscribe(self, sub: Subscription) -> None:
        self._subs.pop(sub.sid, None)
        if self._conn.connected:
            self._conn.send(Header(Kind.UNSUB, subject=sub.subject, sid=sub.sid))

    def handler(self, subject: str, queue: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: serve requests on ``subject``.

        The function's return value (bytes, str, model) is the reply; an async generator
        streams its items. An exception becomes a typed error at the requester. The
        subscription is made when the agent next yields to the loop; ``await agent.flush()``
        makes sure it reached the node, and raises ``NotAuthorized`` if the node refused it.
        """
        validate_pattern(subject)

        def register(fn: Handler) -> Handler:
            async def subscribe() -> None:
                try:
                    await self.subscribe(
                        subject, queue, callback=lambda m: self._dispatch(fn, m)
                    )
                except FabricError as exc:
                    log.error("handler for %s not registered: %s", subject, exc)
                    if isinstance(exc, NotAuthorized):
                        self._remember_refusal(exc)

            task = asyncio.ensure_future(subscribe())
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)
            # flush() waits for these: its promise covers handlers registered before it.
            self._registering.add(task)
            task.add_done_callback(self._registering.discard)
            return fn

        return register

    async def serve(self, subject: str, fn: Handler, *, queue: str | None = None) -> Subscription:
        """``handler`` as a call: subscribe ``fn`` now and return the subscription."""
        return await self.subscribe(subject, queue, callback=lambda m: self._dispatch(fn, m))

    # -- request / reply ----------------------------------------------------------------

    def _new_reply(self, waiter: ReplyWaiter) -> tuple[int, str]:
        self._next_reply += 1
        n = self._next_reply
        self._waiters[n] = waiter
        return n, f"{self._inbox}.{n}"

    async def request(
        self,
        subject: str,
        data: Payload = b"",
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
        prefer: dict[str, str] | None = None,
    ) -> Msg:
        """Send and wait for the first reply.

        The deadline (``timeout``, or what is left of the one inherited from the message
        being handled) travels with the message. ``prefer`` asks for queue members whose
        labels match (``{"site": "edge-paris"}``, ``{"gpu": "1"}``) before nearer ones.

        Raises:
            NoResponders: nobody listens on ``subject`` (at once, not after the timeout).
            Timeout: no reply before the deadline.
            RemoteError (or the responder's typed error): the handler raised.
            ConnectionLost: the link dropped while waiting.
            InvalidSubject, PayloadTooLarge: before anything is sent.
        """
        validate_subject(subject)
        headers = with_prefer(headers, prefer)
        deadline = effective_deadline(timeout, self.default_timeout)
        payload = encode_payload(data)
        if not self._conn.connected:
            await self._ensure_connected(deadline)
        shm = 0
        if len(payload) >= self._conn.shared.threshold:
            payload, shm = await self._conn.shared.put(payload, deadline, subject)
        span = self._tracer.start("request", subject) if self._tracer else None
        try:
            if self._direct is not None and not shm and prefer is None:
                direct_reply = await self._request_direct(subject, payload, headers, deadline)
                if direct_reply is not None:
                    return direct_reply
            return await self._request_via_node(subject, payload, headers, deadline, shm)
        finally:
            if span is not None:
                span.end()

    def _arm(self, waiter: RequestWaiter, deadline: float) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_at(
            _loop_time(deadline),
            waiter.fail,
            Timeout("no reply before the deadline", subject=waiter.subject),
        )

    async def _request_via_node(
        self,
        subject: str,
        payload: bytes | memoryview,
        headers: dict[str, str] | None,
        deadline: float,
        shm: int,
    ) -> Msg:
        waiter = RequestWaiter(subject)
        n, reply = self._new_reply(waiter)
        timer = self._arm(waiter, deadline)
        try:
            self._send_pub(
                subject,
                payload,
                headers=headers,
                reply=reply,
                deadline=deadline,
                flags=Flags.NO_RESPONDERS | shm,
            )
            return await waiter.future
        finally:
            timer.cancel()
            self._waiters.pop(n, None)

    async def _request_direct(
        self,
        subject: str,
        payload: bytes | memoryview,
        headers: dict[str, str] | None,
        deadline: float,
    ) -> Msg | None:
        """Straight to a local responder; None when the node must carry this request."""
        direct = self._direct
        assert direct is not None
        found = await self._direct_targets(subject, deadline)
        if found is None:
            return None
        links, sids = found
        waiter = RequestWaiter(subject, via=links)
        n, reply = self._new_reply(waiter)
        timer = self._arm(waiter, deadline)
        try:
            self._send_direct(links, sids, subject, payload, reply, deadline, headers=headers)
            if direct.spin:
                direct.spin_until(links[0], waiter.future.done)
            try:
                return await waiter.future
            except NoResponders:
                direct.invalidate(subject)  # the directory was stale; ask through the node
                return None
        finally:
            timer.cancel()
            self._waiters.pop(n, None)

    async def _direct_targets(
        self, subject: str, deadline: float
    ) -> tuple[list[StreamLink], list[int]] | None:
        """Links to (and subscription ids of) the local agents a request for ``subject``
        goes to, or None when the node must carry it.

        Raises:
            NoResponders: the directory says nobody listens.
        """
        direct = self._direct
        assert direct is not None
        route = direct.cached(subject)
        if route is False:
            route = await direct.resolve(
                self._conn,
                subject,
                max(0.001, deadline - time.monotonic()),
                self._tracer.current_traceparent() if self._tracer else "",
            )
        if route is None or route is True or route.empty:
            return None
        if self._tracer is not None:
            self._tracer.link_current(direct.span_of(subject))
        targets = route.pick()
        try:
            links = [direct.link_now(path) or await direct.link(path) for path, _ in targets]
        except ConnectionLost:
            direct.invalidate(subject)  # a responder went away: the node knows who is left
            return None
        return links, [sid for _, sid in targets]

    def _send_direct(
        self,
        links: list[StreamLink],
        sids: list[int],
        subject: str,
        payload: bytes | memoryview,
        reply: str,
        deadline: float,
        *,
        headers: dict[str, str] | None = None,
        status: int = 0,
        seq: int = 0,
    ) -> None:
        header = Header(
            Kind.MSG,
            subject=subject,
            reply=reply,
            msg_id=self._conn.next_id(),
            timeout_ms=timeout_ms(deadline),
            traceparent=self._tracer.current_traceparent() if self._tracer else "",
            headers=headers,
            status=status,
            seq=seq,
        )
        for link, sid in zip(links, sids, strict=True):
            header.sid = sid
            link.send(encode_header(header), payload)
        self.stats.published += 1

    async def gather(
        self,
        subject: str,
        data: Payload = b"",
        *,
        quorum: int | None = None,
        deadline: float = 1.5,
        headers: dict[str, str] | None = None,
        prefer: dict[str, str] | None = None,
    ) -> GatherResult:
        """Fan a request out to every subscriber (one per queue group) and fan replies in.

        Returns as soon as every responder the message reached has answered, or after
        ``quorum`` replies, or at ``deadline`` seconds with what arrived (``.missing`` says
        how many did not). Replies after that are dropped and counted in
        ``stats.late_replies``.

        Raises:
            NoResponders: nobody listens. ConnectionLost: the link dropped meanwhile.
        """
        validate_subject(subject)
        if quorum is not None and quorum < 1:
            raise ValueError("quorum must be at least 1")
        headers = with_prefer(headers, prefer)
        until = effective_deadline(deadline, deadline)
        payload = encode_payload(data)
        if not self._conn.connected:
            await self._ensure_connected(until)
        shm = 0
        if len(payload) >= self._conn.shared.threshold:
            payload, shm = await self._conn.shared.put(payload, until, subject)
        direct = None
        if self._direct is not None and not shm and prefer is None:
            direct = await self._direct_targets(subject, until)
        collector = GatherCollector(
            subject, quorum, direct=direct is not None, links=direct[0] if direct else ()
        )
        n, reply = self._new_reply(collector)
        span = self._tracer.start("gather", subject) if self._tracer else None
        try:
            if direct is not None:
                # The directory already says who is reached: no count from the node needed.
                links, sids = direct
                node = self._conn.node
                names = [Sender(self._direct_name(link), node) for link in links]
                collector.routed(len(links), names)
                self._send_direct(links, sids, subject, payload, reply, until, headers=headers)
            else:
                self._send_pub(
                    subject,
                    payload,
                    headers=headers,
                    reply=reply,
                    deadline=until,
                    flags=Flags.COUNT | Flags.NO_RESPONDERS | shm,
                )
            try:
                await asyncio.wait_for(
                    asyncio.shield(collector.done), max(0.0, until - time.monotonic())
                )
            except TimeoutError:
                pass  # partial result: what arrived by the deadline
            return collector.result
        finally:
            self._waiters.pop(n, None)
            if span is not None:
                span.end()

    async def map(
        self,
        subject: str,
        items: Iterable[Payload],
        *,
        timeout: float | None = None,
        concurrency: int = 16,
        headers: dict[str, str] | None = None,
        prefer: dict[str, str] | None = None,
    ) -> list[Msg | FabricError]:
        """One request per item over ``subject`` (usually a queue group), at most
        ``concurrency`` in flight. Results are in input order; an item that failed holds
        its typed error instead of a reply.

        Raises:
            InvalidSubject: before anything is sent.
        """
        validate_subject(subject)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        work = list(items)
        results: list[Msg | FabricError] = [Timeout("not started", subject=subject) for _ in work]
        cursor = iter(range(len(work)))

        async def worker() -> None:
            for i in cursor:
                try:
                    results[i] = await self.request(
                        subject, work[i], timeout=timeout, headers=headers, prefer=prefer
                    )
                except FabricError as exc:
                    results[i] = exc

        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(work)))))
        return results

    def stream(
        self,
        subject: str,
        data: Payload = b"",
        *,
        timeout: float | None = None,
        window: int = DEFAULT_WINDOW,
        headers: dict[str, str] | None = None,
        prefer: dict[str, str] | None = None,
    ) -> StreamReply:
        """Stream a reply: ``async for chunk in agent.stream(...)``.

        The responder sends at most ``window`` chunks ahead of the reader (credit-based
        backpressure); leaving the loop early cancels the responder's generator. The reader
        may buffer a whole window: for large chunks (hundreds of KiB), pass a smaller one.

        Raises (while iterating):
            NoResponders, Timeout, ConnectionLost, or the responder's typed error.
        """
        validate_subject(subject)
        if window < 2:
            raise ValueError("window must be at least 2")
        return StreamReply(
            self, subject, encode_payload(data), timeout, window, with_prefer(headers, prefer)
        )

    async def migrate(self, to: str, *, timeout: float = 30.0) -> MigrationReport:
        """Move this agent to the node at ``to`` (a URL or failover list) without losing a
        message: deliveries are held at both nodes while interest moves, then drained in
        order with duplicates dropped; leases are taken over (the old tokens are fenced) and
        leased state is carried over when the new node serves a different store.

        Raises:
            MigrationFailed: the agent stays where it was (or, if the old node was already
                left, keeps what it has on the new one).
        """
        return await migrate(self, to, timeout=timeout)

    def _subscription_frames(self) -> list[Header]:
        """SUB frames that recreate this agent's interest (its inbox first)."""
        frames = [Header(Kind.SUB, subject=f"{self._inbox}.>", sid=0)]
        frames += [
            Header(Kind.SUB, subject=s.subject, queue=s.queue, sid=s.sid)
            for s in self._subs.values()
        ]
        return frames

    def _retire(self, conn: Connection) -> None:
        """After a migration: keep the old node's link (its interest already gone) until the
        handlers running now have answered through it, at most ``RETIRE_WAIT`` seconds."""
        running = set(self._handler_tasks)
        self._retiring.add(conn)

        async def close_when_answered() -> None:
            try:
                if running:
                    await asyncio.wait(running, timeout=RETIRE_WAIT)
            finally:
                self._retiring.discard(conn)
                await conn.aclose()

        self._spawn(close_when_answered())

    def _switch_connection(self, conn: Connection) -> None:
        """From now on this agent talks through ``conn`` (after a migration)."""
        self._conn = conn
        self.state._conn = conn
        if self._direct is not None:
            self._direct.invalidate()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything sent so far has been processed by the node and the
        subscriptions and handlers registered so far are known to every node of the mesh
        this node reaches (its barrier; docs/mesh.md, "When a handler is visible").

        Raises:
            NotAuthorized: the node refused a subscription made since the last flush (a
                handler's, typically). Timeout: the node or a live peer node did not answer in
                time. ConnectionLost.
        """
        await self._ensure_connected()
        if self._registering:
            # Each registration ends with its own round trip (and learns of a refusal).
            await asyncio.wait(set(self._registering), timeout=timeout)
        await self._conn.call("$node.barrier", timeout=timeout)
        if self._refusals:
            first, self._refusals = self._refusals[0], []
            raise first

    async def node_status(self) -> dict[str, Any]:
        """The node's status snapshot (sessions, subscriptions, counters).

        Raises:
            Timeout, ConnectionLost.
        """
        await self._ensure_connected()
        _, payload = await self._conn.call("$node.stats")
        return dict(msgpack.unpackb(payload, raw=False))

    def _to_control(self, control: str, status: int, seq: int, via: Link | None) -> None:
        """Stream control (credit, cancel) to a responder: on the direct link the stream
        came on, else through the node."""
        try:
            if via is not None and not via.closed:
                via.send(encode_header(Header(Kind.MSG, subject=control, status=status, seq=seq)))
            else:
                self._send_pub(control, b"", status=status, seq=seq)
        except ConnectionLost:
            pass  # the stream fails on its own when the link is gone

    def _grant_credit(self, control: str, credit: int, via: Link | None = None) -> None:
        self._to_control(control, Status.STREAM_CREDIT, credit, via)

    def _cancel_stream(self, control: str, via: Link | None = None) -> None:
        self._to_control(control, Status.CANCELLED, 0, via)

    # -- handlers -----------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    def _dispatch(self, fn: Handler, msg: Msg) -> None:
        self._spawn(self._run_handler(fn, msg))

    async def _run_handler(self, fn: Handler, msg: Msg) -> None:
        current_deadline.set(msg.deadline)
        span = self._tracer.start_handle(msg) if self._tracer else None
        try:
            batches = msg.status == Status.STREAM_OPEN and msg.headers.pop(BATCH_HEADER, "") != ""
            result = fn(msg)
            if inspect.isasyncgen(result):
                await self._serve_stream(msg, result, batches)
                return
            if inspect.isawaitable(result):
                result = await result
            result = checked_reply(result, fn, msg.subject)
            if msg.reply:
                if msg.status == Status.STREAM_OPEN:
                    # A plain handler asked for a stream: one chunk, then the end.
                    await self._send_reply(msg, result, Status.STREAM_CHUNK)
                    await self._send_reply(msg, b"", Status.STREAM_END)
                else:
                    await self._send_reply(msg, result, Status.OK)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.handler_errors += 1
            # Logged here, on the responder's side, where the fix is; the requester gets
            # the typed error (RemoteError for anything not from fabric.errors).
            _log_handler_error(fn, msg, exc)
            if msg.reply:
                await self._send_error(msg, exc)
        finally:
            if span is not None:
                span.end()

    async def _send_reply(
        self, msg: Msg, data: Any, status: int, *, seq: int = 0, reply: str = ""
    ) -> None:
        payload = encode_payload(data)
        via = msg._via
        if via is None or via.closed:
            came = msg._conn
            conn = came if came is not None and came.connected else self._conn
            if len(payload) >= conn.shared.threshold:
                try:
                    payload, flags = await conn.shared.put(payload, msg.deadline, msg.subject)
                    self._send_pub(
                        msg.reply, payload, status=status, seq=seq, reply=reply,
                        deadline=msg.deadline, flags=flags, conn=conn,
                    )
                except ConnectionLost:
                    log.debug("reply to %s lost: link down", msg.subject)
                return
        self._send_reply_inline(msg, payload, status, seq=seq, reply=reply)

    def _send_reply_inline(
        self, msg: Msg, payload: bytes | memoryview, status: int, *, seq: int = 0, reply: str = ""
    ) -> None:
        """A reply whose payload goes in the frame (never through shared memory)."""
        via = msg._via
        if via is not None and not via.closed:
            # Answer on the link the request came from: the requester is waiting right there,
            # and the node would refuse a reply it did not route the request for (inline even
            # when large: a shared-memory slot is the node's to lease, not ours).
            reply_header = Header(
                Kind.MSG, subject=msg.reply, msg_id=self._conn.next_id(), status=status,
                seq=seq, reply=reply,
            )
            try:
                via.send(encode_header(reply_header), payload)
            except ConnectionLost:
                return  # the requester is gone; nothing will read the reply
            if self._direct is not None and self._direct.spin and isinstance(via, StreamLink):
                self._direct.spin_for_next(via)
            return
        try:
            came = msg._conn
            conn = came if came is not None and came.connected else self._conn
            self._send_pub(
                msg.reply, payload, status=status, seq=seq, reply=reply,
                deadline=msg.deadline, conn=conn,
            )
        except ConnectionLost:
            log.debug("reply to %s lost: link down", msg.subject)

    async def _send_error(self, msg: Msg, exc: BaseException) -> None:
        code = exc.code if isinstance(exc, FabricError) else RemoteError.code
        text = (
            exc.message
            if isinstance(exc, FabricError)
            else f"{type(exc).__name__}: {exc} (in agent {self.name}; its log has the traceback)"
        )
        await self._send_reply(msg, msgpack.packb((code, text)), Status.ERROR)

    async def _serve_stream(self, msg: Msg, chunks: Any, batches: bool = False) -> None:
        if msg.status != Status.STREAM_OPEN or not msg.reply:
            await chunks.aclose()
            raise LocalProtocolError(
                "this handler streams: call it with agent.stream()", subject=msg.subject
            )
        gate = CreditGate(msg.subject, credit=msg.seq)
        if msg._via is not None:
            gate.links = (msg._via,)
        task = asyncio.current_task()
        gate.on_cancel = task.cancel if task is not None else None
        n, control = self._new_reply(gate)
        batcher = ChunkBatcher(min(MAX_BATCH_BYTES, self._conn.max_payload)) if batches else None
        flush = _ChunkFlush(self, msg, control, batcher) if batcher is not None else None
        seq = 0
        try:
            async for item in chunks:
                if gate.credit > 0 and not gate.cancelled:
                    gate.credit -= 1  # gate.take's fast path, without a coroutine per chunk
                else:
                    if flush is not None:
                        flush()  # what we hold must reach the reader before it grants more
                    await gate.take(msg.deadline)
                item = checked_reply(item, chunks, msg.subject)
                if flush is not None and batcher is not None:
                    payload = encode_payload(item)
                    if batcher.fits(payload):
                        if type(payload) is not bytes:
                            payload = bytes(payload)  # the generator may reuse its buffer
                        for frame in batcher.offer(payload, seq):
                            flush.send(frame)
                        flush.at_next_tick()
                        seq += 1
                        continue
                    flush()
                await self._send_reply(msg, item, Status.STREAM_CHUNK, seq=seq, reply=control)
                seq += 1
            if flush is not None:
                flush()
            await self._send_reply(msg, b"", Status.STREAM_END, reply=control)
        except asyncio.CancelledError:
            if not gate.cancelled:
                raise
        except Cancelled:
            pass  # the requester left; the generator is closed below
        finally:
            if flush is not None and gate.cancelled:
                flush.drop()
            elif flush is not None:
                flush()  # chunks yielded before an error reach the reader ahead of it
            self._waiters.pop(n, None)
            await chunks.aclose()

    # -- frames from the node -----------------------------------------------------------

    def _waiter_for(self, subject: str) -> ReplyWaiter | None:
        if not subject.startswith(self._inbox):
            return None
        try:
            return self._waiters.get(int(subject[self._inbox_len :]))
        except ValueError:
            return None

    def _on_frame(
        self,
        header: Header,
        payload: memoryview,
        via: StreamLink | None = None,
        conn: Connection | None = None,
    ) -> None:
        kind = header.kind
        if kind is Kind.MSG:
            self.stats.received += 1
            deadline = time.monotonic() + header.timeout_ms / 1000 if header.timeout_ms else None
            data: memoryview = payload
            lease = None
            if header.flags & Flags.SHM:
                shared = self._conn.shared
                found = shared.view(payload)
                if found is None:
                    return  # a descriptor we cannot trust is never read
                data, desc = found
                lease = (shared, desc, shared.region)
            msg = Msg(
                header.subject,
                data,
                headers=header.headers,
                reply=header.reply,
                deadline=deadline,
                status=header.status,
                seq=header.seq,
                msg_id=header.msg_id,
                traceparent=header.traceparent,
                agent=self,
                via=via,
            )
            if header.reply:
                msg._conn = conn or self._conn
            if lease is not None:
                # Released explicitly, or when the message is garbage-collected at the latest.
                msg._release = weakref.finalize(msg, lease[0].release, lease[1], lease[2])
            if header.sid == 0:
                waiter = self._waiter_for(header.subject)
                if waiter is None:
                    self.stats.late_replies += 1
                    return
                if via is None:
                    # Through the node: it checked the responder and stamped who it is.
                    stamp = msg.headers.pop(SENDER_HEADER, None)
                    if stamp is not None:
                        msg.sender = Sender(*parse_sender(stamp))
                elif via in waiter.sent_on():
                    msg.headers.pop(SENDER_HEADER, None)  # a claim; the directory knows better
                    msg.sender = Sender(self._direct_name(via), self._conn.node)
                else:
                    # On our direct socket, but not on a link this exchange went out on.
                    self.stats.forged_replies += 1
                    return
                waiter.deliver(msg)
                return
            sub = self._subs.get(header.sid)
            if sub is None:
                return  # unsubscribed while the message was in flight
            if sub.callback is not None:
                sub.delivered += 1
                result = sub.callback(msg)
                if inspect.isawaitable(result):
                    self._spawn(_await(result))
            else:
                sub._deliver(msg)
        elif kind is Kind.STATUS and header.status == Status.SLOW_CONSUMER:
            self._lost_at_node(header.sid, header.seq)
        elif kind is Kind.STATUS:
            waiter = self._waiter_for(header.subject)
            if waiter is None:
                return
            if header.status == Status.NO_RESPONDERS:
                waiter.no_responders()
            elif header.status == Status.ROUTED:
                try:
                    named = [Sender(*parse_sender(n)) for n in decode_names(payload)]
                except FabricError:
                    named = []
                waiter.routed(header.seq, named or None)
        elif kind is Kind.ERR:
            try:
                code, message = msgpack.unpackb(payload, raw=False)
                error = error_from_wire(str(code), str(message), subject=header.subject)
            except Exception:
                error = RemoteError("node sent an undecodable error")
            waiter = self._waiter_for(header.reply) if header.reply else None
            refused = self._subs.get(header.sid) if header.sid else None
            if waiter is not None:
                waiter.fail(error)
            elif refused is not None and refused.subject == header.subject:
                self._refused(refused, error)
            else:
                log.warning("node reported: %s", error)
        elif (
            kind is Kind.CONTROL
            and header.subject == "$dir.invalidate"
            and self._direct is not None
        ):
            self._direct.invalidate()

    def _lost_at_node(self, sid: int, count: int) -> None:
        """The node dropped ``count`` deliveries for subscription ``sid`` while we were
        behind: the subscription raises ``SlowConsumer`` with the count at its next read."""
        self.stats.dropped += count
        sub = self._subs.get(sid) if sid else None
        if sub is not None and sub.callback is None:
            sub._lost(count)
        else:
            log.warning(
                "the node dropped %d messages for %s: this agent fell behind",
                count, sub.subject if sub is not None else "its inbox",
            )

    def _fail_waiters(self, exc: FabricError) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.fail(exc)

    def _on_lost(self) -> None:
        self._fail_waiters(ConnectionLost("link to the node dropped", subject=None))
        if self._direct is not None:
            self._direct.invalidate()  # a node that restarted knows nothing of our cache

    def _on_direct_frame(self, link: StreamLink, raw: bytes, payload: memoryview) -> None:
        """A frame from another local agent: a request to us, or a reply to ours."""
        try:
            header = decode_header(raw)
        except FabricError as exc:
            log.warning("closing a direct link that sent garbage: %s", exc)
            link.close()
            return
        if header.kind is Kind.MSG:
            if header.sid and header.sid not in self._subs and header.reply:
                # The requester's directory is stale: tell it, and it asks the node instead.
                stale = Header(Kind.STATUS, subject=header.reply, status=Status.NO_RESPONDERS)
                link.send(encode_header(stale))
                return
            self._on_frame(header, payload, via=link)
        elif header.kind is Kind.STATUS:
            waiter = self._waiter_for(header.subject)
            if waiter is not None and link in waiter.sent_on():
                self._on_frame(header, payload)
            else:
                self.stats.forged_replies += 1

    def _direct_lost(self, link: StreamLink) -> None:
        """A responder we sent requests to went away: they cannot be answered."""
        for waiter in list(self._waiters.values()):
            if isinstance(waiter, RequestWaiter) and link in waiter.via:
                gone = ConnectionLost("the responder's process went away", subject=waiter.subject)
                waiter.fail(gone)

    async def _on_restored(self) -> None:
        for header in self._subscription_frames():
            self._conn.send(header)


#: User header that carries ``prefer=`` labels to the nodes (fabric.mesh reads it).
PREFER_HEADER = "fabric-prefer"


def with_prefer(
    headers: dict[str, str] | None, prefer: dict[str, str] | None
) -> dict[str, str] | None:
    """Headers with the ``prefer=`` labels added as ``k=v,k2=v2`` (unchanged without any)."""
    if not prefer:
        return headers
    out = dict(headers or {})
    out[PREFER_HEADER] = ",".join(f"{k}={v}" for k, v in prefer.items())
    return out


def _log_handler_error(fn: Any, msg: Msg, exc: Exception) -> None:
    """Say on the responder's side which handler failed on which subject, and how the
    requester hears of it."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if isinstance(exc, FabricError):
        # A typed error is often on purpose (NotFound, a bad result): one line, no traceback.
        told = "sent to the requester" if msg.reply else "no reply was asked for"
        log.warning("handler %s for %r raised %s: %s (%s)", name, msg.subject,
                    type(exc).__name__, exc.message, told)
    else:
        told = "the requester gets a RemoteError" if msg.reply else "no reply was asked for"
        log.error("handler %s for %r raised %s (%s)", name, msg.subject,
                  type(exc).__name__, told, exc_info=exc)


class _ChunkFlush:
    """Sends the chunks a stream's batcher holds as one frame (a lone chunk as a plain one):
    called when the batch is full, before waiting for credit, at the end, and at the next
    turn of the loop so a generator that pauses never holds chunks back."""

    __slots__ = ("_agent", "_batcher", "_control", "_msg", "_scheduled")

    def __init__(self, agent: Agent, msg: Msg, control: str, batcher: ChunkBatcher) -> None:
        self._agent = agent
        self._msg = msg
        self._control = control
        self._batcher = batcher
        self._scheduled: asyncio.Handle | None = None

    def at_next_tick(self) -> None:
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self)

    def __call__(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        frame = self._batcher.flush()
        if frame is not None:
            self.send(frame)

    def drop(self) -> None:
        """The reader is gone: send nothing more."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self._batcher.flush()

    def send(self, frame: Frame) -> None:
        self._agent._send_reply_inline(
            self._msg, frame.payload, frame.status, seq=frame.seq, reply=self._control
        )


async def _await(result: Awaitable[Any]) -> None:
    await result


def _loop_time(deadline: float) -> float:
    """Convert a ``time.monotonic()`` deadline to the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


@asynccontextmanager
async def connect(
    name: str,
    url: str | None = None,
    *,
    labels: dict[str, str] | None = None,
    credential: str | None = None,
    default_timeout: float = 5.0,
    reconnect: bool = True,
    direct: bool = True,
    latency_mode: bool | None = None,
) -> AsyncIterator[Agent]:
    """Join the fabric as ``name``; the agent is closed when the block exits.

    ``url`` is a node URL or a comma-separated list to fail over between (``unix:///path``,
    ``tcp://host:port``); None means ``FABRIC_URL`` or the local node's default socket.
    ``direct`` lets requests to agents on the same host skip the node (the node stays the
    directory); ``latency_mode`` (default: ``FABRIC_LATENCY_MODE``) spins briefly for replies
    instead of sleeping, trading CPU for latency.

    Raises:
        ConnectionLost: no node in the list answered. NotAuthorized: the node refused us.
        InvalidSubject: ``name`` is not usable in subjects. ConfigError: bad URL.
    """
    agent = Agent(
        name,
        url,
        labels=labels,
        credential=credential,
        default_timeout=default_timeout,
        reconnect=reconnect,
        direct=direct,
        latency_mode=latency_mode,
    )
    try:
        await agent._open()
    except BaseException:
        await agent.aclose()
        raise
    try:
        yield agent
    finally:
        await agent.aclose()
