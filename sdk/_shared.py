"""The agent's side of the node's shared-memory pool.

Large payloads are written once into a slot the node leases to us and only a 36-byte
descriptor travels; received descriptors become read-only memoryviews over the same pages.
Every slot a message handed us is released when the message is done with (``msg.release()``,
``with msg:``, or the message being garbage-collected), in batches.

Shared blobs of the state tier (``agent.state.share`` / ``open_blob``) travel over the same
pool socket as sealed memfds: we write the bytes once into a memfd, seal it and hand the node
the fd; opening a blob gets the node's fd and maps it read-only (``blob_put``, ``blob_get``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from typing_extensions import Buffer

from fabric.errors import (
    FabricError,
    PayloadTooLarge,
    PoolExhausted,
    RemoteProtocolError,
    error_from_wire,
)
from fabric.protocol import POOL_ALLOC, POOL_RELEASE, AllocRequest, Flags, PoolOp, WelcomePool
from fabric.shm import (
    Descriptor,
    PoolLayout,
    ReleaseBatcher,
    SealedMapping,
    SharedRegion,
    SlotStash,
    create_blob,
    encode_release_batch,
    recv_fds_async,
    send_fds_async,
)

__all__ = ["PoolCall", "PoolNotify", "SharedPool", "attach_pool"]

#: A control call to the node, always inline: ``(subject, headers, timeout)`` → reply
#: payload (``POOL_ALLOC`` answers with the descriptor of the slot it leased).
PoolCall = Callable[[str, dict[str, str] | None, float], Awaitable[memoryview]]
#: A one-way control notice to the node: ``(subject, payload)`` (``POOL_RELEASE``).
PoolNotify = Callable[[str, bytes], None]

log = logging.getLogger("sdk.shm")

_NO_THRESHOLD = 1 << 62
#: Above this, writing a blob into its memfd runs in a thread so the agent's loop keeps going.
_WRITE_IN_THREAD = 1024 * 1024
#: How long a background pre-lease may wait for a slot (the node's ``when_full="wait"``).
_LEASE_WAIT = 0.5


async def pool_request(
    info: dict[str, Any],
    session: int,
    request: dict[str, Any],
    fds: list[int],
    timeout: float,
) -> tuple[dict[str, Any], list[int]]:
    """One request on the node's pool socket: returns its answer and the fds it carried
    (the caller's to close).

    Raises:
        FabricError: the typed error the node refused with (``BadDescriptor``, ``NotFound``,
            ``PayloadTooLarge``, ``RemoteProtocolError`` for a wrong secret...).
        RemoteProtocolError: the answer is malformed.
        OSError: the pool socket cannot be reached.
        TimeoutError: no answer within ``timeout``.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    message = msgpack.packb({**request, "session": session, "secret": info["secret"]})
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, str(info["socket"]))
            if fds:
                await send_fds_async(sock, message, fds)
            else:
                await loop.sock_sendall(sock, message)
            data, got = await recv_fds_async(sock, 65536, maxfds=64)
    finally:
        sock.close()
    try:
        answer = msgpack.unpackb(data, raw=False)
        if not isinstance(answer, dict):
            raise ValueError("not a map")
    except ValueError as exc:
        _close(got)
        raise RemoteProtocolError(f"malformed answer from the pool socket: {exc}") from None
    if "error" in answer:
        _close(got)
        raise error_from_wire(str(answer["error"]), str(answer.get("message", "")))
    return answer, got


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


