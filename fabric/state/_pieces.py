"""A migrating agent's state carried between hosts in pieces, never whole in one frame.

Two ``$state.*`` calls (``STATE_READ`` and ``STATE_RESTORE_PIECE`` in fabric/protocol/;
``StateService`` hands them here):

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
from ..protocol import PieceAnswer, PieceRequest, ReadAnswer, ReadRequest
from ..shm import BLOB_SEALS, SealedMapping
from ._backend import StateBackend
from ._embedded import EmbeddedBackend

__all__ = ["StatePieces"]


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


class StatePieces:
    """``$state.read`` and ``$state.restore_piece`` for one node's store (keys already
    scoped by ``StateService``)."""

    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend
        self._assemblies: dict[str, _Assembly] = {}

    async def read(self, key: str, r: ReadRequest) -> tuple[ReadAnswer, memoryview]:
        """The piece ``r`` asks for, a slice of the stored bytes.

        Raises:
            RemoteProtocolError: a negative offset or an empty piece. NotFound: no value.
        """
        if r.offset < 0 or r.length <= 0:
            raise RemoteProtocolError("a state read needs offset >= 0 and length > 0")
        stored, version = await self.backend.get(key)
        value = memoryview(stored)
        fence = getattr(self.backend, "fence", None)
        answer = ReadAnswer(value.nbytes, version, None if fence is None else fence(key))
        return answer, value[r.offset : r.offset + r.length]

    async def restore_piece(
        self, key: str, holder: str, r: PieceRequest, payload: Any
    ) -> PieceAnswer:
        """Write one piece into the value being assembled; adopt it after the last.

        Raises:
            RemoteProtocolError: malformed or out-of-order piece. StateError: the backend
                cannot adopt keys, or what it refused with.
        """
        backend = self.backend
        if not isinstance(backend, EmbeddedBackend):
            raise StateError("this node's state backend cannot adopt keys", key=key)
        size, offset, version, fence = r.size, r.offset, r.version, r.fence
        piece = memoryview(payload).cast("B")
        if size <= 0 or version < 1 or offset < 0 or offset + piece.nbytes > size:
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
            return PieceAnswer(received=assembly.received)
        del self._assemblies[key]
        try:
            fcntl.fcntl(assembly.fd, fcntl.F_ADD_SEALS, BLOB_SEALS)
            mapping = SealedMapping(assembly.fd, size)
        except BaseException:
            assembly.close()
            raise
        await backend.adopt_sealed(key, mapping, assembly.fd, version=version, fence=fence)
        return PieceAnswer(version=version)

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
