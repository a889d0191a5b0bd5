"""The agent's side of the node's shared-memory pool.

Large payloads are written once into a slot the node leases to us and only a 36-byte
descriptor travels; received descriptors become read-only memoryviews over the same pages.
Every slot a message handed us is released when the message is done with (``msg.release()``,
``with msg:``, or the message being garbage-collected), in batches.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

import msgpack

from fabric.errors import FabricError, PayloadTooLarge, PoolExhausted, RemoteProtocolError
from fabric.shm import (
    Descriptor,
    PoolLayout,
    ReleaseBatcher,
    SharedRegion,
    encode_release_batch,
    recv_fds_async,
)
from fabric.wire import Flags

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["SharedPool", "attach_pool"]

log = logging.getLogger("sdk.shm")

_NO_THRESHOLD = 1 << 62


async def attach_pool(info: dict[str, Any], session: int, timeout: float = 5.0) -> SharedRegion:
    """Fetch and map the node's pool segments (fds over the pool socket).

    Raises:
        RemoteProtocolError: the node refused or sent unsealed or mis-sized segments.
        OSError: the pool socket cannot be reached.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, str(info["socket"]))
            await loop.sock_sendall(
                sock, msgpack.packb({"session": session, "secret": info["secret"]})
            )
            data, fds = await recv_fds_async(sock, 65536, maxfds=64)
    finally:
        sock.close()
    layout = PoolLayout.from_wire(msgpack.unpackb(data, raw=False))
    return SharedRegion.attach(layout, fds)


class SharedPool:
    """Shared-memory state of one connection; replaced on every reconnect."""

    def __init__(self) -> None:
        self.region: SharedRegion | None = None
        #: Payloads at least this large go through shared memory.
        self.threshold = _NO_THRESHOLD
        self.largest = 0
        self.when_full = "wait"
        self._batcher = ReleaseBatcher()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._conn: Connection | None = None
        #: Messages whose descriptor did not check out (dropped, never read).
        self.bad_descriptors = 0

    async def attach(self, conn: Connection, info: dict[str, Any], session: int) -> None:
        """Map the pool a WELCOME announced; on failure, go on without shared memory."""
        self.detach()
        try:
            self.region = await attach_pool(info, session)
        except (OSError, TimeoutError, FabricError, ValueError, KeyError) as exc:
            log.warning("shared memory unavailable, payloads will be copied: %s", exc)
            return
        self._conn = conn
        self.threshold = int(info.get("threshold", _NO_THRESHOLD))
        self.largest = int(info.get("largest", 0))
        self.when_full = str(info.get("when_full", "wait"))

    def detach(self) -> None:
        """Forget the pool of a node we are no longer connected to."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._batcher.drain()  # the node reclaims a gone session's slots itself
        if self.region is not None:
            self.region.close()  # unmapped once the last view of it is gone
        self.region = None
        self.threshold = _NO_THRESHOLD
        self._conn = None

    async def put(
        self, payload: bytes | memoryview, deadline: float | None, subject: str
    ) -> tuple[bytes | memoryview, int]:
        """Write a large payload into a slot: returns (descriptor, SHM flag), or the payload
        itself when it must be copied after all.

        Raises:
            PoolExhausted: no slot before the deadline (when the node is set to wait).
            PayloadTooLarge: larger than the largest slot.
        """
        region, conn = self.region, self._conn
        if region is None or conn is None:
            return payload, 0
        size = len(payload)
        if size > self.largest:
            if size <= conn.max_payload:
                return payload, 0  # fits the link but no slot class: copy it
            raise PayloadTooLarge(subject=subject, size=size, limit=self.largest)
        wait = 30.0 if deadline is None else max(0.001, deadline - time.monotonic())
        try:
            _, raw = await conn.call("$pool.alloc", {"size": str(size)}, timeout=wait)
        except PoolExhausted:
            if self.when_full == "copy":
                return payload, 0
            raise
        desc = Descriptor.decode(raw)
        if self.region is not region:
            raise PoolExhausted("reconnected while allocating", subject=subject)
        region.write(desc, payload)
        return desc.encode(), int(Flags.SHM)

    def view(self, raw: memoryview) -> tuple[memoryview, Descriptor] | None:
        """The read-only payload a descriptor points to, or None for a bad descriptor."""
        region = self.region
        if region is None:
            self.bad_descriptors += 1
            return None
        try:
            desc = Descriptor.decode(raw)
            return region.view(desc), desc
        except RemoteProtocolError as exc:
            self.bad_descriptors += 1
            log.warning("dropping a message with a bad shared-memory descriptor: %s", exc)
            return None

    def release(self, desc: Descriptor, region: SharedRegion | None) -> None:
        """Give a slot back (batched; sent within a millisecond)."""
        if region is not self.region or self._conn is None:
            return  # from an earlier connection: that node reclaimed it already
        loop = asyncio.get_running_loop()
        if self._batcher.add(desc, now=loop.time()):
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(0.001, self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        batch = self._batcher.drain()
        if not batch or self._conn is None:
            return
        from fabric.wire import Header, Kind

        try:
            self._conn.send(
                Header(Kind.CONTROL, subject="$pool.release"), encode_release_batch(batch)
            )
        except FabricError:
            pass  # link down: the node reclaims the session's slots itself
