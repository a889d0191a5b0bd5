"""The default backend: the pure ``StateStore`` hosted in the node's process.

A thin asyncio adapter: it reads ``time.monotonic()`` and feeds it to the store as ``now``.
The node serves it to its agents over the agent socket; agents never import it.

It is also the node's ``BlobHost``: a blob an agent on this host shares through the pool
socket stays in the sealed memfd the agent wrote, and the store keeps a read-only view of the
node's mapping of it (no copy). Agents on the host that open it get a duplicate of that fd and
map the same pages. A blob shared as bytes (over CONTROL, by a remote agent) is moved into a
memfd the first time an agent on the host opens it that way. The fd and the node's mapping
are let go when the store frees the blob.

Given a ``path``, it is durable (``_durable.py``): every write that changes a value, a version
or a lease is committed to that file before it is acknowledged, and a backend opened on the
same file after a crash starts from what was committed, so versions and fencing tokens never
go back. A read of a key waits for the write to it still being committed, so nobody reads a
value that a crash could still take back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackendUnavailable, ConfigError, NotFound
from ..shm import SealedMapping, create_blob
from ._durable import DurableFile, LeaseRow, Sync, ValueRow, mono_deadline, wall_deadline
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


@dataclass(slots=True)
class _Sealed:
    """A blob held in a sealed memfd: the node's fd (to hand out) and read-only mapping."""

    fd: int
    mapping: SealedMapping

    def close_fd(self) -> None:
        # Idempotent: closing a number twice could close an fd reused by someone else.
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.close_fd()
        # Views of the mapping still alive (a reply being sent) keep it mapped; it is unmapped
        # when the last one goes, so no view ever points at unmapped memory.
        with contextlib.suppress(BufferError):
            self.mapping.close()


