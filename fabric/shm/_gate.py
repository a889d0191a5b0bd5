"""The asyncio face of ``SlotPool`` for the node: allocation that waits for a free slot when
the pool says ``when_full="wait"``. Thin on purpose; all rules live in the pure pool."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable

from ..errors import PoolExhausted
from ._descriptor import Descriptor
from ._pool import SlotPool
from ._settings import PoolSettings

__all__ = ["PoolGate"]


class PoolGate:
    """Route every pool call of the node through here so waiters wake when slots free up.

    Not thread-safe: one event loop owns it (the node's).
    """

    def __init__(self, pool: SlotPool, settings: PoolSettings) -> None:
        self.pool = pool
        self.settings = settings
        self._freed = asyncio.Event()
        self.waiting = 0

    async def allocate(
        self, owner: Hashable, size: int, *, max_wait: float | None = None
    ) -> Descriptor:
        """Allocate; when the class is full and the policy is ``"wait"``, wait up to
        ``max_wait`` seconds (default and cap: ``settings.max_wait``; pass the request's
        remaining deadline) for a free slot. With ``"copy"`` a full class fails at once.

        Raises:
            PoolExhausted: no slot came free in time (or at once, with ``"copy"``).
            PayloadTooLarge, RemoteProtocolError: as ``SlotPool.allocate``.
        """
        try:
            return self.pool.allocate(owner, size)
        except PoolExhausted:
            if self.settings.when_full == "copy":
                raise
        cap = self.settings.max_wait
        budget = cap if max_wait is None else max(0.0, min(max_wait, cap))
        self.waiting += 1
        try:
            async with asyncio.timeout(budget):
                while True:
                    await self._freed.wait()
                    try:
                        return self.pool.allocate(owner, size)
                    except PoolExhausted:
                        continue
        except TimeoutError:
            raise PoolExhausted(f"no free slot for {size} bytes within {budget:g} s") from None
        finally:
            self.waiting -= 1

    def publish(
        self, owner: Hashable, descriptor: Descriptor, receivers: Iterable[Hashable]
    ) -> int:
        """``SlotPool.publish``, waking waiters: the slot may be free again, and the owner
        has one unpublished slot fewer (its own cap may have been what it waited on)."""
        holds = self.pool.publish(owner, descriptor, receivers)
        self._wake()
        return holds

    def release(self, holder: Hashable, descriptor: Descriptor) -> bool:
        """``SlotPool.release``, waking waiters if the slot was freed."""
        freed = self.pool.release(holder, descriptor)
        if freed:
            self._wake()
        return freed

    def drop_holder(self, holder: Hashable) -> int:
        """``SlotPool.drop_holder``, waking waiters if anything was freed."""
        freed = self.pool.drop_holder(holder)
        if freed:
            self._wake()
        return freed

    def _wake(self) -> None:
        # Every waiter retries once per wake; a fresh Event for the next round means a waiter
        # that lost the race sleeps again instead of spinning.
        if self.waiting:
            self._freed.set()
            self._freed = asyncio.Event()
