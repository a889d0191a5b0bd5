"""A migrating agent's leased value carried from the old node's store to the new one's.

On one host it moves as a sealed memfd: the old node answers ``state-take`` on its pool
socket with the value's memfd, the agent hands that fd to the new node with
``state-restore``. The bytes are never copied, never cross a socket, and nobody can change
them (``F_SEAL_WRITE``). Otherwise (another host, a small value) it travels as before:
``$state.get`` at the old node, ``$state.restore`` at the new one. See docs/migration.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fabric.errors import FabricError, MigrationFailed

from ._connection import Connection

__all__ = ["carry_state", "hand_over_sealed"]


async def carry_state(
    old: Connection, new: Connection, key: str, fence_floor: int, budget: Callable[[], float]
) -> int | None:
    """Carry ``key`` (value, version, fencing floor at least ``fence_floor``) from ``old``'s
    store to ``new``'s; returns the bytes carried, or None when the key holds no value.

    Raises:
        FabricError: what either node refused with; ``MigrationFailed`` when a pool socket
            failed.
    """
    try:
        sealed = await hand_over_sealed(old, new, key, fence_floor, budget())
    except FabricError as exc:
        if exc.code == "not_found":
            return None
        raise
    except OSError as exc:
        raise MigrationFailed(f"the state hand-over of {key!r} failed: {exc}") from None
    if sealed is not None:
        return sealed
    try:
        # The value comes in the old node's shared memory (or frames) and goes out in the
        # new one's.
        reply, value, release = await old.call_keep("$state.get", {"key": key}, timeout=budget())
    except FabricError as exc:
        if exc.code == "not_found":
            return None
        raise
    try:
        found = reply.headers or {}
        fence = max(int(found.get("fence", "0")), fence_floor)
        headers = {"key": key, "version": found["version"], "fence": str(fence)}
        await new.call("$state.restore", headers, value, timeout=budget())
        return len(value)
    finally:
        if release is not None:
            release()


async def hand_over_sealed(
    old: Connection, new: Connection, key: str, fence_floor: int, timeout: float
) -> int | None:
    """Move ``key``'s value from ``old``'s node to ``new``'s as a sealed memfd, raising the new
    store's fencing floor to at least ``fence_floor``; returns its size, or None when it must
    travel in frames (a node on another host, Redis state, or a value below the threshold).

    Raises:
        NotFound: the key holds no value at the old node.
        FabricError: what either node refused with (``BadDescriptor``, ``Conflict``...).
        OSError, TimeoutError: a pool socket failed.
    """
    if not (old.shared.blobs and new.shared.blobs):
        return None
    taken = await old.shared.request({"op": "state-take", "key": key}, [], timeout)
    if taken is None:
        return None
    answer, fds = taken
    try:
        if answer.get("inline") or not fds:
            return None
        size = int(answer["size"])
        request = {
            "op": "state-restore",
            "key": key,
            "size": size,
            "version": int(answer["version"]),
            "fence": max(int(answer["fence"]), fence_floor),
        }
        restored = await new.shared.request(request, fds, timeout)
        if restored is None:
            return None
        for fd in restored[1]:
            os.close(fd)
        return size
    finally:
        for fd in fds:
            os.close(fd)
