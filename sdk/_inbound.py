"""Frames coming in, dispatched once: from the node (``ConnectionEvents``) and from other
local agents on our direct socket.

A MSG becomes a ``Msg`` (its shared-memory lease attached) and goes to the inbox waiter it
answers, or to the subscription it was delivered for; STATUS and ERR go to the waiter or
subscription they concern. Replies are checked here: through the node, the node stamped
who answered; on a direct link, only a link the exchange went out on may answer it.
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import msgpack

from fabric.errors import (
    ConnectionLost,
    FabricError,
    RemoteError,
    error_from_wire,
)
from fabric.private import decode_names, parse_sender
from fabric.protocol import DIR_INVALIDATE, SENDER_HEADER
from fabric.transports import StreamLink
from fabric.wire import Flags, Header, Kind, Status, decode_header, encode_header

from ._msg import Sender, delivered
from ._replies import CreditGate, RequestWaiter, StreamReceiver

if TYPE_CHECKING:
    from ._connection import Connection
    from ._core import AgentCore

__all__ = ["Inbound"]

log = logging.getLogger("sdk.agent")


class Inbound:
    """The agent's receiving side: implements ``ConnectionEvents`` and the direct socket's
    callbacks over one ``AgentCore``."""

    __slots__ = ("_core",)

    def __init__(self, core: AgentCore) -> None:
        self._core = core

    # -- from the node ------------------------------------------------------------------

    def message(
        self,
        conn: Connection | None,
        header: Header,
        payload: memoryview,
        via: StreamLink | None = None,
    ) -> None:
        core = self._core
        stats = core.stats
        stats.received += 1
        deadline = time.monotonic() + header.timeout_ms / 1000 if header.timeout_ms else None
        data: memoryview = payload
        lease = None
        if header.flags & Flags.SHM:
            shared = (conn or core.conn).shared
            found = shared.view(payload)
            if found is None:
                return  # a descriptor we cannot trust is never read
            data, desc = found
            lease = (shared, desc, shared.region)
        msg = delivered(
            header.subject,
            data,
            header.headers,
            header.reply,
            deadline,
            header.status,
            header.seq,
            header.msg_id,
            header.traceparent,
            core.owner,
            via,
        )
        if header.reply:
            msg._conn = conn or core.conn
        if lease is not None:
            # Released explicitly, or when the message is garbage-collected at the latest.
            msg._release = weakref.finalize(msg, lease[0].release, lease[1], lease[2])
        if header.sid == 0:
            waiter = core.inbox.waiter_for(header.subject)
            if waiter is None:
                stats.late_replies += 1
                return
            if via is None:
                # Through the node: it checked the responder and stamped who it is.
                stamp = msg.headers.pop(SENDER_HEADER, None)
                if stamp is not None:
                    msg.sender = Sender(*parse_sender(stamp))
            elif via in waiter.sent_on():
                msg.headers.pop(SENDER_HEADER, None)  # a claim; the directory knows better
                msg.sender = Sender(core.direct_name(via), core.direct_node(via))
            else:
                # On our direct socket, but not on a link this exchange went out on.
                stats.forged_replies += 1
                return
            waiter.deliver(msg)
            return
        sub = core.subs.get(header.sid)
        if sub is None:
            return  # unsubscribed while the message was in flight
        if sub.callback is not None:
            sub.delivered += 1
            result = sub.callback(msg)
            if result is not None and inspect.isawaitable(result):
                core.spawn(_await(result))
        else:
            sub._deliver(msg)

    def status(self, conn: Connection | None, header: Header, payload: memoryview) -> None:
        core = self._core
        if header.status == Status.SLOW_CONSUMER:
            self._lost_at_node(header.sid, header.seq)
            return
        waiter = core.inbox.waiter_for(header.subject)
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

    def error(self, conn: Connection, header: Header, payload: memoryview) -> None:
        core = self._core
        try:
            code, message = msgpack.unpackb(payload, raw=False)
            error = error_from_wire(str(code), str(message), subject=header.subject)
        except Exception:
            error = RemoteError("node sent an undecodable error")
        waiter = core.inbox.waiter_for(header.reply) if header.reply else None
        refused = core.subs.get(header.sid) if header.sid else None
        if waiter is not None:
            waiter.fail(error)
        elif refused is not None and refused.subject == header.subject:
            core.refused(refused, error)
        else:
            log.warning("node reported: %s", error)

    def notice(self, conn: Connection, header: Header, payload: memoryview) -> None:
        direct = self._core.direct
        if header.subject == DIR_INVALIDATE.subject and direct is not None:
            direct.invalidate()

    def lost(self, conn: Connection) -> None:
        core = self._core
        core.inbox.fail_all(ConnectionLost("link to the node dropped", subject=None))
        if core.direct is not None:
            core.direct.invalidate()  # a node that restarted knows nothing of our cache

    async def restored(self, conn: Connection) -> None:
        for header in self._core.subscription_frames():
            conn.send(header)

    def _lost_at_node(self, sid: int, count: int) -> None:
        """The node dropped ``count`` deliveries for subscription ``sid`` while we were
        behind: the subscription raises ``SlowConsumer`` with the count at its next read."""
        core = self._core
        core.stats.dropped += count
        sub = core.subs.get(sid) if sid else None
        if sub is not None and sub.callback is None:
            sub._lost(count)
        else:
            log.warning(
                "the node dropped %d messages for %s: this agent fell behind",
                count, sub.subject if sub is not None else "its inbox",
            )

    # -- from other local agents --------------------------------------------------------

    def direct_frame(self, link: StreamLink, raw: bytes, payload: memoryview) -> None:
        """A frame from another local agent: a request to us, or a reply to ours."""
        core = self._core
        try:
            header = decode_header(raw)
        except FabricError as exc:
            log.warning("closing a direct link that sent garbage: %s", exc)
            link.close()
            return
        match header.kind:
            case Kind.MSG:
                if header.sid and header.sid not in core.subs and header.reply:
                    # The requester's directory is stale: tell it, and it asks the node.
                    stale = Header(Kind.STATUS, subject=header.reply, status=Status.NO_RESPONDERS)
                    link.send(encode_header(stale))
                    return
                self.message(None, header, payload, via=link)
            case Kind.STATUS:
                waiter = core.inbox.waiter_for(header.subject)
                if waiter is not None and link in waiter.sent_on():
                    self.status(None, header, payload)
                else:
                    core.stats.forged_replies += 1

    def direct_lost(self, link: StreamLink) -> None:
        """A direct link closed. A responder we sent requests or streams to went away: they
        cannot be answered (a typed error now, not a timeout later). A requester reading a
        stream we serve went away: its generator is cancelled, as if it had left."""
        for waiter in list(self._core.inbox.waiters.values()):
            if isinstance(waiter, RequestWaiter):
                if link in waiter.via:
                    gone = ConnectionLost(
                        "the responder's process went away", subject=waiter.subject
                    )
                    waiter.fail(gone)
            elif isinstance(waiter, StreamReceiver):
                # Before the first chunk any target may still take the stream; after it,
                # only the one it came from matters.
                via = waiter.via
                if via is link or (via is None and list(waiter.links) == [link]):
                    gone = ConnectionLost(
                        "the responder's process went away mid-stream", subject=waiter.subject
                    )
                    waiter.fail(gone)
            elif isinstance(waiter, CreditGate) and link in waiter.links:
                waiter.reader_gone()


async def _await(result: Awaitable[Any]) -> None:
    await result
