"""The node serving the state tier to its agents over CONTROL frames.

An agent sends ``CONTROL`` with ``subject="$state.<op>"``; small arguments travel in the user
headers (strings, integers in decimal), values and blobs as the payload frame, so the bytes the
node received are handed to the backend without a copy. The node fills in identities itself,
never from what the agent sends: keys are scoped by the agent's name (so a migrated instance
finds its state, and agents cannot touch each other's), the lease owner is the agent's name (a
new instance's ``acquire`` fences the old one), and a blob holder is the session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import RemoteProtocolError, StateError
from ..protocol import (
    STATE_ACQUIRE,
    STATE_CALLS,
    STATE_DELETE,
    STATE_DROP_BLOB,
    STATE_GET,
    STATE_OPEN_BLOB,
    STATE_PREFIX,
    STATE_PUT,
    STATE_READ,
    STATE_RELEASE,
    STATE_RENEW,
    STATE_RESTORE,
    STATE_RESTORE_PIECE,
    STATE_SHARE,
    STATE_STATS,
    AcquireAnswer,
    AcquireRequest,
    BlobRef,
    ControlCall,
    Empty,
    GetAnswer,
    KeyRequest,
    OpenBlobAnswer,
    PieceAnswer,
    PieceRequest,
    ReadAnswer,
    ReadRequest,
    ReleaseAnswer,
    ReleaseRequest,
    RenewAnswer,
    RenewRequest,
    RestoreRequest,
    ShareAnswer,
    StateStatsAnswer,
    VersionAnswer,
    WriteRequest,
)
from ..shm import BlobHost
from ._backend import StateBackend
from ._embedded import EmbeddedBackend
from ._pieces import StatePieces
from ._types import Lease

__all__ = ["STATE_PREFIX", "StateService"]

Reply = tuple[dict[str, str], Any]


class _Call:
    """Who is calling: identities the node filled in, never taken from the agent."""

    __slots__ = ("agent", "holder")

    def __init__(self, agent: str, holder: str) -> None:
        self.agent = agent
        self.holder = holder


#: A handler gets the decoded request and the payload; returns the answer and its bulk bytes.
_Handler = Callable[["StateService", _Call, Any, Any], Awaitable[tuple[Any, Any]]]


class StateService:
    """Dispatches ``$state.*`` calls from one node's agents to a ``StateBackend``."""

    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend
        #: ``read`` / ``restore_piece``: state carried between hosts in pieces.
        self.pieces = StatePieces(backend)

    def blob_host(self) -> BlobHost | None:
        """What the shared-memory pool should serve blobs from: the embedded backend, whose
        blobs live on this host and can be sealed memfds; None for Redis (blobs stay there)."""
        return self.backend if isinstance(self.backend, EmbeddedBackend) else None

    @staticmethod
    def scoped(agent: str, key: str) -> str:
        return f"agent/{agent}/{key}"

    async def call(
        self, op: str, agent: str, holder: str, headers: dict[str, str], payload: Any
    ) -> Reply:
        """Run one call: decode its arguments by its definition, run it, encode the answer.

        Raises:
            RemoteProtocolError: unknown op or malformed arguments.
            StateError (and subclasses): what the backend refused.
        """
        entry = _DISPATCH.get(op)
        if entry is None:
            raise RemoteProtocolError(f"unknown state operation {op[:200]!r}")
        definition, handler = entry
        request = definition.decode_request(headers)
        answer, data = await handler(self, _Call(agent, holder), request, payload)
        out, _ = definition.encode_answer(answer)
        assert out is not None  # $state.* answers are always a map
        return out, data

    async def _share(self, c: _Call, _: Empty, payload: Any) -> tuple[ShareAnswer, bytes]:
        return ShareAnswer(await self.backend.share(payload, c.holder)), b""

    async def _open_blob(self, c: _Call, r: BlobRef, _: Any) -> tuple[OpenBlobAnswer, Any]:
        data = await self.backend.open_blob(r.ref, c.holder)
        return OpenBlobAnswer(len(data)), data

    async def _drop_blob(self, c: _Call, r: BlobRef, _: Any) -> tuple[Empty, bytes]:
        await self.backend.drop_blob(r.ref, c.holder)
        return Empty(), b""

    async def _stats(self, c: _Call, _: Empty, __: Any) -> tuple[StateStatsAnswer, bytes]:
        s = await self.backend.stats()
        return StateStatsAnswer(
            s.keys, s.private_bytes, s.blobs, s.blob_bytes, s.shared_saved_bytes
        ), b""

    async def _put(self, c: _Call, r: WriteRequest, payload: Any) -> tuple[VersionAnswer, bytes]:
        key = self.scoped(c.agent, r.key)
        version = await self.backend.put(key, payload, expect=r.expect, token=r.token)
        return VersionAnswer(version), b""

    async def _get(self, c: _Call, r: KeyRequest, _: Any) -> tuple[GetAnswer, Any]:
        key = self.scoped(c.agent, r.key)
        value, version = await self.backend.get(key)
        last_token = getattr(self.backend, "fence", None)
        return GetAnswer(version, None if last_token is None else last_token(key)), value

    async def _restore(
        self, c: _Call, r: RestoreRequest, payload: Any
    ) -> tuple[VersionAnswer, bytes]:
        key = self.scoped(c.agent, r.key)
        restore = getattr(self.backend, "restore", None)
        if restore is None:
            raise StateError("this node's state backend cannot adopt keys", key=key)
        await restore(key, payload, version=r.version, fence=r.fence)
        return VersionAnswer(r.version), b""

    async def _read(self, c: _Call, r: ReadRequest, _: Any) -> tuple[ReadAnswer, Any]:
        return await self.pieces.read(self.scoped(c.agent, r.key), r)

    async def _restore_piece(
        self, c: _Call, r: PieceRequest, payload: Any
    ) -> tuple[PieceAnswer, bytes]:
        key = self.scoped(c.agent, r.key)
        return await self.pieces.restore_piece(key, c.holder, r, payload), b""

    async def _delete(self, c: _Call, r: WriteRequest, _: Any) -> tuple[Empty, bytes]:
        key = self.scoped(c.agent, r.key)
        await self.backend.delete(key, expect=r.expect, token=r.token)
        return Empty(), b""

    async def _acquire(self, c: _Call, r: AcquireRequest, _: Any) -> tuple[AcquireAnswer, bytes]:
        lease = await self.backend.acquire(self.scoped(c.agent, r.key), c.agent, r.ttl_ms / 1000)
        return AcquireAnswer(lease.token, int(lease.expires_in * 1000)), b""

    async def _renew(self, c: _Call, r: RenewRequest, _: Any) -> tuple[RenewAnswer, bytes]:
        lease = Lease(self.scoped(c.agent, r.key), c.agent, r.token, 0.0)
        renewed = await self.backend.renew(lease, r.ttl_ms / 1000)
        return RenewAnswer(int(renewed.expires_in * 1000)), b""

    async def _release(self, c: _Call, r: ReleaseRequest, _: Any) -> tuple[ReleaseAnswer, bytes]:
        lease = Lease(self.scoped(c.agent, r.key), c.agent, r.token, 0.0)
        return ReleaseAnswer(await self.backend.release(lease)), b""

    async def session_closed(self, holder: str) -> None:
        """A session ended: its blob holds go. Leases stay until their TTL, so a link that
        blips does not cost the agent its lease."""
        self.pieces.session_closed(holder)
        await self.backend.drop_holder(holder)

    async def aclose(self) -> None:
        await self.backend.aclose()


#: One handler per ``$state.*`` definition; a definition without one is a bug caught at import.
_HANDLERS: dict[ControlCall[Any, Any], _Handler] = {
    STATE_SHARE: StateService._share,
    STATE_OPEN_BLOB: StateService._open_blob,
    STATE_DROP_BLOB: StateService._drop_blob,
    STATE_STATS: StateService._stats,
    STATE_PUT: StateService._put,
    STATE_GET: StateService._get,
    STATE_RESTORE: StateService._restore,
    STATE_READ: StateService._read,
    STATE_RESTORE_PIECE: StateService._restore_piece,
    STATE_DELETE: StateService._delete,
    STATE_ACQUIRE: StateService._acquire,
    STATE_RENEW: StateService._renew,
    STATE_RELEASE: StateService._release,
}
assert set(_HANDLERS) == set(STATE_CALLS.values()), "a $state.* call has no handler"
_DISPATCH: dict[str, tuple[ControlCall[Any, Any], _Handler]] = {
    op: (definition, _HANDLERS[definition]) for op, definition in STATE_CALLS.items()
}
