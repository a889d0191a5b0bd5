"""The agent's inbox: one subject root, one number per exchange, one waiter per number.

Each agent subscribes once to ``<inbox>.>``; every request, gather or stream takes a number
and gets the reply subject ``<inbox>.<n>``. A reply whose number has no waiter any more is
late: the caller drops and counts it.
"""

from __future__ import annotations

import os

from fabric.errors import FabricError
from fabric.private import inbox_root

from ._replies import ReplyWaiter

__all__ = ["Inbox"]


class Inbox:
    """The reply registry of one agent."""

    __slots__ = ("_len", "_next", "subject", "waiters")

    def __init__(self, name: str) -> None:
        # Under the name's inbox root: the node lets only this name read it (fabric/private.py).
        self.subject = f"{inbox_root(name)}.{os.urandom(9).hex()}"
        self._len = len(self.subject) + 1
        self._next = 0
        #: Waiters by exchange number.
        self.waiters: dict[int, ReplyWaiter] = {}

    @property
    def pattern(self) -> str:
        """What the agent subscribes to (subscription id 0)."""
        return f"{self.subject}.>"

    def new(self, waiter: ReplyWaiter) -> tuple[int, str]:
        """Register ``waiter`` under a fresh number; returns it and its reply subject."""
        self._next += 1
        n = self._next
        self.waiters[n] = waiter
        return n, f"{self.subject}.{n}"

    def put(self, n: int, waiter: ReplyWaiter) -> None:
        """Put another waiter under an existing number (a stream's canceller)."""
        self.waiters[n] = waiter

    def pop(self, n: int) -> None:
        """Forget number ``n``: whatever still arrives for it is late."""
        self.waiters.pop(n, None)

    def waiter_for(self, subject: str) -> ReplyWaiter | None:
        """The waiter a reply subject belongs to (None: late, or not our inbox)."""
        if not subject.startswith(self.subject):
            return None
        try:
            return self.waiters.get(int(subject[self._len :]))
        except ValueError:
            return None

    def fail_all(self, exc: FabricError) -> None:
        """Fail every exchange in flight (the link dropped, the agent closed)."""
        waiters, self.waiters = self.waiters, {}
        for waiter in waiters.values():
            waiter.fail(exc)
