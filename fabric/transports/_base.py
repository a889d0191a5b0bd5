"""The seam between the fabric and its transports.

A link carries frames — ``(header, payload)`` pairs — in order, both ways. Receiving is
push-based (``LinkHandler.frame_received`` is called from the event loop as frames arrive)
rather than an awaitable ``receive()``: on the request path that saves a task switch per
message, which is measurable against a 30 µs wake-up.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Protocol

from typing_extensions import Buffer

from ..errors import ConnectionLost

__all__ = ["DEFAULT_LIMIT", "Link", "LinkHandler", "settle"]

#: Bytes a link may hold unsent before ``try_send`` refuses (the node's default
#: ``slow_consumer_bytes``; owners set ``Link.limit`` from their settings).
DEFAULT_LIMIT = 64 * 1024 * 1024


class LinkHandler(Protocol):
    """What a link reports to its owner."""

    def frame_received(self, header: bytes, payload: memoryview) -> None:
        """One whole frame arrived. Must not block; may call ``Link.send``."""

    def link_lost(self, exc: BaseException | None) -> None:
        """The link is gone (``exc`` is None for an orderly close). Called once."""


def settle(waiters: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    """Wake ``drain()`` waiters: with a result when the buffer emptied, with ``exc`` when the
    link closed. Shared by every transport's flow control."""
    for waiter in waiters:
        if not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)


class Link(abc.ABC):
    """One bidirectional, ordered frame link.

    Every transport keeps the same promises (``tests/transports/`` checks each one):

    - frames arrive whole and in order, whatever their size;
    - ``send`` never blocks and never drops: what the kernel or library will not take yet is
      held, and ``buffered()`` counts it, byte for byte;
    - ``try_send`` refuses (False) once more than ``limit`` bytes are held: a slow consumer
      costs bounded memory, and the owner decides what a refusal means (count, tell);
    - after ``close()`` the link's own handler hears ``link_lost`` once, and ``send``
      raises ``ConnectionLost``.
    """

    handler: LinkHandler | None = None
    #: What the link runs over, for per-transport counters: "unix", "tcp", "webrtc".
    transport: str = "?"
    #: Bytes held unsent past which ``try_send`` refuses.
    limit: int = DEFAULT_LIMIT

    @abc.abstractmethod
    def send(self, header: bytes, payload: Buffer = b"") -> None:
        """Queue one frame without blocking (``drain`` applies backpressure).

        Raises:
            ConnectionLost: when the link is closed.
        """

    def try_send(self, header: bytes, payload: Buffer = b"") -> bool:
        """Send unless the link is closed or holds more than ``limit`` bytes unsent.

        Returns whether the frame was taken; a refusal is the caller's to count.
        """
        if self.closed or self.buffered() > self.limit:
            return False
        try:
            self.send(header, payload)
        except ConnectionLost:
            return False
        return True

    @abc.abstractmethod
    def buffered(self) -> int:
        """Bytes queued for sending and not yet taken by the kernel."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until the send buffer is below its high-water mark.

        Raises:
            ConnectionLost: when the link closes while waiting.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the link; ``handler.link_lost(None)`` follows. Idempotent."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether the link can no longer send."""

    @property
    def peer(self) -> str:
        """A printable description of the other end."""
        return "?"
