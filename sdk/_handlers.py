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
from typing import TYPE_CHECKING, Any

import msgpack

from fabric.errors import Cancelled, ConnectionLost, FabricError, LocalProtocolError, RemoteError
from fabric.transports import StreamLink
from fabric.wire import Header, Kind, Status, encode_header

from ._chunks import BATCH_HEADER, MAX_BATCH_BYTES, ChunkBatcher, Frame
from ._deadline import current_deadline
from ._msg import Msg
from ._payload import checked_reply, encode_payload
from ._replies import CreditGate

if TYPE_CHECKING:
    from ._core import AgentCore

__all__ = ["Handler", "dispatch"]

log = logging.getLogger("sdk.agent")

Handler = Callable[[Msg], Any]


def dispatch(core: AgentCore, fn: Handler, msg: Msg) -> None:
    """Run ``fn`` for ``msg`` in a task of the agent."""
    core.spawn(run_handler(core, fn, msg))


async def run_handler(core: AgentCore, fn: Handler, msg: Msg) -> None:
    current_deadline.set(msg.deadline)
    tracer = core.tracer
    span = tracer.start_handle(msg) if tracer else None
    try:
        batches = msg.status == Status.STREAM_OPEN and msg.headers.pop(BATCH_HEADER, "") != ""
        result = fn(msg)
        if inspect.isasyncgen(result):
            await _serve_stream(core, msg, result, batches)
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
    if via is None or via.closed:
        came = msg._conn
        conn = came if came is not None and came.connected else core.conn
        if len(payload) >= conn.shared.threshold:
            try:
                payload, flags = await conn.shared.put(payload, msg.deadline, msg.subject)
                core.send_pub(
                    msg.reply, payload, status=status, seq=seq, reply=reply,
                    deadline=msg.deadline, flags=flags, conn=conn,
                )
            except ConnectionLost:
                log.debug("reply to %s lost: link down", msg.subject)
            return
    send_reply_inline(core, msg, payload, status, seq=seq, reply=reply)


def send_reply_inline(
    core: AgentCore,
    msg: Msg,
    payload: bytes | memoryview,
    status: int,
    *,
    seq: int = 0,
    reply: str = "",
) -> None:
    """A reply whose payload goes in the frame (never through shared memory)."""
    via = msg._via
    if via is not None and not via.closed:
        # Answer on the link the request came from: the requester is waiting right there,
        # and the node would refuse a reply it did not route the request for (inline even
        # when large: a shared-memory slot is the node's to lease, not ours).
        reply_header = Header(
            Kind.MSG, subject=msg.reply, msg_id=core.conn.next_id(), status=status,
            seq=seq, reply=reply,
        )
        try:
            via.send(encode_header(reply_header), payload)
        except ConnectionLost:
            return  # the requester is gone; nothing will read the reply
        direct = core.direct
        if direct is not None and direct.spin and isinstance(via, StreamLink):
            direct.spin_for_next(via)
        return
    try:
        came = msg._conn
        conn = came if came is not None and came.connected else core.conn
        core.send_pub(
            msg.reply, payload, status=status, seq=seq, reply=reply,
            deadline=msg.deadline, conn=conn,
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


async def _serve_stream(core: AgentCore, msg: Msg, chunks: Any, batches: bool = False) -> None:
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
    batcher = ChunkBatcher(min(MAX_BATCH_BYTES, core.conn.max_payload)) if batches else None
    flush = _ChunkFlush(core, msg, control, batcher) if batcher is not None else None
    seq = 0
    try:
        async for item in chunks:
            if gate.credit > 0 and not gate.cancelled:
                gate.credit -= 1  # gate.take's fast path, without a coroutine per chunk
            else:
                if flush is not None:
                    flush()  # what we hold must reach the reader before it grants more
                await gate.take(msg.deadline)
            if type(item) is not bytes:  # bytes pass both checks unchanged: skipped per chunk
                item = checked_reply(item, chunks, msg.subject)
            if flush is not None and batcher is not None:
                payload = item if type(item) is bytes else encode_payload(item)
                if batcher.fits(payload):
                    if type(payload) is not bytes:
                        payload = bytes(payload)  # the generator may reuse its buffer
                    frames = batcher.offer(payload, seq)
                    if frames:
                        for frame in frames:
                            flush.send(frame)
                    flush.at_next_tick()
                    seq += 1
                    continue
                flush()
            await send_reply(core, msg, item, Status.STREAM_CHUNK, seq=seq, reply=control)
            seq += 1
        if flush is not None:
            flush()
        await send_reply(core, msg, b"", Status.STREAM_END, reply=control)
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
        core.inbox.pop(n)
        await chunks.aclose()


class _ChunkFlush:
    """Sends the chunks a stream's batcher holds as one frame (a lone chunk as a plain one):
    called when the batch is full, before waiting for credit, at the end, and at the next
    turn of the loop so a generator that pauses never holds chunks back."""

    __slots__ = ("_batcher", "_control", "_core", "_msg", "_scheduled")

    def __init__(self, core: AgentCore, msg: Msg, control: str, batcher: ChunkBatcher) -> None:
        self._core = core
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
        send_reply_inline(
            self._core, self._msg, frame.payload, frame.status, seq=frame.seq, reply=self._control
        )


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
