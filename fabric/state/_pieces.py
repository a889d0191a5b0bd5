"""A migrating agent's state carried between hosts in pieces, never whole in one frame.

Two ``$state.*`` operations (``StateService`` hands them here):

- ``read`` ``{key, offset, length}``: answered ``{size, version, fence}`` and the bytes
  ``[offset, offset + length)`` of the value, a slice of the stored bytes (no copy);
- ``restore_piece`` ``{key, size, offset, version, fence}`` and the piece's bytes: the
  pieces of one value come in order; each is written straight into the memfd that will hold
  the value (one copy, from the frame into it, which no design can avoid on the receiving
  host). After the last one the memfd is sealed for good (``BLOB_SEALS``) and the store keeps
  a read-only view of it, no further copy (``EmbeddedBackend.adopt_sealed``, durable as a
  ``restore``); answered ``{version}``, earlier pieces ``{received}``.

Memory stays bounded: the node holds the value being assembled (its final memory, not an
extra copy), the agent one or two pieces at a time. A value being assembled belongs to the
session sending it and is dropped if that session ends before the last piece.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from typing import Any

from ..errors import BackendUnavailable, PayloadTooLarge, RemoteProtocolError, StateError
from ..shm import BLOB_SEALS, SealedMapping
from ._backend import StateBackend
from ._embedded import EmbeddedBackend

__all__ = ["PIECE_OPS", "StatePieces"]

PIECE_OPS = frozenset({"read", "restore_piece"})

Reply = tuple[dict[str, str], Any]


@dataclass(slots=True)
class _Assembly:
    """One value being assembled: its memfd (unsealed until complete) and progress."""

    holder: str
    fd: int
    size: int
    version: int
    fence: int
    received: int = 0

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _ints(headers: dict[str, str], *names: str) -> list[int]:
    try:
        return [int(headers[n]) for n in names]
    except (KeyError, ValueError):
        raise RemoteProtocolError(f"a state piece needs integer headers {names}") from None


class StatePieces:
    """``read`` and ``restore_piece`` for one node's store."""

    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend
        self._assemblies: dict[str, _Assembly] = {}

    async def call(
        self, op: str, key: str, holder: str, headers: dict[str, str], payload: Any
    ) -> Reply:
        """Raises:
        RemoteProtocolError: malformed or out-of-order piece. StateError: the backend
            cannot adopt keys, or what it refused with.
        """
        if op == "read":
            return await self._read(key, headers)
        return await self._restore_piece(key, holder, headers, payload)

    async def _read(self, key: str, headers: dict[str, str]) -> Reply:
        offset, length = _ints(headers, "offset", "length")
        if offset < 0 or length <= 0:
            raise RemoteProtocolError("a state read needs offset >= 0 and length > 0")
        stored, version = await self.backend.get(key)
        value = memoryview(stored)
        fence = getattr(self.backend, "fence", None)
        reply = {"size": str(value.nbytes), "version": str(version)}
        if fence is not None:
            reply["fence"] = str(fence(key))
        return reply, value[offset : offset + length]

    async def _restore_piece(
        self, key: str, holder: str, headers: dict[str, str], payload: Any
    ) -> Reply:
        backend = self.backend
        if not isinstance(backend, EmbeddedBackend):
            raise StateError("this node's state backend cannot adopt keys", key=key)
        size, offset, version, fence = _ints(headers, "size", "offset", "version", "fence")
        piece = memoryview(payload).cast("B")
        if size <= 0 or version < 1 or offset + piece.nbytes > size:
            raise RemoteProtocolError("a state piece lies outside its value")
        # Everything up to the write is synchronous, so pieces are taken in the order their
        # frames arrived.
        assembly = self._assemblies.get(key)
        if offset == 0:
            if assembly is not None:
                self._drop(key)
            limit = backend.store.max_value_bytes
            if size > limit:
                raise PayloadTooLarge(subject=key, size=size, limit=limit)
            assembly = _Assembly(holder, _memfd(key, size), size, version, fence)
            self._assemblies[key] = assembly
        elif (
            assembly is None
            or assembly.holder != holder
            or (assembly.size, assembly.version, assembly.received) != (size, version, offset)
        ):
            self._drop(key)
            raise RemoteProtocolError(f"state piece at {offset} of {key!r} is out of order")
        try:
            done = 0
            while done < piece.nbytes:
                done += os.pwrite(assembly.fd, piece[done:], offset + done)
        except OSError as exc:
            self._drop(key)
            raise BackendUnavailable(f"cannot hold the state of {key!r}: {exc}") from exc
        assembly.received += piece.nbytes
        if assembly.received < size:
            return {"received": str(assembly.received)}, b""
        del self._assemblies[key]
        try:
            fcntl.fcntl(assembly.fd, fcntl.F_ADD_SEALS, BLOB_SEALS)
            mapping = SealedMapping(assembly.fd, size)
        except BaseException:
            assembly.close()
            raise
        await backend.adopt_sealed(key, mapping, assembly.fd, version=version, fence=fence)
        return {"version": str(version)}, b""

    def _drop(self, key: str) -> None:
        assembly = self._assemblies.pop(key, None)
        if assembly is not None:
            assembly.close()

    def session_closed(self, holder: str) -> None:
        """Drop the values a gone session had not finished sending."""
        for key in [k for k, a in self._assemblies.items() if a.holder == holder]:
            self._drop(key)


def _memfd(key: str, size: int) -> int:
    """A memfd of ``size`` bytes, not sealed yet (``F_SEAL_WRITE`` is added once it is full).

    Raises:
        BackendUnavailable: memfd unavailable or out of memory.
    """
    try:
        fd: int = os.memfd_create("fabric-state", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError) as exc:
        raise BackendUnavailable(f"cannot hold the state of {key!r}: {exc}") from exc
    try:
        os.ftruncate(fd, size)
    except OSError as exc:
        os.close(fd)
        raise BackendUnavailable(f"cannot hold the state of {key!r}: {exc}") from exc
    return fd
