"""The pooled memory tier's bookkeeping: private versioned values and shared blobs, no I/O.

Private values (rules; the fencing rules are in ``_lease.py``):

1. A key's *version* is 0 while it holds no value. Every successful ``put`` sets it to one
   more than the highest version the key ever had, so a version number is never reused, not
   even after ``delete`` (no ABA: a reader holding version 3 can never be fooled by a newer
   value that happens to be version 3 again).
2. ``expect=None`` writes unconditionally; ``expect=n`` writes only when the current version is
   ``n``, so ``expect=0`` means "create, only if absent". Otherwise ``Conflict``.
3. Fencing is checked before the version: a zombie writer learns it is fenced, not that it
   lost a race it should retry.
4. ``delete`` follows the same checks and needs the key to hold a value (``NotFound``).

Shared blobs:

5. A blob's reference is the SHA-256 hex digest of its bytes, so equal bytes share one copy
   whoever stores them. Each holder keeps a count of holds (``share`` and ``open_blob`` add
   one, ``drop_blob`` removes one); the blob is freed when no holder has a hold left.
6. ``drop_holder`` releases every hold and every live lease of a holder that vanished.

7. A blob's bytes may be moved to other memory holding the same bytes (``adopt_blob``: the
   node moves a blob into a sealed memfd so agents on its host can map it). Whenever stored
   blob bytes are let go of (freed, or replaced by ``adopt_blob``), ``on_blob_freed(ref,
   data)`` is called once with them, so a driver can close what backs them.

Values are kept without a copy when they are ``bytes``, a view over ``bytes``, or a read-only
view of a ``SealedMapping`` (a memfd sealed against writes: immutable by the kernel's word);
anything mutable is copied once, since the caller could change it under a reader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import Conflict, NotFound, StateError
from ..shm import SealedMapping
from ._lease import LeaseTable
from ._types import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    BytesLike,
    HolderDropped,
    Lease,
    StateStats,
    check_identity,
    check_key,
    check_size,
)

__all__ = ["StateStore", "blob_ref", "freeze"]


def blob_ref(data: BytesLike) -> str:
    """The content address of ``data``: its SHA-256 digest in lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def freeze(value: BytesLike) -> memoryview:
    """A read-only byte view of ``value``, copying only when the memory could still change."""
    if isinstance(value, bytes):
        return memoryview(value)
    if isinstance(value, memoryview) and value.c_contiguous and _immutable(value):
        # A fresh view, so a caller releasing theirs does not invalidate ours.
        return memoryview(value).cast("B")
    return memoryview(bytes(value))


def _immutable(view: memoryview) -> bool:
    # A SealedMapping can only be built over a memfd carrying F_SEAL_WRITE and is mapped
    # PROT_READ: no process can change those pages any more. A writable view of anything, or a
    # view of any other buffer (bytearray, a plain mmap), could still change under a reader.
    owner = view.obj
    return isinstance(owner, bytes) or (view.readonly and isinstance(owner, SealedMapping))


@dataclass(slots=True)
class _Blob:
    data: memoryview
    #: holder -> number of holds; never holds a zero (the entry is removed instead).
    holds: dict[str, int] = field(default_factory=dict)