async def attach_pool(info: dict[str, Any], session: int, timeout: float = 5.0) -> SharedRegion:
    """Fetch and map the node's pool segments (fds over the pool socket).

    Raises:
        RemoteProtocolError: the node refused or sent unsealed or mis-sized segments.
        OSError: the pool socket cannot be reached.
    """
    answer, fds = await pool_request(info, session, {"op": PoolOp.LAYOUT}, [], timeout)
    try:
        layout = PoolLayout.from_wire(answer)
    except BaseException:
        _close(fds)
        raise
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
        #: The connection's control plane, while attached (None: no pool, or detached).
        self._call: PoolCall | None = None
        self._notify: PoolNotify | None = None
        self._max_payload = 0
        #: Messages whose descriptor did not check out (dropped, never read).
        self.bad_descriptors = 0
        self._info: dict[str, Any] | None = None
        self._session = 0
        #: Slots leased ahead of need (none until the node announces bounds).
        self.stash: SlotStash | None = None
        #: ``POOL_ALLOC`` round trips a put waited for (background refills not counted).
        self.alloc_calls = 0
        self._refills: set[asyncio.Task[None]] = set()

    async def attach(
        self,
        info: dict[str, Any],
        session: int,
        *,
        call: PoolCall,
        notify: PoolNotify,
        max_payload: int,
    ) -> None:
        """Map the pool a WELCOME announced; on failure, go on without shared memory.

        ``call`` and ``notify`` reach the node that leases the slots: slots are allocated
        with ``call`` (inline, never through the pool itself) and given back with ``notify``.
        """
        self.detach()
        try:
            self.region = await attach_pool(info, session)
        except (OSError, TimeoutError, FabricError, ValueError, KeyError) as exc:
            log.warning("shared memory unavailable, payloads will be copied: %s", exc)
            return
        self._call, self._notify, self._max_payload = call, notify, max_payload
        if info.get("blobs"):
            self._info, self._session = info, session
        self.threshold = int(info.get("threshold", _NO_THRESHOLD))
        self.largest = int(info.get("largest", 0))
        self.when_full = str(info.get("when_full", "wait"))
        bounds = info.get(WelcomePool.PRELEASE)
        if isinstance(bounds, list) and len(bounds) == len(self.region.layout.class_sizes):
            self.stash = SlotStash(self.region.layout.class_sizes, [int(b) for b in bounds])

    def detach(self) -> None:
        """Forget the pool of a node we are no longer connected to."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._batcher.drain()  # the node reclaims a gone session's slots itself
        for task in self._refills:
            task.cancel()
        self.stash = None  # pre-leased slots too: they were that session's
        if self.region is not None:
            self.region.close()  # unmapped once the last view of it is gone
        self.region = None
        self.threshold = _NO_THRESHOLD
        self._call = self._notify = None
        self._info = None

    async def put(
        self, payload: bytes | memoryview, deadline: float | None, subject: str
    ) -> tuple[bytes | memoryview, int]:
        """Write a large payload into a slot: returns (descriptor, SHM flag), or the payload
        itself when it must be copied after all.

        Raises:
            PoolExhausted: no slot before the deadline (when the node is set to wait).
            PayloadTooLarge: larger than the largest slot.
        """
        region, call, limit = self.region, self._call, self._max_payload
        if region is None or call is None:
            return payload, 0
        size = len(payload)
        if size > limit:
            raise PayloadTooLarge(subject=subject, size=size, limit=limit)
        if size > self.largest:
            if size <= limit:
                return payload, 0  # fits the link but no slot class: copy it
            raise PayloadTooLarge(
                subject=subject,
                size=size,
                limit=self.largest,
                hint="that is the pool's largest slot: add a larger class to [pool] classes in "
                "the node's config (docs/shared-memory.md)",
            )
        stash = self.stash
        desc = stash.take(size) if stash is not None else None
        if desc is None:
            wait = 30.0 if deadline is None else max(0.001, deadline - time.monotonic())
            self.alloc_calls += 1
            try:
                ask = POOL_ALLOC.encode_request(AllocRequest(size))
                raw = await call(POOL_ALLOC.subject, ask, wait)
            except PoolExhausted:
                if self.when_full == "copy":
                    return payload, 0
                raise
            desc = Descriptor.decode(raw)
            if self.region is not region:
                raise PoolExhausted("reconnected while allocating", subject=subject)
        region.write(desc, payload)
        if stash is not None:
            self._refill(stash, call)
        return desc.encode(), int(Flags.SHM)

    def _refill(self, stash: SlotStash, call: PoolCall) -> None:
        """Lease what the stash is missing, in the background."""
        for size in stash.to_lease():
            task = asyncio.ensure_future(self._lease_ahead(stash, call, size))
            self._refills.add(task)
            task.add_done_callback(self._refills.discard)

    async def refilled(self) -> None:
        """Until the background leases started so far have come in (or failed)."""
        while self._refills:
            await asyncio.wait(set(self._refills))

    async def _lease_ahead(self, stash: SlotStash, call: PoolCall, size: int) -> None:
        try:
            # Briefly: a full class is not worth waiting on from the background.
            ask = POOL_ALLOC.encode_request(AllocRequest(size))
            raw = await call(POOL_ALLOC.subject, ask, _LEASE_WAIT)
            desc = Descriptor.decode(raw)
        except (FabricError, ValueError):
            stash.failed(size)
            return
        except asyncio.CancelledError:
            stash.failed(size)
            raise
        if self.stash is stash:
            stash.leased(desc)
        # Else the connection went meanwhile: its node reclaimed the slot with the session.

    @property
    def blobs(self) -> bool:
        """Whether the node keeps blobs in sealed memfds we can map (same host, embedded
        state backend)."""
        return self._info is not None

    async def request(
        self, request: dict[str, Any], fds: list[int], timeout: float
    ) -> tuple[dict[str, Any], list[int]] | None:
        """One request on the node's pool socket (``pool_request``); None when the node has
        no blob pool (another host, or Redis state)."""
        if self._info is None:
            return None
        return await pool_request(self._info, self._session, request, fds, timeout)

    async def blob_put(self, data: Buffer, timeout: float) -> str | None:
        """Share ``data`` as a sealed memfd; its ref, or None when the node has no blob pool
        or ``data`` is below the threshold (send it as bytes then).

        Raises:
            FabricError: what the node refused with (``PayloadTooLarge``, ``BadDescriptor``).
            ConfigError: memfd unavailable here. OSError, TimeoutError: the pool socket failed.
        """
        info, size = self._info, memoryview(data).nbytes
        if info is None or size < max(self.threshold, 1):
            return None
        if size > _WRITE_IN_THREAD:
            fd = await asyncio.to_thread(create_blob, "fabric-blob", data)
        else:
            fd = create_blob("fabric-blob", data)
        try:
            answer, fds = await pool_request(
                info, self._session, {"op": PoolOp.BLOB_PUT, "size": size}, [fd], timeout
            )
        finally:
            os.close(fd)  # the node holds its own fd now
        _close(fds)
        return str(answer["ref"])

    async def blob_get(self, ref: str, timeout: float) -> memoryview | None:
        """Map blob ``ref`` read-only; None when the node has no blob pool or answers that
        the blob is small (fetch its bytes instead: no hold was taken).

        Raises:
            NotFound: no such blob. BadDescriptor: the node's fd is not an immutable blob.
            OSError, TimeoutError: the pool socket failed.
        """
        info = self._info
        if info is None:
            return None
        answer, fds = await pool_request(
            info, self._session, {"op": PoolOp.BLOB_GET, "ref": ref}, [], timeout
        )
        if answer.get("inline") or not fds:
            _close(fds)
            return None
        try:
            if len(fds) != 1:
                raise RemoteProtocolError("the node sent more than one fd for a blob")
            # The view keeps the mapping alive; the mapping keeps the pages, fd closed or not.
            return memoryview(SealedMapping(fds[0], int(answer["size"])))
        finally:
            _close(fds)

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
        if region is not self.region or self._notify is None:
            return  # from an earlier connection: that node reclaimed it already
        loop = asyncio.get_running_loop()
        if self._batcher.add(desc, now=loop.time()):
            self.flush()
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(0.001, self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        batch = self._batcher.drain()
        notify = self._notify
        if not batch or notify is None:
            return
        try:
            notify(POOL_RELEASE.subject, encode_release_batch(batch))
        except FabricError:
            pass  # link down: the node reclaims the session's slots itself
