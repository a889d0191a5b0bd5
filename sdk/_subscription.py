"""``Subscription``: an async iterator of ``Msg`` with a bounded buffer."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fabric.errors import ConnectionLost, FabricError, SlowConsumer

from ._msg import Msg

if TYPE_CHECKING:
    from ._core import AgentCore

__all__ = ["Subscription"]

#: Messages buffered for a reader before newer ones are dropped.
DEFAULT_PENDING_LIMIT = 65_536


class Subscription:
    """Interest in a subject pattern. Iterate it, or give a callback when subscribing.

    Memory is bounded: past ``pending_limit`` buffered messages, new ones are dropped and
    counted, and the next read raises ``SlowConsumer`` once (then reading goes on). The node
    does the same when the agent as a whole falls behind (its link's backlog passes the
    node's ``slow_consumer_bytes``): it drops, counts, and tells; the drop shows here the
    same way. ``SlowConsumer.lost`` says how many messages were lost since the last report.
    """

    def __init__(
        self,
        core: AgentCore,
        sid: int,
        subject: str,
        queue: str,
        *,
        callback: Callable[[Msg], Awaitable[None] | None] | None = None,
        pending_limit: int = DEFAULT_PENDING_LIMIT,
    ) -> None:
        self._core = core
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.callback = callback
        self._pending: deque[Msg] = deque()
        self._pending_limit = pending_limit
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        #: Messages dropped because the reader fell behind.
        self.dropped = 0
        self._dropped_reported = 0
        #: Messages delivered to this subscription.
        self.delivered = 0
        #: Why the node refused this subscription (``NotAuthorized``), or None.
        self.refusal: FabricError | None = None

    def __repr__(self) -> str:
        queue = f" queue={self.queue!r}" if self.queue else ""
        return f"<Subscription {self.subject!r}{queue} sid={self.sid}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _deliver(self, msg: Msg) -> None:
        self.delivered += 1
        if len(self._pending) >= self._pending_limit:
            self.dropped += 1
            self._core.stats.dropped += 1
            return
        self._pending.append(msg)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _lost(self, count: int) -> None:
        """The node dropped ``count`` deliveries for us."""
        self.dropped += count
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _refuse(self, error: FabricError) -> None:
        self.refusal = error
        self._close_local()

    def _close_local(self) -> None:
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Msg:
        if self._pending and self.dropped == self._dropped_reported:
            return self._pending.popleft()  # ``next``'s first answer, without its coroutine
        return await self.next()

    async def next(self, timeout: float | None = None) -> Msg:
        """The next message.

        Raises:
            NotAuthorized: the node refused the subscription (every read, from then on).
            StopAsyncIteration: once the subscription is closed and drained.
            SlowConsumer: once after messages were dropped (reading may go on).
            Timeout: when ``timeout`` passes first.
        """
        from fabric.errors import Timeout

        while True:
            if self.dropped > self._dropped_reported:
                lost = self.dropped - self._dropped_reported
                self._dropped_reported = self.dropped
                raise SlowConsumer(
                    f"{lost} messages dropped: this reader fell behind",
                    subject=self.subject,
                    lost=lost,
                )
            if self._pending:
                return self._pending.popleft()
            if self.refusal is not None:
                raise self.refusal
            if self._closed:
                raise StopAsyncIteration
            self._waiter = self._core.loop.create_future()
            try:
                if timeout is None:
                    # Not through wait_for: it asks for the running loop (a getpid() syscall
                    # on Python 3.11) and wraps the wait, per message.
                    await self._waiter
                else:
                    await asyncio.wait_for(self._waiter, timeout)
            except TimeoutError:
                raise Timeout("no message before the timeout", subject=self.subject) from None
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        """Stop receiving; buffered messages can still be read. Idempotent."""
        if self._closed:
            return
        self._close_local()
        try:
            await self._core.unsubscribe(self)
        except (ConnectionLost, FabricError):
            pass  # the node forgets our interest when the link drops anyway

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