class StateStore:
    """Private values with versions, CAS and fencing, plus reference-counted shared blobs.

    Every method that depends on time takes ``now``: monotonic seconds from the caller.
    """

    def __init__(
        self,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        on_blob_freed: Callable[[str, memoryview], None] | None = None,
    ) -> None:
        self.leases = LeaseTable()
        #: Called with a blob's bytes when the store lets go of them (rule 7).
        self.on_blob_freed = on_blob_freed
        self.max_value_bytes = max_value_bytes
        self.max_blob_bytes = max_blob_bytes
        self._values: dict[str, memoryview] = {}
        # Highest version each key ever had; kept after delete (rule 1).
        self._versions: dict[str, int] = {}
        self._private_bytes = 0
        self._blobs: dict[str, _Blob] = {}
        self._by_holder: dict[str, set[str]] = {}

    # --- private values ------------------------------------------------------------------

    def version(self, key: str) -> int:
        """The current version of ``key``: 0 when it holds no value."""
        return self._versions.get(key, 0) if key in self._values else 0

    def put(
        self,
        key: str,
        value: BytesLike,
        *,
        expect: int | None = None,
        token: int | None = None,
        now: float,
    ) -> int:
        """Store ``value`` under ``key``; return its new version.

        Raises:
            Fenced: the token is not the current one of a lease-guarded key (or one was given
                for a key never leased).
            LeaseExpired: the token's lease ran out or was released.
            Conflict: ``expect`` is not None and differs from the current version.
            PayloadTooLarge: the value exceeds ``max_value_bytes``.
            StateError: the key or value is malformed.
        """
        check_key(key)
        check_size(value, self.max_value_bytes, key)
        self.leases.check(key, token, now=now)
        self._expect(key, expect)
        frozen = freeze(value)
        old = self._values.get(key)
        self._private_bytes += frozen.nbytes - (old.nbytes if old is not None else 0)
        self._values[key] = frozen
        version = self._versions.get(key, 0) + 1
        self._versions[key] = version
        return version

    def restore(
        self, key: str, value: BytesLike, *, version: int, fence: int, now: float
    ) -> None:
        """Adopt a key handed over by another store (an agent migrating between nodes): its
        value and version, and a fencing floor, so versions continue and every token this
        store issues later is larger than any the old store issued.

        Raises:
            Conflict: this store already holds the key at a later version.
            PayloadTooLarge, StateError: as ``put``.
        """
        check_key(key)
        check_size(value, self.max_value_bytes, key)
        if version < 1 or fence < 0:
            raise StateError("restore needs a version of at least 1", key=key)
        if self._versions.get(key, 0) > version:
            raise Conflict(
                f"already at version {self._versions[key]}, newer than {version}", key=key
            )
        frozen = freeze(value)
        old = self._values.get(key)
        self._private_bytes += frozen.nbytes - (old.nbytes if old is not None else 0)
        self._values[key] = frozen
        self._versions[key] = version
        self.leases.raise_fence(key, fence)

    def snapshot(self, key: str) -> tuple[memoryview | None, int]:
        """``(value or None, highest version ever)`` of ``key``, for a durable copy."""
        return self._values.get(key), self._versions.get(key, 0)

    def load(self, key: str, value: BytesLike | None, version: int) -> None:
        """Rebuild ``key`` from a durable copy (a node restarting): its value, or none, and
        the highest version it ever had, so versions continue and are never reused (rule 1)."""
        old = self._values.pop(key, None)
        if old is not None:
            self._private_bytes -= old.nbytes
        if value is not None:
            frozen = freeze(value)
            self._values[key] = frozen
            self._private_bytes += frozen.nbytes
        self._versions[key] = max(self._versions.get(key, 0), version)

    def get(self, key: str) -> tuple[memoryview, int]:
        """Return ``(value, version)`` of ``key``; the view is read-only and not a copy.

        Raises:
            NotFound: the key holds no value.
        """
        value = self._values.get(key)
        if value is None:
            raise NotFound(key=key)
        return value, self._versions[key]

    def delete(
        self, key: str, *, expect: int | None = None, token: int | None = None, now: float
    ) -> None:
        """Remove the value of ``key`` (its version history is kept, rule 1).

        Raises:
            Fenced: as for ``put``.
            LeaseExpired: as for ``put``.
            NotFound: the key holds no value.
            Conflict: ``expect`` is not None and differs from the current version.
        """
        check_key(key)
        self.leases.check(key, token, now=now)
        if key not in self._values:
            raise NotFound(key=key)
        self._expect(key, expect)
        self._private_bytes -= self._values.pop(key).nbytes

    def _expect(self, key: str, expect: int | None) -> None:
        if expect is None:
            return
        current = self.version(key)
        if expect != current:
            raise Conflict(f"expected version {expect}, found {current}", key=key)

    # --- leases (thin: the rules live in LeaseTable) -------------------------------------

    def acquire(self, key: str, owner: str, ttl: float, *, now: float) -> Lease:
        """See ``LeaseTable.acquire``."""
        return self.leases.acquire(key, owner, ttl, now=now)

    def renew(self, lease: Lease, ttl: float, *, now: float) -> Lease:
        """See ``LeaseTable.renew``."""
        return self.leases.renew(lease, ttl, now=now)

    def release(self, lease: Lease, *, now: float) -> bool:
        """See ``LeaseTable.release``."""
        return self.leases.release(lease, now=now)

    # --- shared blobs --------------------------------------------------------------------

    def share(self, data: BytesLike, holder: str, *, ref: str | None = None) -> str:
        """Store ``data`` once (if not already stored), add a hold for ``holder``, return its ref.

        ``ref`` lets a driver pass ``blob_ref(data)`` computed off its event loop; it must be
        exactly that.

        Raises:
            PayloadTooLarge: the blob exceeds ``max_blob_bytes``.
            StateError: the holder or data is malformed.
        """
        check_identity(holder, "blob holder")
        check_size(data, self.max_blob_bytes, "blob")
        ref = ref if ref is not None else blob_ref(data)
        blob = self._blobs.get(ref)
        if blob is None:
            blob = self._blobs[ref] = _Blob(freeze(data))
        self._hold(ref, blob, holder)
        return ref

    def open_blob(self, ref: str, holder: str) -> memoryview:
        """Add a hold on blob ``ref`` for ``holder`` and return its bytes (read-only, no copy).

        Raises:
            NotFound: no blob has this reference (never stored, or freed).
            StateError: the holder is malformed.
        """
        check_identity(holder, "blob holder")
        blob = self._blobs.get(ref)
        if blob is None:
            raise NotFound(f"no blob {ref}", key=ref)
        self._hold(ref, blob, holder)
        return blob.data

    def blob_data(self, ref: str) -> memoryview:
        """The stored bytes of blob ``ref`` (read-only, no copy), without taking a hold.

        Raises:
            NotFound: no blob has this reference.
        """
        blob = self._blobs.get(ref)
        if blob is None:
            raise NotFound(f"no blob {ref}", key=ref)
        return blob.data

    def adopt_blob(self, ref: str, data: BytesLike) -> None:
        """Keep blob ``ref`` in ``data`` from now on: the same bytes in other memory.

        The caller vouches that ``data`` holds exactly the blob's bytes (it copied them, or
        hashed them itself); the old bytes go to ``on_blob_freed``. Holds are unchanged.

        Raises:
            NotFound: no blob has this reference.
            StateError: ``data`` has a different length.
        """
        blob = self._blobs.get(ref)
        if blob is None:
            raise NotFound(f"no blob {ref}", key=ref)
        frozen = freeze(data)
        if frozen.nbytes != blob.data.nbytes:
            raise StateError(
                f"blob {ref} has {blob.data.nbytes} bytes, not {frozen.nbytes}", key=ref
            )
        old, blob.data = blob.data, frozen
        self._freed(ref, old)

    def drop_blob(self, ref: str, holder: str) -> None:
        """Remove one hold of ``holder`` on ``ref``; free the blob when no hold is left.

        Raises:
            NotFound: ``holder`` has no hold on ``ref``.
        """
        blob = self._blobs.get(ref)
        count = blob.holds.get(holder, 0) if blob is not None else 0
        if blob is None or count == 0:
            raise NotFound(f"{holder!r} holds no reference to blob {ref}", key=ref)
        if count > 1:
            blob.holds[holder] = count - 1
            return
        self._unhold(ref, blob, holder)

    def drop_holder(self, holder: str, *, now: float) -> HolderDropped:
        """Release every hold and live lease of ``holder`` (an agent that vanished)."""
        refs = self._by_holder.get(holder, set()).copy()
        for ref in refs:
            self._unhold(ref, self._blobs[ref], holder)
        leases = self.leases.release_owner(holder, now=now)
        return HolderDropped(blobs=len(refs), leases=len(leases))

    def holds(self, ref: str, holder: str) -> int:
        """How many holds ``holder`` has on ``ref`` (0 if none or no such blob)."""
        blob = self._blobs.get(ref)
        return 0 if blob is None else blob.holds.get(holder, 0)

    def _hold(self, ref: str, blob: _Blob, holder: str) -> None:
        blob.holds[holder] = blob.holds.get(holder, 0) + 1
        self._by_holder.setdefault(holder, set()).add(ref)

    def _unhold(self, ref: str, blob: _Blob, holder: str) -> None:
        del blob.holds[holder]
        refs = self._by_holder[holder]
        refs.discard(ref)
        if not refs:
            del self._by_holder[holder]
        if not blob.holds:
            del self._blobs[ref]
            self._freed(ref, blob.data)

    def _freed(self, ref: str, data: memoryview) -> None:
        if self.on_blob_freed is not None:
            self.on_blob_freed(ref, data)

    # --- accounting ----------------------------------------------------------------------

    def stats(self) -> StateStats:
        """Bytes of private values and of blobs, and what sharing saved."""
        blob_bytes = sum(b.data.nbytes for b in self._blobs.values())
        held = sum(b.data.nbytes * len(b.holds) for b in self._blobs.values())
        return StateStats(
            keys=len(self._values),
            private_bytes=self._private_bytes,
            blobs=len(self._blobs),
            blob_bytes=blob_bytes,
            shared_saved_bytes=held - blob_bytes,
        )
