"""The node's side of the shared-memory pool: segments, leases, and handing fds to agents.

Agents fetch the segment fds over a second Unix socket next to the node's (``node.sock.pool``)
right after their handshake: a stream transport reads ahead, and ancillary data (SCM_RIGHTS)
read by a plain ``recv`` is silently dropped by the kernel, so fds cannot share the message
link. The agent proves which session it is with the secret its WELCOME carried.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import msgpack

from ..errors import FabricError, RemoteProtocolError
from ..wire import Flags
from ._batch import decode_release_batch
from ._descriptor import Descriptor
from ._gate import PoolGate
from ._layout import PoolLayout
from ._memfd import create_segment, send_fds_async
from ._pool import SlotPool
from ._region import SharedRegion
from ._settings import PoolSettings

__all__ = ["PoolService", "SharedDelivery"]

log = logging.getLogger("fabric.shm")

_MAX_REQUEST = 4096


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
    ) -> None:
        self.settings = settings
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
        }

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, _ = await loop.sock_accept(self._listener)
            task = loop.create_task(self._serve(conn))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        with conn:
            conn.setblocking(False)
            try:
                async with asyncio.timeout(5.0):
                    raw = await loop.sock_recv(conn, _MAX_REQUEST)
                    request = msgpack.unpackb(raw, raw=False)
                    session_id = int(request["session"])
                    expected = self._secrets.get(session_id, "")
                    given = str(request.get("secret", ""))
                    if not expected or not hmac.compare_digest(expected, given):
                        raise RemoteProtocolError("unknown session or wrong pool secret")
                    await send_fds_async(conn, msgpack.packb(self.layout.to_wire()), self._fds)
                    self._attached(session_id)
            except (TimeoutError, OSError, ValueError, KeyError, TypeError, FabricError) as exc:
                log.warning("refused a pool fetch: %s", exc)
                with contextlib.suppress(OSError):
                    await loop.sock_sendall(conn, b"")

    async def allocate(self, owner: Hashable, size: int, max_wait: float | None) -> Descriptor:
        """A slot for ``size`` bytes, leased to ``owner`` until it publishes.

        Raises:
            PoolExhausted, PayloadTooLarge, RemoteProtocolError.
        """
        return await self.gate.allocate(owner, size, max_wait=max_wait)

    def publish(
        self, owner: Hashable, raw: memoryview, receivers: Iterable[Any]
    ) -> SharedDelivery:
        """Hand the owner's slot to the receivers that mapped the pool (one hold per
        delivery, repeats allowed); the others will be sent a copy.

        Raises:
            BadDescriptor: not a slot this owner allocated.
        """
        desc = Descriptor.decode(raw)
        holders = [r for r in receivers if getattr(r, "shm", False)]
        view = self.view(desc)  # validates against the mapping before any hold is taken
        self.gate.publish(owner, desc, holders)
        return SharedDelivery(self.gate, desc, raw, view)

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
