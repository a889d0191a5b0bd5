"""A migrating agent's state handed from node to node on one host as sealed memfds.

Two requests on the node's pool socket (``PoolOp.STATE_TAKE`` / ``PoolOp.STATE_RESTORE``,
served by ``fabric/shm/_service.py`` through its op table), made by the migrating
agent, which proves its session with the pool secret of its WELCOME:

- ``state-take`` ``{key}`` at the old node: answered ``{size, version, fence, durable}`` with
  the value's sealed memfd (``EmbeddedBackend.export_sealed``) and, when ``durable``, a
  read-only fd of the file that keeps it durable; ``{inline: true}`` and no fd for a value
  below the pool threshold, which the agent carries in frames as before;
- ``state-restore`` ``{key, size, version, fence}`` with those fds at the new node: the node
  verifies every seal and the size, maps the memfd read-only and keeps a view of the mapping
  as the key's value (``EmbeddedBackend.adopt_sealed``); it makes the value durable by
  hard-linking the old node's file (checked first) rather than writing it again, and answers
  ``{version}`` once that is committed.

The value's bytes are never copied: both nodes and the agent hold the same pages, and
``F_SEAL_WRITE`` makes them immutable for all three. Keys are scoped by the agent's name as
for ``$state.*`` calls (``StateService.scoped``), so an agent takes and restores only its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..errors import RemoteProtocolError
from ..protocol import PoolOp
from ..shm import PoolHandler, SealedMapping, send_fds_async
from ._embedded import EmbeddedBackend
from ._service import StateService

__all__ = ["HandoverStats", "StateHandover", "handover_for"]


@dataclass(slots=True)
class HandoverStats:
    """Values this node handed out and adopted as sealed memfds."""

    taken: int = 0
    taken_bytes: int = 0
    restored: int = 0
    restored_bytes: int = 0


class StateHandover:
    """Serves ``state-take`` and ``state-restore`` for one node's embedded store."""

    def __init__(
        self,
        backend: EmbeddedBackend,
        agent_of: Callable[[int], str | None],
        min_size: int,
    ) -> None:
        """``agent_of(session_id)`` names the agent of a live session (None if gone);
        values below ``min_size`` bytes are left to frames."""
        self.backend = backend
        self._agent_of = agent_of
        self._min_size = max(1, min_size)
        self.stats = HandoverStats()

    def handlers(self) -> dict[str, PoolHandler]:
        return {PoolOp.STATE_TAKE: self.take, PoolOp.STATE_RESTORE: self.restore}

    def _key(self, session_id: int, request: dict[Any, Any]) -> str:
        agent = self._agent_of(session_id)
        if agent is None:
            raise RemoteProtocolError("the session asking for a state hand-over is gone")
        key = request.get("key")
        if not isinstance(key, str) or not key:
            raise RemoteProtocolError("a state hand-over needs a key")
        return StateService.scoped(agent, key)

    async def take(
        self, conn: socket.socket, session_id: int, request: dict[Any, Any], fds: list[int]
    ) -> int:
        _close(fds)
        key = self._key(session_id, request)
        value, _ = await self.backend.get(key)
        if value.nbytes < self._min_size:
            await asyncio.get_running_loop().sock_sendall(conn, msgpack.packb({"inline": True}))
            return 0
        fd, size, version, fence = await self.backend.export_sealed(key)
        fds = [fd]
        durable = self.backend.durable_fd(key, version)
        if durable is not None:
            fds.append(durable)
        try:
            answer = {"size": size, "version": version, "fence": fence, "durable": len(fds) > 1}
            await send_fds_async(conn, msgpack.packb(answer), fds)
        finally:
            _close(fds)
        self.stats.taken += 1
        self.stats.taken_bytes += size
        return len(fds)

    async def restore(
        self, conn: socket.socket, session_id: int, request: dict[Any, Any], fds: list[int]
    ) -> int:
        try:
            key = self._key(session_id, request)
            if len(fds) not in (1, 2):
                raise RemoteProtocolError("state-restore needs a memfd (and its file) attached")
            size, version, fence = (int(request[k]) for k in ("size", "version", "fence"))
        except (KeyError, TypeError, ValueError) as exc:
            _close(fds)
            raise RemoteProtocolError(f"malformed state-restore: {exc}") from None
        except BaseException:
            _close(fds)
            raise
        fd, durable = fds[0], (fds[1] if len(fds) > 1 else None)
        try:
            mapping = SealedMapping(fd, size)  # BadDescriptor unless sealed and of this size
        except BaseException:
            _close(fds)
            raise
        await self.backend.adopt_sealed(
            key, mapping, fd, version=version, fence=fence, durable_fd=durable
        )
        await asyncio.get_running_loop().sock_sendall(conn, msgpack.packb({"version": version}))
        self.stats.restored += 1
        self.stats.restored_bytes += size
        return 0


def handover_for(
    service: StateService, agent_of: Callable[[int], str | None], min_size: int
) -> StateHandover | None:
    """The hand-over of a node whose store lives in its process; None for Redis (the state
    is already where the new node reads it)."""
    backend = service.backend
    if not isinstance(backend, EmbeddedBackend):
        return None
    return StateHandover(backend, agent_of, min_size)


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
