"""The node serving the state tier to its agents over CONTROL frames.

An agent sends ``CONTROL`` with ``subject="$state.<op>"``; small arguments travel in the user
headers (strings, integers in decimal), values and blobs as the payload frame, so the bytes the
node received are handed to the backend without a copy. The node fills in identities itself,
never from what the agent sends: keys are scoped by the agent's name (so a migrated instance
finds its state, and agents cannot touch each other's), the lease owner is the agent's name (a
new instance's ``acquire`` fences the old one), and a blob holder is the session.
"""

from __future__ import annotations

from typing import Any

from ..errors import RemoteProtocolError, StateError
from ..shm import BlobHost
from ._backend import StateBackend
from ._embedded import EmbeddedBackend
from ._pieces import PIECE_OPS, StatePieces
from ._types import Lease

__all__ = ["STATE_PREFIX", "StateService"]

STATE_PREFIX = "$state."

Reply = tuple[dict[str, str], Any]


def _int(headers: dict[str, str], name: str, *, optional: bool = False) -> int | None:
    raw = headers.get(name)
    if raw is None or raw == "":
        if optional:
            return None
        raise RemoteProtocolError(f"state call needs header {name!r}")
    try:
        return int(raw)
    except ValueError:
        raise RemoteProtocolError(f"header {name!r} must be an integer") from None


def _str(headers: dict[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise RemoteProtocolError(f"state call needs header {name!r}")
    return value


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
        """Run one call.

        Raises:
            RemoteProtocolError: unknown op or malformed arguments.
            StateError (and subclasses): what the backend refused.
        """
        b = self.backend
        if op == "share":
            return {"ref": await b.share(payload, holder)}, b""
        if op == "open_blob":
            data = await b.open_blob(_str(headers, "ref"), holder)
            return {"size": str(len(data))}, data
        if op == "drop_blob":
            await b.drop_blob(_str(headers, "ref"), holder)
            return {}, b""
        if op == "stats":
            s = await b.stats()
            return {k: str(getattr(s, k)) for k in s.__dataclass_fields__}, b""
        key = self.scoped(agent, _str(headers, "key"))
        if op in PIECE_OPS:
            return await self.pieces.call(op, key, holder, headers, payload)
        if op == "put":
            version = await b.put(
                key,
                payload,
                expect=_int(headers, "expect", optional=True),
                token=_int(headers, "token", optional=True),
            )
            return {"version": str(version)}, b""
        if op == "get":
            value, version = await b.get(key)
            last_token = getattr(b, "fence", None)
            extra = {"fence": str(last_token(key))} if last_token is not None else {}
            return {"version": str(version), **extra}, value
        if op == "restore":
            restore = getattr(b, "restore", None)
            if restore is None:
                raise StateError("this node's state backend cannot adopt keys", key=key)
            at_version = _int(headers, "version")
            floor = _int(headers, "fence")
            assert at_version is not None and floor is not None
            await restore(key, payload, version=at_version, fence=floor)
            return {"version": str(at_version)}, b""
        if op == "delete":
            await b.delete(
                key,
                expect=_int(headers, "expect", optional=True),
                token=_int(headers, "token", optional=True),
            )
            return {}, b""
        if op == "acquire":
            ttl = (_int(headers, "ttl_ms") or 0) / 1000
            lease = await b.acquire(key, agent, ttl)
            return {"token": str(lease.token), "expires_ms": str(int(lease.expires_in * 1000))}, b""
        if op in ("renew", "release"):
            token = _int(headers, "token")
            assert token is not None
            lease = Lease(key, agent, token, 0.0)
            if op == "release":
                return {"released": "1" if await b.release(lease) else "0"}, b""
            ttl = (_int(headers, "ttl_ms") or 0) / 1000
            renewed = await b.renew(lease, ttl)
            return {"expires_ms": str(int(renewed.expires_in * 1000))}, b""
        raise RemoteProtocolError(f"unknown state operation {op!r}")

    async def session_closed(self, holder: str) -> None:
        """A session ended: its blob holds go. Leases stay until their TTL, so a link that
        blips does not cost the agent its lease."""
        self.pieces.session_closed(holder)
        await self.backend.drop_holder(holder)

    async def aclose(self) -> None:
        await self.backend.aclose()
