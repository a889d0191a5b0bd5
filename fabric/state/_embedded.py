"""The default backend: the pure ``StateStore`` hosted in the node's process.

A thin asyncio adapter: it reads ``time.monotonic()`` and feeds it to the store as ``now``.
The node serves it to its agents over the agent socket; agents never import it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..errors import BackendUnavailable
from ._store import StateStore, blob_ref, freeze
from ._types import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    BytesLike,
    HolderDropped,
    Lease,
    StateStats,
    check_size,
)

__all__ = ["EmbeddedBackend"]

#: Hashing runs in a thread above this size (hashlib releases the GIL), so sharing a 256 MiB
#: blob does not stall the node's event loop for the ~0.5 s SHA-256 takes.
_HASH_OFF_LOOP_BYTES = 1024 * 1024


class EmbeddedBackend:
    """``StateBackend`` over an in-process ``StateStore``, on the monotonic clock."""

    def __init__(
        self,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = StateStore(max_value_bytes=max_value_bytes, max_blob_bytes=max_blob_bytes)
        self._clock = clock
        self._closed = False

    def _now(self) -> float:
        if self._closed:
            raise BackendUnavailable("the embedded state backend is closed")
        return self._clock()

    async def put(
        self, key: str, value: BytesLike, *, expect: int | None = None, token: int | None = None
    ) -> int:
        """See ``StateBackend.put``."""
        return self.store.put(key, value, expect=expect, token=token, now=self._now())

    async def get(self, key: str) -> tuple[memoryview, int]:
        """See ``StateBackend.get``."""
        self._now()
        return self.store.get(key)

    async def delete(
        self, key: str, *, expect: int | None = None, token: int | None = None
    ) -> None:
        """See ``StateBackend.delete``."""
        self.store.delete(key, expect=expect, token=token, now=self._now())

    async def acquire(self, key: str, owner: str, ttl: float) -> Lease:
        """See ``StateBackend.acquire``."""
        now = self._now()
        # Lazy expiry is already correct; this only keeps the table from growing owners.
        self.store.leases.expire(now=now)
        return self.store.acquire(key, owner, ttl, now=now)

    async def renew(self, lease: Lease, ttl: float) -> Lease:
        """See ``StateBackend.renew``."""
        return self.store.renew(lease, ttl, now=self._now())

    async def release(self, lease: Lease) -> bool:
        """See ``StateBackend.release``."""
        return self.store.release(lease, now=self._now())

    async def share(self, data: BytesLike, holder: str) -> str:
        """See ``StateBackend.share``."""
        self._now()
        size = check_size(data, self.store.max_blob_bytes, "blob")
        if size <= _HASH_OFF_LOOP_BYTES:
            return self.store.share(data, holder)
        # Freeze first: the bytes hashed in the thread must be the bytes stored.
        frozen = freeze(data)
        ref = await asyncio.to_thread(blob_ref, frozen)
        return self.store.share(frozen, holder, ref=ref)

    async def open_blob(self, ref: str, holder: str) -> memoryview:
        """See ``StateBackend.open_blob``."""
        self._now()
        return self.store.open_blob(ref, holder)

    async def drop_blob(self, ref: str, holder: str) -> None:
        """See ``StateBackend.drop_blob``."""
        self._now()
        self.store.drop_blob(ref, holder)

    async def drop_holder(self, holder: str) -> HolderDropped:
        """See ``StateBackend.drop_holder``."""
        return self.store.drop_holder(holder, now=self._now())

    async def stats(self) -> StateStats:
        """See ``StateBackend.stats``."""
        self._now()
        return self.store.stats()

    async def aclose(self) -> None:
        """Refuse further calls (``BackendUnavailable``); the data stays for inspection."""
        self._closed = True
