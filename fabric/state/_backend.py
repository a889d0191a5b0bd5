"""The seam every state backend implements (the node talks to this, never to a backend)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._types import BytesLike, HolderDropped, Lease, StateStats

__all__ = ["StateBackend"]


@runtime_checkable
class StateBackend(Protocol):
    """Private versioned values under leases, and shared content-addressed blobs.

    Semantics are fixed by ``StateStore`` and ``LeaseTable`` (see their module docstrings) and
    held by ``tests/state/test_conformance.py`` for every backend. Every method may also raise
    ``BackendUnavailable`` when the backend cannot be reached; for a write that timed out after
    it was sent, the outcome is unknown (read the key back to learn it).
    """

    async def put(
        self,
        key: str,
        value: BytesLike,
        *,
        expect: int | None = None,
        token: int | None = None,
    ) -> int:
        """Store ``value`` under ``key`` and return its new version.

        ``expect=None`` writes unconditionally, ``expect=0`` only creates, ``expect=n`` only
        replaces version ``n``. A key that was ever leased needs the live lease's ``token``.

        Raises:
            Conflict: the current version is not ``expect``.
            Fenced: the token is missing, stale or never issued for a lease-guarded key.
            LeaseExpired: the token is the latest one but its lease ran out or was released.
            PayloadTooLarge: the value exceeds the backend's limit.
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def get(self, key: str) -> tuple[memoryview | bytes, int]:
        """Return ``(value, version)``.

        Raises:
            NotFound: the key holds no value.
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def delete(
        self, key: str, *, expect: int | None = None, token: int | None = None
    ) -> None:
        """Remove the value of ``key``; later versions keep counting up from the last one.

        Raises:
            NotFound: the key holds no value.
            Conflict, Fenced, LeaseExpired, BackendUnavailable: as for ``put``.
        """
        ...

    async def acquire(self, key: str, owner: str, ttl: float) -> Lease:
        """Lease ``key`` to ``owner`` for ``ttl`` seconds with a fresh, larger fencing token.

        The same owner acquiring again takes over from its previous lease (whose token is
        then stale).

        Raises:
            LeaseHeld: another owner holds a live lease on the key.
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def renew(self, lease: Lease, ttl: float) -> Lease:
        """Extend a live lease to ``ttl`` seconds from now; the token does not change.

        Raises:
            Fenced: a newer lease was granted since.
            LeaseExpired: the lease ran out or was released and nobody took over.
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def release(self, lease: Lease) -> bool:
        """End ``lease`` if it is the live one; return whether it was (a stale one is a no-op).

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def share(self, data: BytesLike, holder: str) -> str:
        """Store ``data`` once and add a hold for ``holder``; return its reference (SHA-256 hex).

        Raises:
            PayloadTooLarge: the blob exceeds the backend's limit.
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def open_blob(self, ref: str, holder: str) -> memoryview | bytes:
        """Add a hold on blob ``ref`` for ``holder`` and return its bytes (never write to them).

        Raises:
            NotFound: no blob has this reference.
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def drop_blob(self, ref: str, holder: str) -> None:
        """Remove one hold of ``holder``; the blob is freed when its last hold goes.

        Raises:
            NotFound: ``holder`` has no hold on ``ref``.
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def drop_holder(self, holder: str) -> HolderDropped:
        """Release every blob hold and live lease of ``holder`` (an agent that vanished).

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def stats(self) -> StateStats:
        """Private and blob bytes, and bytes saved by sharing.

        Raises:
            BackendUnavailable: the backend cannot be reached.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; the backend is unusable afterwards. Never raises."""
        ...
