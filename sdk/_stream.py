"""``StreamReply``: the requester's side of a streamed reply."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fabric.errors import FabricError, NoResponders
from fabric.wire import Flags, Status

from ._chunks import BATCH_HEADER, BATCH_VERSION, CreditWindow
from ._deadline import effective_deadline
from ._msg import Msg
from ._replies import ReplyWaiter, StreamReceiver

if TYPE_CHECKING:
    from fabric.transports import StreamLink

    from ._core import AgentCore

__all__ = ["StreamReply"]


class _Canceller(ReplyWaiter):
    """Stands in for a stream the reader left before its responder was known: any chunk
    that still arrives is answered with a cancel, so the responder stops instead of waiting
    out its deadline."""

    def __init__(self, core: AgentCore, subject: str) -> None:
        self._core = core
        self.subject = subject

    def deliver(self, msg: Msg) -> None:
        if msg.reply:
            self._core.cancel_stream(msg.reply)

    def fail(self, exc: FabricError) -> None:
        pass


class StreamReply:
    """Async iterator over the chunks (``Msg``) of one streamed reply.

    Leaving the loop early (``break``, an exception, ``aclose()``, or dropping the iterator)
    cancels the responder.
    """

    def __init__(
        self,
        core: AgentCore,
        subject: str,
        payload: bytes | memoryview,
        timeout: float | None,
        window: int,
        headers: dict[str, str] | None,
    ) -> None:
        self._core = core
        self.subject = subject
        self._payload = payload
        self._timeout = timeout
        self._window = window
        # Says we split batched chunks (sdk/_chunks.py); an older responder ignores it.
        self._headers = {**(headers or {}), BATCH_HEADER: BATCH_VERSION}
        self._credit = CreditWindow(window)
        self._receiver: StreamReceiver | None = None
        self._n = 0
        self._deadline = 0.0
        self._finished = False
        #: Already sent through the node after a direct target refused it.
        self._fell_back = False

    def __aiter__(self) -> StreamReply:
        return self

    async def _start(self) -> StreamReceiver:
        core = self._core
        self._deadline = effective_deadline(self._timeout, core.default_timeout)
        await core.ensure_connected(self._deadline)
        direct = None
        if len(self._payload) < core.shared.threshold:
            direct = await core.direct_targets(self.subject, self._deadline)
        return self._open(direct)

    def _open(self, direct: tuple[list[StreamLink], list[int]] | None) -> StreamReceiver:
        """Send the stream-open: straight to the responders ``direct`` names (chunks,
        credits and the cancel then travel on that link), else through the node."""
        core = self._core
        receiver = StreamReceiver(self.subject, cancel=core.cancel_stream)
        self._n, reply = core.inbox.new(receiver)
        self._receiver = receiver
        if direct is not None:
            links, sids = direct
            receiver.links = links
            core.send_direct(
                links, sids, self.subject, self._payload, reply, self._deadline,
                headers=self._headers, status=Status.STREAM_OPEN, seq=self._window,
            )
            return receiver
        core.send_pub(
            self.subject,
            self._payload,
            headers=self._headers,
            reply=reply,
            deadline=self._deadline,
            status=Status.STREAM_OPEN,
            seq=self._window,
            flags=Flags.NO_RESPONDERS,
        )
        return receiver

    def _fall_back(self) -> None:
        """A direct target refused the stream before its first chunk (its subscription
        was gone, or its door wants a fresh grant): ask the node instead, once."""
        core = self._core
        direct = core.direct_paths()
        if direct is not None:
            direct.invalidate(self.subject)
        core.inbox.pop(self._n)
        self._fell_back = True
        self._open(None)

    async def __anext__(self) -> Msg:
        if self._finished:
            raise StopAsyncIteration
        receiver = self._receiver or await self._start()
        queue = receiver.state.queue
        if queue:
            chunk: Msg | None = queue.popleft()  # receiver.next's fast path, no coroutine
        else:
            try:
                chunk = await receiver.next(self._deadline)
            except NoResponders:
                if self._fell_back or not receiver.links or receiver.control:
                    self._close(cancel=True)
                    raise
                self._fall_back()
                return await self.__anext__()
            except BaseException:
                self._close(cancel=True)
                raise
        if receiver.rivals:
            for rival in receiver.rivals:
                self._core.cancel_stream(rival)  # through the node: it knows every inbox
            receiver.rivals.clear()
        if chunk is None:
            self._close(cancel=False)
            raise StopAsyncIteration
        grant = self._credit.consumed()
        if grant and receiver.control:
            self._core.grant_credit(receiver.control, grant, receiver.via)
        return chunk

    async def aclose(self) -> None:
        """Stop reading and cancel the responder. Idempotent."""
        self._close(cancel=True)

    def __del__(self) -> None:
        if not self._finished and self._receiver is not None:
            self._close(cancel=True)

    def _close(self, *, cancel: bool) -> None:
        if self._finished:
            return
        self._finished = True
        receiver = self._receiver
        if receiver is None:
            return
        core = self._core
        core.inbox.pop(self._n)
        if not cancel or receiver.state.ended:
            return
        if receiver.control:
            core.cancel_stream(receiver.control, receiver.via)
            return
        # No chunk yet, so no address to cancel: answer whatever still comes.
        core.inbox.put(self._n, _Canceller(core, self.subject))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        delay = max(0.0, self._deadline - time.monotonic())
        loop.call_later(delay, core.inbox.pop, self._n)
