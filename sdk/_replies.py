"""Everything that waits on the agent's inbox: requests, gathers, streams, stream credits.

Each agent subscribes once to ``_INBOX.<token>.>``; every exchange takes a number and gets the
reply subject ``_INBOX.<token>.<n>``. A reply whose number has no waiter any more is late: it
is dropped and counted, never delivered anywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fabric.errors import (
    Cancelled,
    FabricError,
    NoResponders,
    RemoteProtocolError,
    Timeout,
)
from fabric.protocol import INBOX_PREFIX, Status

from ._chunks import unpack_chunks
from ._msg import Msg, Sender, messages_like

__all__ = [
    "CreditGate",
    "GatherCollector",
    "GatherResult",
    "ReplyWaiter",
    "RequestWaiter",
    "StreamReceiver",
]


def _named(error: FabricError, subject: str) -> FabricError:
    """An error that came back on our inbox names the subject that was called (what the
    caller knows), not the ``_INBOX...`` it travelled on."""
    if subject and (not error.subject or error.subject.startswith(INBOX_PREFIX)):
        error.subject = subject
    return error


class ReplyWaiter:
    """Base: something registered under an inbox number."""

    subject: str = ""

    def sent_on(self) -> Sequence[object]:
        """The direct links this exchange went out on: only they may answer it directly
        (anything else arriving on our direct socket for it is a forgery)."""
        return ()

    def deliver(self, msg: Msg) -> None:
        raise NotImplementedError

    def no_responders(self) -> None:
        self.fail(NoResponders("no agent is subscribed", subject=self.subject))

    def routed(self, count: int, names: Sequence[Sender] | None = None) -> None:
        """The node reports how many responders the message reached (and, for a gather,
        who they are)."""

    def fail(self, exc: FabricError) -> None:
        raise NotImplementedError


class RequestWaiter(ReplyWaiter):
    """First reply wins."""

    __slots__ = ("future", "subject", "via")

    def __init__(
        self,
        subject: str,
        via: Sequence[object] = (),
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.subject = subject
        self.future: asyncio.Future[Msg] = (loop or asyncio.get_running_loop()).create_future()
        #: Direct links the request went out on (their loss fails it at once).
        self.via = via

    def sent_on(self) -> Sequence[object]:
        return self.via

    def deliver(self, msg: Msg) -> None:
        if self.future.done():
            return
        error = msg.error if msg.status == Status.ERROR else None
        if error is not None:
            self.future.set_exception(_named(error, self.subject))
        else:
            self.future.set_result(msg)

    def timed_out(self) -> None:
        """The deadline passed (the error is made only then, not for every request)."""
        self.fail(Timeout("no reply before the deadline", subject=self.subject))

    def fail(self, exc: FabricError) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class GatherResult(list[Msg]):
    """Replies of a gather, in arrival order; a list of ``Msg`` with the bookkeeping."""

    #: How many responders the message reached (None if the node never said).
    reached: int | None
    #: Replies that were errors, as typed errors.
    errors: list[FabricError]
    #: Who the message reached, as the nodes named them (None if they did not).
    expected: list[Sender] | None
    #: Who answered (replies and errors alike), in arrival order.
    responders: list[Sender]

    def __init__(self) -> None:
        super().__init__()
        self.reached = None
        self.errors = []
        self.expected = None
        self.responders = []

    @property
    def missing_names(self) -> list[Sender]:
        """Responders reached that had not answered when the gather returned, by name
        (empty when the nodes did not name whom they reached)."""
        if self.expected is None:
            return []
        answered = list(self.responders)
        missing = []
        for who in self.expected:
            if who in answered:
                answered.remove(who)
            else:
                missing.append(who)
        return missing

    @property
    def missing(self) -> int:
        """Responders reached that had not answered when the gather returned."""
        if self.reached is None:
            return 0
        return max(0, self.reached - len(self) - len(self.errors))

    @property
    def complete(self) -> bool:
        """Every responder reached has answered."""
        return self.reached is not None and self.missing == 0


class GatherCollector(ReplyWaiter):
    """Collect replies until all reached responders answered, the quorum, or the deadline."""

    def __init__(
        self,
        subject: str,
        quorum: int | None,
        *,
        direct: bool = False,
        links: Sequence[object] = (),
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.subject = subject
        self.quorum = quorum
        #: The direct links the gather went out on.
        self.links = links
        #: Sent on direct links: a "no responders" answer comes from one target whose
        #: subscription was gone (a stale directory), not from the whole fabric.
        self.direct = direct
        self.result = GatherResult()
        self.done = (loop or asyncio.get_running_loop()).create_future()
        self._error: FabricError | None = None

    def _check(self) -> None:
        if self.done.done():
            return
        answered = len(self.result) + len(self.result.errors)
        if (self.quorum is not None and len(self.result) >= self.quorum) or (
            self.result.reached is not None and answered >= self.result.reached
        ):
            self.done.set_result(None)

    def sent_on(self) -> Sequence[object]:
        return self.links

    def deliver(self, msg: Msg) -> None:
        error = msg.error if msg.status == Status.ERROR else None
        if error is not None:
            self.result.errors.append(_named(error, self.subject))
        else:
            self.result.append(msg)
        if msg.sender is not None:
            self.result.responders.append(msg.sender)
        self._check()

    def routed(self, count: int, names: Sequence[Sender] | None = None) -> None:
        self.result.reached = count
        if names is not None:
            self.result.expected = list(names)
        if count == 0:
            self.no_responders()
        else:
            self._check()

    def no_responders(self) -> None:
        if self.direct and self.result.reached:
            self.result.reached -= 1  # that target was not reached after all
            if self.result.reached:
                self._check()
                return
        super().no_responders()

    def fail(self, exc: FabricError) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


@dataclass(slots=True)
class _StreamState:
    queue: deque[Msg] = field(default_factory=deque)
    ended: bool = False
    error: FabricError | None = None


def _split_batch(msg: Msg) -> list[Msg]:
    """The chunks of one ``STREAM_CHUNKS`` frame, each its own ``Msg`` numbered in order."""
    data = msg.data
    if msg.shared:
        # The views would outlive the slot: copy them out and give the slot back now.
        data = bytes(data)
        msg.release()
    return messages_like(msg, unpack_chunks(data), msg.seq, Status.STREAM_CHUNK)


class StreamReceiver(ReplyWaiter):
    """Chunks of one streamed reply. Bounded by the credit window the requester grants."""

    def __init__(
        self,
        subject: str,
        links: Sequence[object] = (),
        cancel: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.subject = subject
        #: Tells a responder (control subject, direct link) to stop: for a batch we cannot
        #: split, after which the stream has ended and nothing else would tell it.
        self.cancel = cancel
        #: The direct links the stream request went out on.
        self.links = links
        self.state = _StreamState()
        #: The responder's control subject (credits, cancel), learnt from its first chunk.
        self.control = ""
        self._waiter: asyncio.Future[None] | None = None
        #: Extra responders that answered the same stream and must be told to stop.
        self.rivals: list[str] = []
        #: The direct link the stream's chunks come on (credits go back on it), if any.
        self.via: Any = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def sent_on(self) -> Sequence[object]:
        return self.links

    def deliver(self, msg: Msg) -> None:
        state = self.state
        if state.ended:
            return
        if msg.reply:
            if not self.control:
                self.control = msg.reply
                self.via = msg._via
            elif msg.reply != self.control:
                # Several responders took the stream; the first one keeps it.
                if msg.reply not in self.rivals:
                    self.rivals.append(msg.reply)
                return
        if msg.status == Status.STREAM_CHUNK:
            state.queue.append(msg)
        elif msg.status == Status.STREAM_CHUNKS:
            try:
                state.queue.extend(_split_batch(msg))
            except RemoteProtocolError as exc:
                state.error = RemoteProtocolError(exc.message, subject=self.subject)
                state.ended = True
                if msg.reply and self.cancel is not None:
                    self.cancel(msg.reply, msg._via)  # it would go on sending
        elif msg.status == Status.STREAM_END:
            state.ended = True
        else:
            error = msg.error
            state.error = _named(error, self.subject) if error is not None else FabricError(
                f"unexpected reply status {msg.status} in a stream", subject=self.subject
            )
            state.ended = True
        self._wake()

    def fail(self, exc: FabricError) -> None:
        if not self.state.ended:
            self.state.error = exc
            self.state.ended = True
            self._wake()

    async def next(self, deadline: float) -> Msg | None:
        """The next chunk, or None at the end of the stream.

        Raises:
            Timeout: at the deadline. The responder's error, or ConnectionLost, as raised.
        """
        state = self.state
        while True:
            if state.queue:
                return state.queue.popleft()
            if state.ended:
                if state.error is not None:
                    raise state.error
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise Timeout(
                    "stream did not finish before its deadline", subject=self.subject
                ) from None
            finally:
                self._waiter = None


class CreditGate(ReplyWaiter):
    """Responder side of a stream: credits granted by the requester, or its cancel."""

    def __init__(self, subject: str, credit: int) -> None:
        self.subject = subject
        self.credit = credit
        self.cancelled = False
        #: Called when the requester cancels, so a generator stuck in its own await stops
        #: at once rather than at its next chunk.
        self.on_cancel: Callable[[], object] | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: The direct link the stream request came in on (credits come back on it).
        self.links: Sequence[object] = ()

    def sent_on(self) -> Sequence[object]:
        return self.links

    def deliver(self, msg: Msg) -> None:
        if msg.status == Status.STREAM_CREDIT:
            self.credit += msg.seq
        elif msg.status == Status.CANCELLED and not self.cancelled:
            self.cancelled = True
            if self.on_cancel is not None:
                self.on_cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def fail(self, exc: FabricError) -> None:
        self.cancelled = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def reader_gone(self) -> None:
        """The direct link the stream was read on closed: nobody can grant or cancel any
        more, so stop as a cancel would (at once, even mid-await in the generator)."""
        if not self.cancelled:
            self.cancelled = True
            if self.on_cancel is not None:
                self.on_cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take(self, deadline: float | None) -> None:
        """Wait for one credit.

        Raises:
            Cancelled: the requester went away. Timeout: the deadline passed.
        """
        while not self.cancelled and self.credit <= 0:
            self._waiter = asyncio.get_running_loop().create_future()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise Timeout("requester granted no credit before the deadline") from None
            finally:
                self._waiter = None
        if self.cancelled:
            raise Cancelled("the requester cancelled the stream", subject=self.subject)
        self.credit -= 1
