"""A migrating agent's leased value carried from the old node's store to the new one's.

On one host it moves as a sealed memfd: the old node answers ``state-take`` on its pool
socket with the value's memfd, the agent hands that fd to the new node with
``state-restore``. The bytes are never copied, never cross a socket, and nobody can change
them (``F_SEAL_WRITE``). Otherwise (another host, a small value) it travels in frames, in
pieces of ``PIECE`` bytes (``$state.read`` at the old node, ``$state.restore_piece`` at the
new one), the next piece read while the last is written: the agent never holds more than
two pieces, and no frame carries the whole value. Nodes that predate pieces get the whole
value (``$state.get`` / ``$state.restore``). See docs/migration.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

from fabric.errors import FabricError, MigrationFailed
from fabric.protocol import (
    STATE_GET,
    STATE_READ,
    STATE_RESTORE,
    STATE_RESTORE_PIECE,
    KeyRequest,
    PieceRequest,
    PoolOp,
    ReadAnswer,
    ReadRequest,
    RestoreRequest,
)

from ._connection import Connection

__all__ = ["PIECE", "carry_state", "hand_over_sealed"]

#: Bytes per piece of a value carried in frames.
PIECE = 1024 * 1024


class _NoPieces(Exception):
    """A node that predates ``$state.read`` / ``$state.restore_piece``."""


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
        return await carry_in_pieces(old, new, key, fence_floor, budget)
    except _NoPieces:
        pass
    try:
        # The value comes in the old node's shared memory (or frames) and goes out in the
        # new one's.
        ask = STATE_GET.encode_request(KeyRequest(key))
        reply, value, release = await old.call_keep(STATE_GET.subject, ask, timeout=budget())
    except FabricError as exc:
        if exc.code == "not_found":
            return None
        raise
    try:
        found = STATE_GET.decode_answer(reply.headers)
        adopt = RestoreRequest(key, found.version, max(found.fence or 0, fence_floor))
        await new.call(
            STATE_RESTORE.subject, STATE_RESTORE.encode_request(adopt), value, timeout=budget()
        )
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
    try:
        taken = await old.shared.request({"op": PoolOp.STATE_TAKE, "key": key}, [], timeout)
    except FabricError as exc:
        if _predates_handover(exc):
            return None
        raise
    if taken is None:
        return None
    answer, fds = taken
    try:
        if answer.get("inline") or not fds:
            return None
        size = int(answer["size"])
        request = {
            "op": PoolOp.STATE_RESTORE,
            "key": key,
            "size": size,
            "version": int(answer["version"]),
            "fence": max(int(answer["fence"]), fence_floor),
        }
        try:
            restored = await new.shared.request(request, fds, timeout)
        except FabricError as exc:
            if _predates_handover(exc):
                return None
            raise
        if restored is None:
            return None
        for fd in restored[1]:
            os.close(fd)
        return size
    finally:
        for fd in fds:
            os.close(fd)


def _predates_handover(exc: FabricError) -> bool:
    """A node of an earlier release refuses the hand-over ops: carry the value in frames."""
    return exc.code == "remote_protocol_error" and "unknown pool request" in str(exc)


async def carry_in_pieces(
    old: Connection, new: Connection, key: str, fence_floor: int, budget: Callable[[], float]
) -> int | None:
    """Carry ``key`` in pieces (see the module); the bytes carried, None when it holds no value.

    Raises:
        _NoPieces: a node does not know pieces (nothing was written at the new node).
        MigrationFailed: the value changed while it was being read.
        FabricError: what either node refused with.
    """
    loop = asyncio.get_running_loop()

    async def read(offset: int) -> tuple[ReadAnswer, memoryview, Callable[[], None] | None]:
        ask = STATE_READ.encode_request(ReadRequest(key, offset, PIECE))
        try:
            reply, data, release = await old.call_keep(STATE_READ.subject, ask, timeout=budget())
        except FabricError as exc:
            if exc.code == "not_found":
                raise
            if offset == 0 and exc.code == "remote_protocol_error" and "unknown" in str(exc):
                raise _NoPieces from None
            raise
        try:
            return STATE_READ.decode_answer(reply.headers), data, release
        except BaseException:
            if release is not None:
                release()
            raise

    try:
        found, data, release = await read(0)
    except FabricError as exc:
        if exc.code == "not_found":
            return None
        raise
    size, version = found.size, found.version
    fence = max(found.fence or 0, fence_floor)
    if len(data) >= size:  # one piece is the whole value (an empty one included)
        try:
            adopt = STATE_RESTORE.encode_request(RestoreRequest(key, version, fence))
            await new.call(STATE_RESTORE.subject, adopt, data, timeout=budget())
            return size
        finally:
            if release is not None:
                release()
    offset = 0
    ahead: asyncio.Future[tuple[ReadAnswer, memoryview, Callable[[], None] | None]] | None
    ahead = None
    try:
        while True:
            end = offset + len(data)
            if end < size:
                ahead = loop.create_task(read(end))
            piece = PieceRequest(key, size, offset, version, fence)
            try:
                await new.call(
                    STATE_RESTORE_PIECE.subject,
                    STATE_RESTORE_PIECE.encode_request(piece),
                    data,
                    timeout=budget(),
                )
            except FabricError as exc:
                if offset == 0 and exc.code == "remote_protocol_error" and "unknown" in str(exc):
                    raise _NoPieces from None
                raise
            finally:
                if release is not None:
                    release()
                release = None
            if end >= size:
                return size
            assert ahead is not None
            found, data, release = await ahead
            ahead = None
            if found.version != version or found.size != size or not len(data):
                raise MigrationFailed(f"the state of {key!r} changed while it was carried")
            offset = end
    finally:
        if release is not None:
            release()
        if ahead is not None:
            ahead.cancel()
            with contextlib.suppress(BaseException):
                _, _, late = await ahead
                if late is not None:
                    late()  # read before it could be cancelled: its slot goes back
