"""The agent's core: the small internal API every pattern module is written against.

``AgentCore`` holds what an agent is made of — its connection to the node, its inbox (the
reply registry), its subscriptions, its direct paths — and offers the few operations the
patterns need: send a publish, send to local agents directly, take an inbox number, send
stream control, restore or move interest, run a task. Frames coming in are dispatched once
(``_inbound.py``). ``Agent`` (``_agent.py``) is the public facade over it; requests and
gathers (``_requests.py``), handlers (``_handlers.py``), streams (``_stream.py``),
subscriptions, state and migration use only what this module offers, never each other's
privates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fabric.errors import ConnectionLost, FabricError, PayloadTooLarge
from fabric.transports import Link, StreamLink
from fabric.wire import Header, Kind, Status, encode_header, encode_msg

from ._connection import Connection
from ._deadline import timeout_ms
from ._dial import Dialer, dial
from ._direct import DirectPaths
from ._inbound import Inbound
from ._inbox import Inbox
from ._pubheader import PubHeaders
from ._shared import SharedPool
from ._tracing import AgentTracer

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._subscription import Subscription

__all__ = ["AgentCore", "AgentStats"]

log = logging.getLogger("sdk.agent")

#: How long a publish waits for a lost link to come back before raising ConnectionLost.
RECONNECT_WAIT = 5.0
#: After a migration, how long the old node's link may stay open for replies in flight.
RETIRE_WAIT = 30.0
#: Refused subscriptions remembered for ``flush()`` to raise.
_MAX_REFUSALS = 64
#: Bytes queued on the link before ``publish`` waits for the kernel to take them.
SEND_HIGH_WATER = 8 * 1024 * 1024
#: Subscription id of the agent's own control subject (user subscriptions count from 1).
CONTROL_SID = 1 << 31


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


class AgentCore:
    """Connection, inbox, subscriptions and send paths of one agent."""

    def __init__(
        self,
        name: str,
        urls: list[str],
        hello: dict[str, Any],
        *,
        owner: Any,
        default_timeout: float,
        reconnect: bool = True,
        direct: bool = True,
        spin: float = 0.0,
        dialer: Dialer = dial,
        direct_tcp: str = "",
    ) -> None:
        self.name = name
        #: The public ``Agent`` messages are handed with (``Msg.respond`` publishes through it).
        self.owner = owner
        self.default_timeout = default_timeout
        self.stats = AgentStats()
        #: Checked subjects and their encoded PUB header lead (the per-publish path).
        self.pub_headers = PubHeaders()
        self.hello = hello
        self.dialer = dialer
        #: Where our TCP door for requesters on other hosts listens ("" for none).
        self.direct_tcp = direct_tcp
        self.inbox = Inbox(name)
        self.subs: dict[int, Subscription] = {}
        self._next_sid = 0
        self.tracer = AgentTracer.from_env(name)
        self.inbound = Inbound(self)
        #: Our direct socket and links to other local agents; used only while the node says
        #: this connection may (``direct_paths``).
        self.direct: DirectPaths | None = None
        if direct:
            self.direct = DirectPaths(
                self.inbound.direct_frame, self.inbound.direct_lost, spin=spin
            )
        self.conn = Connection(urls, hello, self.inbound, dialer=dialer, reconnect=reconnect)
        #: Handler runs and other tasks the agent owns (cancelled on close).
        self.tasks: set[asyncio.Task[None]] = set()
        #: Subscriptions the node refused, not yet reported by ``flush()``.
        self.refusals: list[FabricError] = []
        #: Links to nodes this agent migrated away from, open until their replies are out.
        self._retiring: set[Connection] = set()
        # The loop the agent runs on, kept from ``open``: on Python 3.11 every
        # ``asyncio.get_running_loop()`` (and ``ensure_future``) makes a getpid() syscall.
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Listen for direct requests, dial the node, subscribe the inbox.

        Raises:
            ConnectionLost, NotAuthorized (see ``connect``).
        """
        self._loop = asyncio.get_running_loop()
        if self.direct is not None:
            try:
                self.hello["direct"] = await self.direct.listen()
                if self.direct_tcp:
                    # Opt-in: requesters on other hosts may reach us with a grant.
                    self.hello["direct_tcp"] = await self.direct.listen_tcp(
                        self.direct_tcp, lambda: self.conn.welcome
                    )
            except OSError as exc:
                # Opened before the node says whether it could use it (its WELCOME), so a
                # system without abstract sockets must not cost the agent its connection.
                log.warning("no direct socket, requests go through the node: %s", exc)
                self.direct = None
        await self.conn.open()
        if self.direct is not None and not self.conn.caps.direct:
            # The node did not take our socket (not on its host): nobody can reach it.
            await self.direct.aclose()
            self.direct = None
            self.hello.pop("direct", None)
            self.hello.pop("direct_tcp", None)
        self.conn.send(Header(Kind.SUB, subject=self.inbox.pattern, sid=0))

    async def aclose(self) -> None:
        """Cancel tasks, end subscriptions, fail exchanges, close every link."""
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for sub in list(self.subs.values()):
            sub._close_local()
        self.inbox.fail_all(ConnectionLost("agent closed"))
        for old in list(self._retiring):
            await old.aclose()
        await self.conn.aclose()
        if self.direct is not None:
            await self.direct.aclose()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task of this agent (cancelled by ``aclose``)."""
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the agent runs on (the running one until ``open``)."""
        return self._loop or asyncio.get_running_loop()

    # -- the node -----------------------------------------------------------------------

    @property
    def shared(self) -> SharedPool:
        """The current node's shared-memory pool (threshold never reached when absent)."""
        return self.conn.shared

    def direct_paths(self) -> DirectPaths | None:
        """Direct paths, when this agent has them and its node vouches for them."""
        direct = self.direct
        return direct if direct is not None and self.conn.caps.direct else None

    async def ensure_connected(self, deadline: float | None = None) -> None:
        """Wait for the link (at most until ``deadline``, else ``RECONNECT_WAIT``).

        Raises:
            ConnectionLost.
        """
        if not self.conn.connected:
            await self.conn.ready(deadline or time.monotonic() + RECONNECT_WAIT)

    async def call(
        self,
        subject: str,
        headers: dict[str, str] | None = None,
        payload: Buffer = b"",
        timeout: float = 5.0,
    ) -> tuple[Header, memoryview]:
        """A control call to the current node (``Connection.call``)."""
        return await self.conn.call(subject, headers, payload, timeout)

    async def backpressure(self) -> None:
        """Wait while the link holds more than its high-water mark of unsent bytes."""
        link = self.conn.link
        if link is not None and link.buffered() > SEND_HIGH_WATER:
            await link.drain()

    # -- send paths ---------------------------------------------------------------------

    def traceparent(self) -> str:
        return self.tracer.current_traceparent() if self.tracer else ""

    def send_pub(
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
        """One PUB through the node (``conn``, else the current one); returns its id.

        Raises:
            PayloadTooLarge, ConnectionLost.
        """
        conn = conn or self.conn
        if len(payload) > conn.max_payload:
            raise PayloadTooLarge(subject=subject, size=len(payload), limit=conn.max_payload)
        msg_id = conn.next_id()
        tracer = self.tracer
        conn.send_encoded(
            self.pub_headers.encode(
                subject,
                reply,
                msg_id,
                timeout_ms(deadline) if deadline is not None else 0,
                tracer.current_traceparent() if tracer else "",
                headers,
                status,
                seq,
                flags,
            ),
            payload,
        )
        self.stats.published += 1
        return msg_id

    async def direct_targets(
        self, subject: str, deadline: float
    ) -> tuple[list[StreamLink], list[int]] | None:
        """Links to (and subscription ids of) the local agents a request for ``subject``
        goes to, or None when the node must carry it.

        Raises:
            NoResponders: the directory says nobody listens.
        """
        direct = self.direct_paths()
        if direct is None:
            return None
        route = direct.cached(subject)
        if route is False:
            route = await direct.resolve(
                self.conn, subject, max(0.001, deadline - time.monotonic()), self.traceparent()
            )
        if route is None or route is True or route.empty:
            return None
        if self.tracer is not None:
            self.tracer.link_current(direct.span_of(subject))
        targets = route.pick()
        try:
            links = [direct.link_now(path) or await direct.link(path) for path, _ in targets]
        except ConnectionLost:
            direct.invalidate(subject)  # a responder went away: the node knows who is left
            return None
        if route.grants:
            direct.present(route, targets, links)
        return links, [sid for _, sid in targets]

    def send_direct(
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
        """One request straight to local responders (one frame per link)."""
        msg_id = self.conn.next_id()
        left = timeout_ms(deadline)
        traceparent = self.traceparent()
        header = b""
        header_sid = -1  # agents number subscriptions alike: a gather mostly repeats one sid
        for link, sid in zip(links, sids, strict=True):
            if sid != header_sid:
                header = encode_msg(
                    subject, reply, msg_id, left, traceparent, headers, sid, status, seq, 0
                )
                header_sid = sid
            link.send(header, payload)
        self.stats.published += 1

    def direct_name(self, link: Link) -> str:
        """The agent behind a direct link, as the node's directory named it."""
        direct = self.direct
        return direct.name_of(link) if direct is not None and isinstance(link, StreamLink) else ""

    def direct_node(self, link: Link) -> str:
        """The node of the agent behind a direct link (ours, unless it is on another host)."""
        direct = self.direct
        here = self.conn.node
        if direct is None or not isinstance(link, StreamLink):
            return here
        return direct.node_of(link, here)

    def to_control(self, control: str, status: int, seq: int, via: Link | None) -> None:
        """Stream control (credit, cancel) to a responder: on the direct link the stream
        came on, else through the node."""
        try:
            if via is not None and not via.closed:
                via.send(encode_header(Header(Kind.MSG, subject=control, status=status, seq=seq)))
            else:
                self.send_pub(control, b"", status=status, seq=seq)
        except ConnectionLost:
            pass  # the stream fails on its own when the link is gone

    def grant_credit(self, control: str, credit: int, via: Link | None = None) -> None:
        self.to_control(control, Status.STREAM_CREDIT, credit, via)

    def cancel_stream(self, control: str, via: Link | None = None) -> None:
        self.to_control(control, Status.CANCELLED, 0, via)

    # -- subscriptions ------------------------------------------------------------------

    def next_sid(self) -> int:
        self._next_sid += 1
        return self._next_sid

    def add_subscription(self, sub: Subscription) -> None:
        """Register ``sub`` and tell the node.

        Raises:
            ConnectionLost.
        """
        self.subs[sub.sid] = sub
        self.conn.send(Header(Kind.SUB, subject=sub.subject, queue=sub.queue, sid=sub.sid))

    async def unsubscribe(self, sub: Subscription) -> None:
        self.subs.pop(sub.sid, None)
        if self.conn.connected:
            self.conn.send(Header(Kind.UNSUB, subject=sub.subject, sid=sub.sid))

    def refused(self, sub: Subscription, error: FabricError) -> None:
        """The node refused a subscription: it ends, and says why when read (and at the
        next ``flush()`` for handlers, whose registration returned long ago)."""
        self.subs.pop(sub.sid, None)
        sub._refuse(error)
        self.remember_refusal(error)
        if sub.callback is not None:
            log.error("subscription to %s refused by the node: %s", sub.subject, error)

    def remember_refusal(self, error: FabricError) -> None:
        """Kept for the next ``flush()`` to raise (bounded: the first ones say enough)."""
        if len(self.refusals) < _MAX_REFUSALS:
            self.refusals.append(error)

    def forget_refusal(self, error: FabricError) -> None:
        """Already raised to the subscriber: ``flush()`` need not raise it again."""
        self.refusals = [r for r in self.refusals if r is not error]

    def subscription_frames(self) -> list[Header]:
        """SUB frames that recreate this agent's interest (its inbox first)."""
        frames = [Header(Kind.SUB, subject=self.inbox.pattern, sid=0)]
        frames += [
            Header(Kind.SUB, subject=s.subject, queue=s.queue, sid=s.sid)
            for s in self.subs.values()
        ]
        return frames

    # -- moving between nodes -----------------------------------------------------------

    def new_connection(self, urls: list[str]) -> Connection:
        """A connection to other nodes, reporting to this agent (not opened yet)."""
        return Connection(urls, dict(self.hello), self.inbound, dialer=self.dialer)

    def switch_connection(self, conn: Connection) -> None:
        """From now on this agent talks through ``conn`` (after a migration)."""
        self.conn = conn
        if self.direct is not None:
            self.direct.invalidate()

    def retire(self, conn: Connection) -> None:
        """After a migration: keep the old node's link (its interest already gone) until the
        handlers running now have answered through it, at most ``RETIRE_WAIT`` seconds."""
        conn.stop_reconnecting()
        running = set(self.tasks)
        self._retiring.add(conn)

        async def close_when_answered() -> None:
            try:
                if running:
                    await asyncio.wait(running, timeout=RETIRE_WAIT)
            finally:
                self._retiring.discard(conn)
                await conn.aclose()

        self.spawn(close_when_answered())
