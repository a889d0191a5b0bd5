"""The responder's side: run a handler for a message and send what it returns.

A plain return value is the reply; an async generator streams its items under the
requester's credit (``CreditGate``); an exception becomes a typed error at the requester.
A request that came on a direct link is answered on that link; anything else through the
node it came from (the only node that accepts the reply: fabric/private.py).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import msgpack

from fabric.errors import Cancelled, ConnectionLost, FabricError, LocalProtocolError, RemoteError
from fabric.transports import StreamLink
from fabric.wire import Status, encode_msg

from ._deadline import current_deadline
from ._msg import Msg
from ._payload import checked_reply, encode_payload
from ._replies import CreditGate

if TYPE_CHECKING:
    from ._core import AgentCore

__all__ = ["Handler", "dispatch"]

log = logging.getLogger("sdk.agent")

Handler = Callable[[Msg], Any]

# Return values that are neither awaitable nor a stream: no ``inspect`` check (an ABC
# ``isinstance``) needed for them.
_PLAIN: frozenset[type] = frozenset({bytes, bytearray, memoryview, str, type(None), dict, list})


def dispatch(core: AgentCore, fn: Handler, msg: Msg) -> None:
    """Run ``fn`` for ``msg`` in a task of the agent."""
    core.spawn(run_handler(core, fn, msg))


async def run_handler(core: AgentCore, fn: Handler, msg: Msg) -> None:
    current_deadline.set(msg.deadline)
    tracer = core.tracer
    span = tracer.start_handle(msg) if tracer else None
    try:
        result = fn(msg)
        if type(result) is CoroutineType:
            result = await result  # an ``async def`` handler: tested first, C only
        elif type(result) not in _PLAIN:
            if inspect.isasyncgen(result):
                await _serve_stream(core, msg, result)
                return
            if inspect.isawaitable(result):
                result = await result
        result = checked_reply(result, fn, msg.subject)
        if msg.reply:
            if msg.status == Status.STREAM_OPEN:
                # A plain handler asked for a stream: one chunk, then the end.
                await send_reply(core, msg, result, Status.STREAM_CHUNK)
                await send_reply(core, msg, b"", Status.STREAM_END)
            else:
                await send_reply(core, msg, result, Status.OK)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        core.stats.handler_errors += 1
        # Logged here, on the responder's side, where the fix is; the requester gets
        # the typed error (RemoteError for anything not from fabric.errors).
        _log_handler_error(fn, msg, exc)
        if msg.reply:
            await _send_error(core, msg, exc)
    finally:
        if span is not None:
            span.end()


async def send_reply(
    core: AgentCore, msg: Msg, data: Any, status: int, *, seq: int = 0, reply: str = ""
) -> None:
    payload = encode_payload(data)
    via = msg._via
    if via is not None and not via.closed:
        # Answer on the link the request came from: the requester is waiting right there,
        # and the node would refuse a reply it did not route the request for (inline even
        # when large: a shared-memory slot is the node's to lease, not ours).
        reply_header = encode_msg(
            msg.reply, reply, core.conn.next_id(), 0, "", None, 0, status, seq, 0
        )
        try:
            via.send(reply_header, payload)
        except ConnectionLost:
            return  # the requester is gone; nothing will read the reply
        direct = core.direct
        if direct is not None and direct.spin and isinstance(via, StreamLink):
            direct.spin_for_next(via)
        return
    try:
        came = msg._conn
        conn = came if came is not None and came.connected else core.conn
        flags = 0
        if len(payload) >= conn.shared.threshold:
            payload, flags = await conn.shared.put(payload, msg.deadline, msg.subject)
        core.send_pub(
            msg.reply,
            payload,
            status=status,
            seq=seq,
            reply=reply,
            deadline=msg.deadline,
            flags=flags,
            conn=conn,
        )
    except ConnectionLost:
        log.debug("reply to %s lost: link down", msg.subject)


async def _send_error(core: AgentCore, msg: Msg, exc: BaseException) -> None:
    code = exc.code if isinstance(exc, FabricError) else RemoteError.code
    text = (
        exc.message
        if isinstance(exc, FabricError)
        else f"{type(exc).__name__}: {exc} (in agent {core.name}; its log has the traceback)"
    )
    await send_reply(core, msg, msgpack.packb((code, text)), Status.ERROR)


async def _serve_stream(core: AgentCore, msg: Msg, chunks: Any) -> None:
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
    n, control = core.inbox.new(gate)
    seq = 0
    try:
        async for item in chunks:
            await gate.take(msg.deadline)
            item = checked_reply(item, chunks, msg.subject)
            await send_reply(core, msg, item, Status.STREAM_CHUNK, seq=seq, reply=control)
            seq += 1
        await send_reply(core, msg, b"", Status.STREAM_END, reply=control)
    except asyncio.CancelledError:
        if not gate.cancelled:
            raise
    except Cancelled:
        pass  # the requester left; the generator is closed below
    finally:
        core.inbox.pop(n)
        await chunks.aclose()


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