class EmbeddedBackend:
    """``StateBackend`` over an in-process ``StateStore``, on the monotonic clock."""

    def __init__(
        self,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
        clock: Callable[[], float] = time.monotonic,
        path: Path | None = None,
        sync: Sync = "always",
    ) -> None:
        """A store in this process; durable in the SQLite file ``path`` when one is given.

        Raises:
            BackendUnavailable: ``path`` cannot be opened or read.
        """
        self.store = StateStore(
            max_value_bytes=max_value_bytes,
            max_blob_bytes=max_blob_bytes,
            on_blob_freed=self._blob_freed,
        )
        self._clock = clock
        self._closed = False
        #: Blobs kept in sealed memfds, by ref.
        self._sealed: dict[str, _Sealed] = {}
        #: Private values kept in sealed memfds (handed over by a migration), by key; an
        #: entry whose mapping is no longer the key's value is closed on the next change.
        self._sealed_values: dict[str, _Sealed] = {}
        #: The durable copy, or None for a store that lives only as long as the process.
        self._file: DurableFile | None = None
        #: Per key, the commit still under way of its latest change (reads wait for it).
        self._pending: dict[str, asyncio.Future[list[None]]] = {}
        if path is not None:
            self._file = DurableFile(path, sync)
            self._load(self._file)

    def _load(self, file: DurableFile) -> None:
        now = self._clock()
        try:
            for row in file.load():
                if isinstance(row, ValueRow):
                    self.store.load(row.key, row.value, row.version)
                else:
                    deadline = mono_deadline(row.deadline, now)
                    self.store.leases.load(row.key, row.fence, row.owner, deadline)
        except Exception as exc:  # sqlite3.Error, or a row of the wrong type: a foreign file
            file.close()
            raise BackendUnavailable(f"cannot read the state file {file.path}: {exc}") from exc

    def _now(self) -> float:
        if self._closed:
            raise BackendUnavailable("the embedded state backend is closed")
        return self._clock()

    async def _save(
        self, keys: list[str], *, value: bool, lease: bool, link_fd: int | None = None
    ) -> None:
        """Commit the current rows of ``keys`` (their value, their lease) before returning.
        ``link_fd``: another store's file of the first key's value, to link (and close).

        Raises:
            BackendUnavailable: the commit failed; the store refuses every call after it.
        """
        file = self._file
        if file is None or not keys:
            if link_fd is not None:
                os.close(link_fd)
            return
        now = self._clock()
        futures = []
        try:
            for key in keys:
                if value:
                    data, version = self.store.snapshot(key)
                    fd, link_fd = (link_fd, None) if data is not None else (None, link_fd)
                    futures.append(file.submit(ValueRow(key, version, data, fd)))
                if lease:
                    fence, owner, deadline = self.store.leases.snapshot(key)
                    row = LeaseRow(key, fence, owner, wall_deadline(deadline, now))
                    futures.append(file.submit(row))
        except BackendUnavailable:
            self._closed = True
            raise
        finally:
            if link_fd is not None:
                os.close(link_fd)
        done = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        for key in keys:
            self._pending[key] = done
        try:
            # Shielded: a caller that gives up still leaves the commit (and later readers)
            # waiting for the real outcome.
            await asyncio.shield(done)
        except BackendUnavailable:
            # What is in memory may now be ahead of the file: serve nothing more.
            self._closed = True
            raise
        finally:
            for key in keys:
                if self._pending.get(key) is done:
                    del self._pending[key]

    async def _settled(self, key: str) -> None:
        pending = self._pending.get(key)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)

    async def put(
        self, key: str, value: BytesLike, *, expect: int | None = None, token: int | None = None
    ) -> int:
        """See ``StateBackend.put``."""
        version = self.store.put(key, value, expect=expect, token=token, now=self._now())
        self._unseal_stale(key)
        await self._save([key], value=True, lease=False)
        return version

    async def restore(self, key: str, value: BytesLike, *, version: int, fence: int) -> None:
        """Adopt a migrating agent's key (see ``StateStore.restore``)."""
        self.store.restore(key, value, version=version, fence=fence, now=self._now())
        self._unseal_stale(key)
        await self._save([key], value=True, lease=True)

    async def export_sealed(self, key: str) -> tuple[int, int, int, int]:
        """``key``'s value as a sealed memfd, for a migration on this host: ``(fd, size,
        version, fence)``, the fd a duplicate for the caller to close. A value not yet in a
        memfd is copied into one once (in a thread) and kept there from then on. The value
        is committed (``durable_fd`` can then give its file).

        Raises:
            NotFound: the key holds no value. ValueError: the value is empty.
            BackendUnavailable: closed, or no memory for the memfd.
        """
        await self._settled(key)
        self._now()
        value, version = self.store.get(key)
        sealed = self._sealed_values.get(key)
        if sealed is None or value.obj is not sealed.mapping:
            try:
                fd = await asyncio.to_thread(create_blob, "fabric-state", value)
            except ConfigError as exc:
                raise BackendUnavailable(f"cannot put {key} in shared memory: {exc}") from exc
            sealed = _Sealed(fd, SealedMapping(fd, value.nbytes))
            current, _ = self.store.snapshot(key)
            if current is not value:
                # Changed while we copied: this memfd holds the version read, for this
                # export only.
                try:
                    return os.dup(fd), value.nbytes, version, self.store.leases.fence(key)
                finally:
                    sealed.close()
            # The same bytes, now in the memfd: the store lets go of its copy.
            self.store.load(key, memoryview(sealed.mapping), version)
            self._sealed_values[key] = sealed
        return os.dup(sealed.fd), sealed.mapping.size(), version, self.store.leases.fence(key)

    def durable_fd(self, key: str, version: int) -> int | None:
        """A read-only fd of the file that keeps ``key`` at ``version`` durable, for the new
        node to link instead of writing the bytes again; None when there is none (memory
        mode, a small value kept in its row, a newer version meanwhile)."""
        return None if self._file is None else self._file.open_value(key, version)

    async def adopt_sealed(
        self,
        key: str,
        mapping: SealedMapping,
        fd: int,
        *,
        version: int,
        fence: int,
        durable_fd: int | None = None,
    ) -> None:
        """``restore``, the value being a sealed memfd handed over on this host: the store
        keeps a view of ``mapping``, no copy. ``durable_fd``, the old node's file of this
        value, is linked into this store's directory instead of writing the bytes (when it
        checks out, ``_valuefiles.py``). Takes ownership of ``mapping``, ``fd`` and
        ``durable_fd``.

        Raises:
            As ``restore``.
        """
        sealed = _Sealed(fd, mapping)
        try:
            self.store.restore(
                key, memoryview(mapping), version=version, fence=fence, now=self._now()
            )
        except BaseException:
            sealed.close()
            if durable_fd is not None:
                os.close(durable_fd)
            raise
        old = self._sealed_values.pop(key, None)
        if old is not None:
            old.close()
        self._sealed_values[key] = sealed
        await self._save([key], value=True, lease=True, link_fd=durable_fd)

    def _unseal_stale(self, key: str) -> None:
        sealed = self._sealed_values.get(key)
        if sealed is None:
            return
        current, _ = self.store.snapshot(key)
        if current is None or current.obj is not sealed.mapping:
            del self._sealed_values[key]
            sealed.close()

    def fence(self, key: str) -> int:
        """The last fencing token issued for ``key``."""
        return self.store.leases.fence(key)

    async def get(self, key: str) -> tuple[memoryview, int]:
        """See ``StateBackend.get``."""
        await self._settled(key)
        self._now()
        return self.store.get(key)

    async def delete(
        self, key: str, *, expect: int | None = None, token: int | None = None
    ) -> None:
        """See ``StateBackend.delete``."""
        self.store.delete(key, expect=expect, token=token, now=self._now())
        self._unseal_stale(key)
        await self._save([key], value=True, lease=False)

    async def acquire(self, key: str, owner: str, ttl: float) -> Lease:
        """See ``StateBackend.acquire``."""
        now = self._now()
        # Lazy expiry is already correct; this only keeps the table from growing owners.
        self.store.leases.expire(now=now)
        lease = self.store.acquire(key, owner, ttl, now=now)
        await self._save([key], value=False, lease=True)
        return lease

    async def renew(self, lease: Lease, ttl: float) -> Lease:
        """See ``StateBackend.renew``."""
        renewed = self.store.renew(lease, ttl, now=self._now())
        await self._save([lease.key], value=False, lease=True)
        return renewed

    async def release(self, lease: Lease) -> bool:
        """See ``StateBackend.release``."""
        released = self.store.release(lease, now=self._now())
        if released:
            await self._save([lease.key], value=False, lease=True)
        return released

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

    async def share_sealed(self, mapping: SealedMapping, fd: int, holder: str) -> str:
        """See ``BlobHost.share_sealed`` (``fabric.shm``)."""
        sealed = _Sealed(fd, mapping)
        kept = False
        view = memoryview(mapping)
        try:
            self._now()
            check_size(view, self.store.max_blob_bytes, "blob")
            # The node hashes the bytes itself: the address is never the agent's word.
            ref = await asyncio.to_thread(blob_ref, view)
            if ref not in self._sealed:
                with contextlib.suppress(NotFound):
                    # Stored as bytes so far: keep the memfd instead, it can be mapped.
                    self.store.adopt_blob(ref, view)
            self.store.share(view, holder, ref=ref)  # stores a view only if the ref is new
            if ref not in self._sealed:
                self._sealed[ref] = sealed
                kept = True
            return ref
        finally:
            # The store keeps a view of its own; a hashing thread cut short by a timeout
            # may still read ours, and then the mapping goes with its last view.
            with contextlib.suppress(BufferError):
                view.release()
            if not kept:
                sealed.close()

    async def open_sealed(
        self, ref: str, holder: str, *, min_size: int
    ) -> tuple[int, int] | None:
        """See ``BlobHost.open_sealed`` (``fabric.shm``)."""
        self._now()
        data = self.store.blob_data(ref)
        if ref not in self._sealed:
            if data.nbytes < max(min_size, 1):
                return None
            await self._move_to_memfd(ref, data)
        self.store.open_blob(ref, holder)  # NotFound if freed while we copied
        sealed = self._sealed[ref]
        return os.dup(sealed.fd), sealed.mapping.size()

    async def _move_to_memfd(self, ref: str, data: memoryview) -> None:
        try:
            fd = await asyncio.to_thread(create_blob, "fabric-blob", data)
        except ConfigError as exc:
            raise BackendUnavailable(f"cannot put blob {ref} in shared memory: {exc}") from exc
        try:
            sealed = _Sealed(fd, SealedMapping(fd, data.nbytes))
        except BaseException:
            os.close(fd)
            raise
        try:
            current = self.store.blob_data(ref)
        except NotFound:
            sealed.close()
            raise
        if ref in self._sealed or current.nbytes != data.nbytes:
            sealed.close()  # another open moved it meanwhile
            return
        self.store.adopt_blob(ref, memoryview(sealed.mapping))
        self._sealed[ref] = sealed

    def _blob_freed(self, ref: str, data: memoryview) -> None:
        sealed = self._sealed.get(ref)
        if sealed is not None and data.obj is sealed.mapping:
            del self._sealed[ref]
            del data
            sealed.close()

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
        now = self._now()
        leased = self.store.leases.owned_by(holder, now=now)
        dropped = self.store.drop_holder(holder, now=now)
        await self._save(leased, value=False, lease=True)
        return dropped

    async def stats(self) -> StateStats:
        """See ``StateBackend.stats``."""
        self._now()
        return self.store.stats()

    async def aclose(self) -> None:
        """Refuse further calls (``BackendUnavailable``); the data stays for inspection, but
        the fds of blobs in memfds are closed (their mappings stay while the store does)."""
        self._closed = True
        for sealed in (*self._sealed.values(), *self._sealed_values.values()):
            sealed.close_fd()
        if self._file is not None:
            file, self._file = self._file, None
            await asyncio.to_thread(file.close)
