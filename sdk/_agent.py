"""``Agent``: what an agent process holds to talk to the fabric.

A facade: each method checks its arguments and hands over to the module that does the work
over the agent's core (``_core.py``) — requests and gathers (``_requests.py``), handlers
(``_handlers.py``), streams (``_stream.py``), subscriptions, state, migration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from fabric.errors import ConnectionLost, FabricError, NotAuthorized, Timeout
from fabric.paths import default_url
from fabric.private import control_subject
from fabric.protocol import NODE_BARRIER, NODE_STATS
from fabric.subjects import validate_pattern, validate_subject

from ._chunks import DEFAULT_WINDOW
from ._core import CONTROL_SID, SEND_HIGH_WATER, AgentCore, AgentStats
from ._deadline import effective_deadline
from ._dial import parse_urls
from ._handlers import Handler, dispatch
from ._metrics import AgentMetrics
from ._migrate import MigrationReport, migrate
from ._msg import Msg
from ._payload import Payload, encode_payload
from ._replies import GatherResult
from ._requests import PREFER_HEADER, gather, request, with_prefer
from ._state import LeaseBook, StateClient
from ._stream import StreamReply
from ._subscription import DEFAULT_PENDING_LIMIT, Subscription

__all__ = ["PREFER_HEADER", "Agent", "AgentStats", "connect", "with_prefer"]

log = logging.getLogger("sdk.agent")


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
        direct_tcp: str | None = None,
    ) -> None:
        validate_subject(name)  # names appear in subjects; same rules
        self.name = name
        self.labels = dict(labels or {})
        self.default_timeout = default_timeout
        hello: dict[str, Any] = {"name": name, "labels": self.labels}
        if credential is not None:
            hello["credential"] = credential
        if latency_mode is None:
            latency_mode = os.environ.get("FABRIC_LATENCY_MODE", "") not in ("", "0", "false")
        spin = float(os.environ.get("FABRIC_SPIN_US", "200")) / 1e6 if latency_mode else 0.0
        if direct_tcp is None:
            direct_tcp = os.environ.get("FABRIC_DIRECT_TCP", "")
        self._core = AgentCore(
            name,
            parse_urls(url or default_url()),
            hello,
            owner=self,
            default_timeout=default_timeout,
            reconnect=reconnect,
            direct=direct,
            spin=spin,
            direct_tcp=direct_tcp,
        )
        self.stats: AgentStats = self._core.stats
        #: Handler registrations (``@handler``) still on their way to the node.
        self._registering: set[asyncio.Task[None]] = set()
        metrics = AgentMetrics.from_env()  # FABRIC_AGENT_METRICS; None (no cost) when off
        if metrics is not None:
            metrics.instrument(self)
        self._leases = LeaseBook()
        #: Private state under leases, and shared blobs (see ``StateClient``).
        self.state = StateClient(self._core, default_timeout, self._leases)
        self._closed = False

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} node={self.node!r}>"

    # -- lifecycle ----------------------------------------------------------------------

    async def _open(self) -> None:
        core = self._core
        await core.open()
        # Lets an operator move this agent (`fabric agent migrate NAME --to URL`).
        control = Subscription(
            core,
            CONTROL_SID,
            control_subject(self.name),
            "",
            callback=lambda m: dispatch(core, self._migrate_on_request, m),
        )
        core.add_subscription(control)

    async def _migrate_on_request(self, msg: Msg) -> str:
        report = await self.migrate(msg.text(), timeout=msg.time_left() or 30.0)
        return json.dumps(dataclasses.asdict(report))

    async def aclose(self) -> None:
        """Stop handlers, drop subscriptions, close the link. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._core.aclose()

    @property
    def node(self) -> str:
        """Name of the node this agent is connected to."""
        return self._core.conn.node

    @property
    def connected(self) -> bool:
        return self._core.conn.connected

    @property
    def reconnects(self) -> int:
        """How many times the link was lost and restored."""
        return self._core.conn.reconnects

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
        core = self._core
        core.pub_headers.check(subject)
        payload = encode_payload(data)
        if not core.conn.connected:
            await core.ensure_connected()
        flags = 0
        shared = core.conn.shared
        if len(payload) >= shared.threshold:
            payload, flags = await shared.put(payload, None, subject)
        tracer = core.tracer
        if tracer is None:
            core.send_pub(subject, payload, headers=headers, reply=reply, flags=flags)
        else:
            span = tracer.start("publish", subject)
            try:
                core.send_pub(subject, payload, headers=headers, reply=reply, flags=flags)
            finally:
                span.end()
        link = core.conn.link
        if link is not None and link.buffered() > SEND_HIGH_WATER:
            await link.drain()  # ``AgentCore.backpressure``, inline: this runs per publish

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
        core = self._core
        await core.ensure_connected()
        sub = Subscription(
            core,
            core.next_sid(),
            subject,
            queue or "",
            callback=callback,
            pending_limit=pending_limit,
        )
        core.add_subscription(sub)
        try:
            # A refusal is answered (ERR) before the PONG: by now we know the verdict.
            await core.conn.flush(self.default_timeout)
        except (ConnectionLost, Timeout):
            return sub
        if sub.refusal is not None:
            core.forget_refusal(sub.refusal)
            raise sub.refusal
        return sub

    def handler(self, subject: str, queue: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: serve requests on ``subject``.

        The function's return value (bytes, str, model) is the reply; an async generator
        streams its items. An exception becomes a typed error at the requester. The
        subscription is made when the agent next yields to the loop; ``await agent.flush()``
        makes sure it reached the node, and raises ``NotAuthorized`` if the node refused it.
        """
        validate_pattern(subject)
        core = self._core

        def register(fn: Handler) -> Handler:
            async def subscribe() -> None:
                try:
                    await self.subscribe(
                        subject, queue, callback=lambda m: dispatch(core, fn, m)
                    )
                except FabricError as exc:
                    log.error("handler for %s not registered: %s", subject, exc)
                    if isinstance(exc, NotAuthorized):
                        core.remember_refusal(exc)

            task = core.spawn(subscribe())
            # flush() waits for these: its promise covers handlers registered before it.
            self._registering.add(task)
            task.add_done_callback(self._registering.discard)
            return fn

        return register

    async def serve(self, subject: str, fn: Handler, *, queue: str | None = None) -> Subscription:
        """``handler`` as a call: subscribe ``fn`` now and return the subscription."""
        core = self._core
        return await self.subscribe(subject, queue, callback=functools.partial(dispatch, core, fn))

    # -- request / reply ----------------------------------------------------------------

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
        self._core.pub_headers.check(subject)  # validate_subject, remembered
        return await request(
            self._core,
            subject,
            encode_payload(data),
            with_prefer(headers, prefer),
            effective_deadline(timeout, self.default_timeout),
            prefer=prefer is not None,
        )

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
        return await gather(
            self._core,
            subject,
            encode_payload(data),
            headers,
            until,
            quorum,
            prefer=prefer is not None,
        )

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
            self._core,
            subject,
            encode_payload(data),
            timeout,
            window,
            with_prefer(headers, prefer),
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
        return await migrate(self._core, self._leases, to, timeout=timeout)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything sent so far has been processed by the node and the
        subscriptions and handlers registered so far are known to every node of the mesh
        this node reaches (its barrier; docs/mesh.md, "When a handler is visible").

        Raises:
            NotAuthorized: the node refused a subscription made since the last flush (a
                handler's, typically). Timeout: the node or a live peer node did not answer in
                time. ConnectionLost.
        """
        core = self._core
        await core.ensure_connected()
        if self._registering:
            # Each registration ends with its own round trip (and learns of a refusal).
            await asyncio.wait(set(self._registering), timeout=timeout)
        await core.call(NODE_BARRIER.subject, timeout=timeout)
        if core.refusals:
            first, core.refusals = core.refusals[0], []
            raise first

    async def node_status(self) -> dict[str, Any]:
        """The node's status snapshot (sessions, subscriptions, counters).

        Raises:
            Timeout, ConnectionLost.
        """
        core = self._core
        await core.ensure_connected()
        _, payload = await core.call(NODE_STATS.subject)
        return NODE_STATS.decode_answer(None, payload).status


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
    direct_tcp: str | None = None,
) -> AsyncIterator[Agent]:
    """Join the fabric as ``name``; the agent is closed when the block exits.

    ``url`` is a node URL or a comma-separated list to fail over between (``unix:///path``,
    ``tcp://host:port``); None means ``FABRIC_URL`` or the local node's default socket.
    ``direct`` lets requests to agents on the same host skip the node (the node stays the
    directory); ``latency_mode`` (default: ``FABRIC_LATENCY_MODE``) spins briefly for replies
    instead of sleeping, trading CPU for latency. ``direct_tcp`` (default:
    ``FABRIC_DIRECT_TCP``), an address of this host on the cluster network, opens a TCP door
    there so requesters on other hosts reach this agent directly, with a grant their nodes
    issued (docs/mesh.md, "Direct paths across hosts"); "" keeps it closed.

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
        direct_tcp=direct_tcp,
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
