"""Deadlines that travel: a request made while handling a message inherits what is left."""

from __future__ import annotations

import time
from contextvars import ContextVar

__all__ = ["current_deadline", "effective_deadline", "timeout_ms"]

#: Absolute ``time.monotonic()`` deadline of the message being handled, if any.
current_deadline: ContextVar[float | None] = ContextVar("fabric_deadline", default=None)


def effective_deadline(timeout: float | None, default: float) -> float:
    """The earlier of ``now + timeout`` and the inherited deadline."""
    own = time.monotonic() + (default if timeout is None else timeout)
    inherited = current_deadline.get()
    return own if inherited is None else min(own, inherited)


def timeout_ms(deadline: float | None) -> int:
    """What is left of ``deadline``, in whole milliseconds for the wire (at least 1)."""
    if deadline is None:
        return 0
    return max(1, int((deadline - time.monotonic()) * 1000))
