"""The node's side of the shared-memory pool: segments, leases, and handing fds to agents.

Agents fetch the segment fds over a second Unix socket next to the node's (``node.sock.pool``)
right after their handshake: a stream transport reads ahead, and ancillary data (SCM_RIGHTS)
read by a plain ``recv`` is silently dropped by the kernel, so fds cannot share the message
link. The agent proves which session it is with the secret its WELCOME carried.

The same socket carries the state tier's shared blobs, which are sealed memfds too. Each
connection is one request, ``msgpack({op, session, secret, ...})``:

- ``op="pool"`` (the default): answer the pool layout with the segment fds;
- ``op="blob-put"``, ``size``, one fd attached: an immutable blob the agent wrote. The node
  verifies every seal and the size, maps it read-only, hashes it itself (the reference is never
  taken from the agent) and answers ``{ref, size}``; a blob already stored is kept and the new
  fd dropped;
- ``op="blob-get"``, ``ref``: answer ``{ref, size}`` with the blob's fd, or ``{inline: true}``
  (no fd, no hold taken) for a small blob the agent should fetch as bytes instead;
- any op in ``handlers`` (the state tier's ``PoolOp.STATE_TAKE`` / ``PoolOp.STATE_RESTORE``,
  see docs/migration.md): the handler gets the request and its fds and answers on the socket.

A refusal is ``{error: code, message}`` (codes of ``fabric/errors.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgpack

from ..errors import BadDescriptor, FabricError, PayloadTooLarge, RemoteProtocolError, StateError
from ..protocol import Flags, PoolOp, WelcomePool
from ._batch import decode_release_batch
from ._descriptor import Descriptor
from ._gate import PoolGate
from ._layout import PoolLayout
from ._memfd import SealedMapping, create_segment, recv_fds_async, send_fds_async
from ._pool import SlotPool
from ._region import SharedRegion
from ._settings import PoolSettings

__all__ = ["BlobHost", "PoolHandler", "PoolService", "SharedDelivery"]

log = logging.getLogger("fabric.shm")

_MAX_REQUEST = 4096
#: Reading a request is quick; a blob-put then hashes up to 512 MiB (about a second, several
#: on a loaded host), which gets a budget of its own.
_REQUEST_TIMEOUT = 5.0
_BLOB_TIMEOUT = 120.0

#: Serves one extra pool-socket op: ``(conn, session_id, request, fds)``; it owns the fds
#: (closes them whatever happens), writes its answer on ``conn`` and returns how many fds it
#: sent; raising a ``FabricError`` answers ``{error, message}``.
PoolHandler = Callable[[socket.socket, int, dict[Any, Any], list[int]], Awaitable[int]]


class BlobHost(Protocol):
    """Where the node keeps shared blobs as sealed memfds (the embedded state backend).

    Holders are the node's session ids as decimal strings, as in ``$state.*`` calls, so holds
    taken here and over CONTROL are one account and ``drop_holder`` on session end covers both.
    """

    async def share_sealed(self, mapping: SealedMapping, fd: int, holder: str) -> str:
        """Hash a verified blob, store it once, add a hold; return its ref. Takes ownership of
        ``mapping`` and ``fd`` (closed whatever happens).

        Raises:
            PayloadTooLarge: above the blob limit. BackendUnavailable: closed.
        """
        ...

    async def open_sealed(self, ref: str, holder: str, *, min_size: int) -> tuple[int, int] | None:
        """Add a hold and return ``(fd, size)``, the fd a duplicate for the caller to close;
        or None, and no hold, for a blob below ``min_size`` not already in a memfd.

        Raises:
            NotFound: no such blob. BackendUnavailable: closed.
        """
        ...

    async def drop_blob(self, ref: str, holder: str) -> None:
        """Remove one hold (``NotFound`` if there is none)."""
        ...


class SharedDelivery:
    """One shared-memory message on its way to its receivers.

    Receivers that mapped the pool get the descriptor and one hold each; the others (remote
    agents, agents without the pool) get the bytes, copied once for all of them.
    """

    __slots__ = ("_copy", "_desc", "_gate", "_raw", "_view")

    def __init__(self, gate: PoolGate, desc: Descriptor, raw: memoryview, view: memoryview):
        self._gate = gate
        self._desc = desc
        self._raw = raw
        self._view = view
        self._copy: bytes | None = None

    def body_for(self, session: Any) -> tuple[memoryview | bytes, int]:
        if getattr(session, "shm", False):
            return self._raw, int(Flags.SHM)
        if self._copy is None:
            self._copy = bytes(self._view)
        return self._copy, 0

    def undeliverable(self, session: Any) -> None:
        """The message could not be sent to ``session``: give its hold back."""
        if getattr(session, "shm", False):
            with contextlib.suppress(FabricError):
                self._gate.release(session, self._desc)


class PoolService:
    """Owns the pool of one node. ``await start()``; ``aclose()`` unmaps and closes fds.

    ``attached(session_id)`` is called when an agent mapped the pool, so the node knows it may
    send that session descriptors instead of bytes.
    """

    def __init__(
        self,
        settings: PoolSettings,
        node_name: str,
        attached: Callable[[int], bool],
        *,
        blobs: BlobHost | None = None,
        handlers: Mapping[str, PoolHandler] | None = None,
    ) -> None:
        self.settings = settings
        #: Serves ``blob-put``/``blob-get``; None when the state backend keeps blobs elsewhere.
        self.blobs = blobs
        self.handlers = dict(handlers or {})
        #: File descriptors received with requests and sent with answers (all ops).
        self.fds_received = 0
        self.fds_sent = 0
        self.layout = PoolLayout.from_settings(settings)
        self._node_name = node_name
        self._attached = attached
        self._fds: list[int] = []
        self.region: SharedRegion | None = None
        self.gate = PoolGate(SlotPool.from_settings(settings), settings)
        self._secrets: dict[int, str] = {}
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self.path: Path | None = None

    async def start(self, path: Path) -> None:
        """Create the segments and listen for agents fetching them at ``path``.

        Raises:
            ConfigError: memfd sealing is unavailable.
        """
        self._fds = [
            create_segment(f"fabric-{self._node_name}-{i}", size)
            for i, size in enumerate(self.layout.segment_sizes)
        ]
        self.region = SharedRegion.attach(self.layout, self._fds, close_fds=False)
        if self.settings.prefault:
            await asyncio.to_thread(self.region.populate, write=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale pool socket of a node that died
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self.path = path
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop())

    def welcome(self, session_id: int) -> dict[str, Any]:
        """What WELCOME tells an agent about the pool: where to fetch it, with which secret."""
        secret = self._secrets.setdefault(session_id, secrets.token_hex(16))
        return {
            "socket": str(self.path),
            "secret": secret,
            "threshold": self.settings.threshold,
            "largest": self.settings.largest_slot,
            "when_full": self.settings.when_full,
            # Per slot class, how many slots the agent may lease ahead of need.
            WelcomePool.PRELEASE: list(self.settings.prelease_bounds()),
            # Blobs at least ``threshold`` bytes long go through sealed memfds.
            "blobs": self.blobs is not None,
        }

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            task = loop.create_task(self._serve(conn))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        with conn:
            conn.setblocking(False)
            try:
                async with asyncio.timeout(_REQUEST_TIMEOUT):
                    # recvmsg, not recv: a blob-put carries an fd, and a plain recv would make
                    # the kernel close it silently.
                    raw, fds = await recv_fds_async(conn, _MAX_REQUEST, maxfds=2)
                self.fds_received += len(fds)
                request = msgpack.unpackb(raw, raw=False)
                if not isinstance(request, dict):
                    raise RemoteProtocolError("a pool request is a msgpack map")
                session_id = self._authenticate(request)
                op = request.get("op", PoolOp.LAYOUT)
                serve = _POOL_OPS.get(op) if isinstance(op, str) else None
                if serve is not None and (op == PoolOp.LAYOUT or self.blobs is not None):
                    received, fds = fds, []
                    await serve(self, conn, session_id, request, received)
                elif isinstance(op, str) and op in self.handlers:
                    handler, received, fds = self.handlers[op], fds, []
                    async with asyncio.timeout(_BLOB_TIMEOUT):
                        self.fds_sent += await handler(conn, session_id, request, received)
                else:
                    raise RemoteProtocolError(f"unknown pool request {str(op)[:100]!r}")
            except (TimeoutError, OSError, ValueError, KeyError, TypeError, FabricError) as exc:
                # A state error (an unknown or already freed blob) is the agent's ordinary
                # answer, not something the operator must hear about.
                level = logging.DEBUG if isinstance(exc, StateError) else logging.WARNING
                log.log(level, "refused a pool request: %s", exc)
                await self._refuse(conn, exc)
            finally:
                for fd in fds:
                    os.close(fd)

    def _authenticate(self, request: dict[Any, Any]) -> int:
        session_id = int(request["session"])
        expected = self._secrets.get(session_id, "")
        given = str(request.get("secret", ""))
        if not expected or not hmac.compare_digest(expected, given):
            raise RemoteProtocolError("unknown session or wrong pool secret")
        return session_id

    @staticmethod
    async def _refuse(conn: socket.socket, exc: BaseException) -> None:
        if isinstance(exc, FabricError):
            code, message = exc.code, exc.message
        elif isinstance(exc, TimeoutError):
            code, message = "timeout", "the pool request took too long"
        else:
            code, message = RemoteProtocolError.code, f"malformed pool request: {exc}"
        with contextlib.suppress(OSError):
            async with asyncio.timeout(1.0):
                await asyncio.get_running_loop().sock_sendall(
                    conn, msgpack.packb({"error": code, "message": message})
                )

    async def _serve_layout(
        self, conn: socket.socket, session_id: int, request: dict[Any, Any], fds: list[int]
    ) -> None:
        """The pool layout with the segment fds; the session may be sent descriptors now."""
        _close_all(fds)
        async with asyncio.timeout(_REQUEST_TIMEOUT):
            await send_fds_async(conn, msgpack.packb(self.layout.to_wire()), self._fds)
        self.fds_sent += len(self._fds)
        self._attached(session_id)

    async def _serve_blob_put(
        self, conn: socket.socket, session_id: int, request: dict[Any, Any], fds: list[int]
    ) -> None:
        """Store the blob in the one memfd attached; closes ``fds`` whatever happens."""
        assert self.blobs is not None
        if len(fds) != 1:
            _close_all(fds)
            raise BadDescriptor("blob-put needs exactly one memfd attached")
        holder = str(session_id)
        fd = fds[0]
        try:
            mapping = SealedMapping(fd, int(request["size"]))
        except BaseException:
            os.close(fd)
            raise
        async with asyncio.timeout(_BLOB_TIMEOUT):
            ref = await self.blobs.share_sealed(mapping, fd, holder)
            if not self._session_alive(session_id):
                # The session ended while we hashed: its drop_holder may already have run.
                await self.blobs.drop_blob(ref, holder)
                return
            try:
                answer = msgpack.packb({"ref": ref, "size": request["size"]})
                await asyncio.get_running_loop().sock_sendall(conn, answer)
            except OSError:
                # The agent gave up waiting: it does not know it holds the blob.
                await self.blobs.drop_blob(ref, holder)
                raise

    async def _serve_blob_get(
        self, conn: socket.socket, session_id: int, request: dict[Any, Any], fds: list[int]
    ) -> None:
        """The blob's fd, or ``{inline: true}`` for a small one; closes ``fds``."""
        assert self.blobs is not None
        _close_all(fds)
        holder = str(session_id)
        ref = str(request["ref"])
        async with asyncio.timeout(_BLOB_TIMEOUT):
            got = await self.blobs.open_sealed(ref, holder, min_size=self.settings.threshold)
            if got is None:
                await asyncio.get_running_loop().sock_sendall(conn, msgpack.packb({"inline": True}))
                return
            dup, size = got
            try:
                if not self._session_alive(session_id):
                    await self.blobs.drop_blob(ref, holder)
                    return
                try:
                    await send_fds_async(conn, msgpack.packb({"ref": ref, "size": size}), [dup])
                    self.fds_sent += 1
                except OSError:
                    # The agent never got it, so it will never drop it.
                    await self.blobs.drop_blob(ref, holder)
                    raise
            finally:
                os.close(dup)

    def _session_alive(self, session_id: int) -> bool:
        return session_id in self._secrets

    async def allocate(self, owner: Hashable, size: int, max_wait: float | None) -> Descriptor:
        """A slot for ``size`` bytes, leased to ``owner`` until it publishes.

        Raises:
            PoolExhausted, PayloadTooLarge, RemoteProtocolError.
        """
        return await self.gate.allocate(owner, size, max_wait=max_wait)

    def publish(
        self,
        owner: Hashable,
        raw: memoryview,
        receivers: Iterable[Any],
        max_payload: int | None = None,
    ) -> SharedDelivery:
        """Hand the owner's slot to the receivers that mapped the pool (one hold per
        delivery, repeats allowed); the others will be sent a copy.

        Raises:
            BadDescriptor: not a slot this owner allocated.
            PayloadTooLarge: longer than ``max_payload`` (the slot is freed, nothing sent).
        """
        desc = Descriptor.decode(raw)
        holders = [r for r in receivers if getattr(r, "shm", False)]
        view = self.view(desc)  # validates against the mapping before any hold is taken
        if max_payload is not None and desc.length > max_payload:
            self.gate.publish(owner, desc, [])  # to nobody: validates ownership, frees it
            raise PayloadTooLarge(size=desc.length, limit=max_payload)
        self.gate.publish(owner, desc, holders)
        return SharedDelivery(self.gate, desc, raw, view)

    def take(self, owner: Hashable, raw: memoryview) -> tuple[memoryview, Callable[[], None]]:
        """An agent's slot carrying a control call's payload (a large state value): the
        node takes the hold, reads it in place, and calls the returned release when done.

        Raises:
            BadDescriptor: not a slot this agent allocated.
        """
        desc = Descriptor.decode(raw)
        hold = ("control", owner)
        view = self.view(desc)
        self.gate.publish(owner, desc, [hold])

        def release() -> None:
            with contextlib.suppress(FabricError):
                self.gate.release(hold, desc)

        return view, release

    async def give(self, receiver: Any, data: Any, max_wait: float | None) -> bytes:
        """Copy a control reply's large payload into a slot held by ``receiver``; returns the
        descriptor to send instead of the bytes.

        Raises:
            PoolExhausted, PayloadTooLarge: no slot (the caller then sends the bytes inline).
        """
        assert self.region is not None
        owner = ("control", receiver)
        desc = await self.gate.allocate(owner, len(data), max_wait=max_wait)
        try:
            self.region.write(desc, data)
        except BaseException:
            self.gate.publish(owner, desc, [])  # publishing to nobody frees the slot
            raise
        self.gate.publish(owner, desc, [receiver])
        return desc.encode()

    def release(self, holder: Hashable, payload: memoryview) -> int:
        """Apply a release batch; returns how many were refused (already released, not held).

        Raises:
            BadDescriptor: the batch itself is malformed (nothing applied).
        """
        refused = 0
        for desc in decode_release_batch(payload):
            try:
                self.gate.release(holder, desc)
            except FabricError:
                refused += 1
        return refused

    def view(self, desc: Descriptor) -> memoryview:
        """The bytes of a slot, for receivers that cannot map the pool (remote agents)."""
        assert self.region is not None
        return self.region.view(desc)

    def session_closed(self, session_id: int, holder: Hashable) -> int:
        """Reclaim everything a gone session held or had allocated; returns slots freed."""
        self._secrets.pop(session_id, None)
        return self.gate.drop_holder(holder)

    def stats(self) -> dict[str, Any]:
        s = self.gate.pool.stats()
        return {
            "pool_bytes": self.settings.pool_bytes,
            "bytes_in_use": s.bytes_in_use,
            "payload_bytes": s.payload_bytes,
            "allocated": s.allocated,
            "leases": s.leases,
            "reclaimed": s.reclaimed,
            "refused": s.refused,
            "too_large": s.too_large,
            "fds_received": self.fds_received,
            "fds_sent": self.fds_sent,
        }

    async def aclose(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
        if self._listener is not None:
            self._listener.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        if self.region is not None:
            self.region.close()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


_PoolHandler = Callable[
    [PoolService, socket.socket, int, dict[Any, Any], list[int]], Awaitable[None]
]
#: One handler per pool-socket request (``PoolOp``); each closes the fds it is handed.
_POOL_OPS: dict[str, _PoolHandler] = {
    PoolOp.LAYOUT: PoolService._serve_layout,
    PoolOp.BLOB_PUT: PoolService._serve_blob_put,
    PoolOp.BLOB_GET: PoolService._serve_blob_get,
}
