"""``agent.state``: private versioned state under fenced leases, and shared immutable blobs.

Every call goes to the agent's node, which serves it from its state backend (embedded, or
Redis/Valkey). Keys are the agent's own: two agents using the key ``notes`` do not collide,
and a migrated instance of the same agent finds its state under the same keys.

A lease held through ``acquire`` is remembered here, and every write to its key carries the
lease's fencing token without the caller passing it around: once a newer instance acquired the
key, the old one's writes fail with ``Fenced``.

Shared blobs on the node's host (embedded backend) are sealed memfds: ``share`` writes the
bytes once into one and hands the node its fd, ``open_blob`` maps the node's copy read-only.
Sixteen agents opening one 256 MiB blob map the same pages: one copy on the host. Elsewhere
(a remote agent, the Redis backend, blobs under the pool threshold) the bytes travel in
CONTROL frames. See docs/state.md, "Shared blobs on one host".
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from typing_extensions import Buffer

from fabric.errors import Timeout
from fabric.protocol import (
    STATE_ACQUIRE,
    STATE_DELETE,
    STATE_DROP_BLOB,
    STATE_GET,
    STATE_OPEN_BLOB,
    STATE_PUT,
    STATE_RELEASE,
    STATE_RENEW,
    STATE_SHARE,
    STATE_STATS,
    AcquireRequest,
    BlobRef,
    ControlCall,
    Empty,
    KeyRequest,
    ReleaseRequest,
    RenewRequest,
    WriteRequest,
)

from ._payload import Payload, encode_payload

if TYPE_CHECKING:
    from fabric.protocol import Header

    from ._shared import SharedPool

__all__ = ["ControlPlane", "Lease", "LeaseBook", "StateClient", "StateStats"]

log = logging.getLogger("sdk.state")

Req = TypeVar("Req")
Ans = TypeVar("Ans")


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease on one of the agent's keys."""

    key: str
    #: Fencing token: strictly increasing per key; every write under this lease carries it.
    token: int
    #: ``time.monotonic()`` when the lease runs out unless renewed.
    expires_at: float

    @property
    def remaining(self) -> float:
        """Seconds until the lease runs out (negative once expired)."""
        return self.expires_at - time.monotonic()


class ControlPlane(Protocol):
    """What the state client needs of a node: control calls and its shared-memory pool
    (the agent's core, which follows the agent from node to node, or one connection)."""

    @property
    def shared(self) -> SharedPool: ...

    async def call(
        self,
        subject: str,
        headers: dict[str, str] | None = None,
        payload: Buffer = b"",
        timeout: float = 5.0,
    ) -> tuple[Header, memoryview]: ...


class LeaseBook:
    """The leases this agent holds, by key (what migration takes over to the new node)."""

    __slots__ = ("_leases",)

    def __init__(self) -> None:
        self._leases: dict[str, Lease] = {}

    def get(self, key: str) -> Lease | None:
        return self._leases.get(key)

    def held(self) -> list[Lease]:
        return list(self._leases.values())

    def record(self, lease: Lease) -> Lease:
        self._leases[lease.key] = lease
        return lease

    def forget(self, key: str) -> None:
        self._leases.pop(key, None)

    async def acquire_on(
        self, node: ControlPlane, key: str, ttl: float, timeout: float
    ) -> Lease:
        """Acquire ``key`` at ``node`` and remember the lease (migration takes leases over
        on the new node before the agent switches to it).

        Raises:
            LeaseHeld, BackendUnavailable, ConnectionLost, Timeout.
        """
        sent = time.monotonic()
        ask = STATE_ACQUIRE.encode_request(AcquireRequest(key, int(ttl * 1000)))
        header, _ = await node.call(STATE_ACQUIRE.subject, ask, timeout=timeout)
        reply = STATE_ACQUIRE.decode_answer(header.headers)
        # Measured from before the request left: the lease can only end later than we think.
        return self.record(Lease(key, reply.token, sent + reply.expires_ms / 1000))


@dataclass(frozen=True, slots=True)
class StateStats:
    """The backend's memory accounting."""

    keys: int
    private_bytes: int
    blobs: int
    blob_bytes: int
    shared_saved_bytes: int


class StateClient:
    """The agent's handle on the state tier (``agent.state``)."""

    def __init__(
        self, node: ControlPlane, timeout: float, leases: LeaseBook | None = None
    ) -> None:
        self._node = node
        self._timeout = timeout
        self._leases = leases if leases is not None else LeaseBook()

    async def _call(
        self, call: ControlCall[Req, Ans], request: Req, payload: Buffer = b""
    ) -> tuple[Ans, memoryview]:
        header, data = await self._node.call(
            call.subject, call.encode_request(request), payload, timeout=self._timeout
        )
        return call.decode_answer(header.headers), data

    def _token(self, key: str, token: int | None) -> int | None:
        lease = self._leases.get(key) if token is None else None
        return lease.token if lease is not None else token

    async def put(
        self, key: str, value: Payload, *, expect: int | None = None, token: int | None = None
    ) -> int:
        """Write ``value``; returns the new version.

        ``expect`` is compare-and-set: the write happens only if the stored version is that
        (0 means "must not exist yet"). The token of a lease held on ``key`` is sent
        automatically.

        Raises:
            Conflict: the version is not ``expect``. Fenced: a newer lease exists.
            LeaseExpired: our lease ran out. PayloadTooLarge. BackendUnavailable.
        """
        ask = WriteRequest(key, self._token(key, token), expect)
        reply, _ = await self._call(STATE_PUT, ask, encode_payload(value))
        return reply.version

    async def get(self, key: str) -> tuple[memoryview, int]:
        """The value and its version.

        Raises:
            NotFound: nothing stored under ``key``. BackendUnavailable.
        """
        reply, data = await self._call(STATE_GET, KeyRequest(key))
        return data, reply.version

    async def delete(
        self, key: str, *, expect: int | None = None, token: int | None = None
    ) -> None:
        """Remove ``key`` (same compare-and-set and fencing rules as ``put``)."""
        await self._call(STATE_DELETE, WriteRequest(key, self._token(key, token), expect))

    async def acquire(self, key: str, ttl: float) -> Lease:
        """Take the lease on ``key`` for ``ttl`` seconds; returns it with a fresh, larger
        fencing token. Acquiring again (a new instance of this agent) fences the old lease.

        Raises:
            LeaseHeld: another owner holds it. BackendUnavailable.
        """
        return await self._leases.acquire_on(self._node, key, ttl, self._timeout)

    async def renew(self, lease: Lease, ttl: float) -> Lease:
        """Extend a live lease.

        Raises:
            Fenced: a newer lease exists. LeaseExpired: too late to renew.
        """
        sent = time.monotonic()
        ask = RenewRequest(lease.key, lease.token, int(ttl * 1000))
        reply, _ = await self._call(STATE_RENEW, ask)
        renewed = Lease(lease.key, lease.token, sent + reply.expires_ms / 1000)
        return self._leases.record(renewed)

    async def release(self, lease: Lease) -> bool:
        """Give the lease up; False if it had already ended or been superseded."""
        self._leases.forget(lease.key)
        reply, _ = await self._call(STATE_RELEASE, ReleaseRequest(lease.key, lease.token))
        return reply.released

    def lease(self, key: str) -> Lease | None:
        """The lease this agent holds on ``key``, if any."""
        return self._leases.get(key)

    def _blob_budget(self, size: int) -> float:
        # Writing and hashing a big blob takes time proportional to its size (about 0.5 s per
        # 256 MiB on an idle core): allow 64 MiB/s on top of the call's timeout.
        return self._timeout + size / (64 * 1024 * 1024)

    async def share(self, data: Payload) -> str:
        """Store an immutable blob once, however many agents share the same bytes; returns
        its content address (SHA-256 hex, computed by the node). This agent holds a
        reference until ``drop_blob``.

        On the node's host (embedded backend, blob at least the pool threshold, 64 KiB by
        default) the bytes are copied once into a sealed memfd and never travel; otherwise
        they go to the node in a CONTROL frame (limited by the link's ``max_payload``).

        Raises:
            PayloadTooLarge: above the backend's blob limit (512 MiB) or, sent as bytes, the
                link's payload limit. BadDescriptor: the node refused our memfd.
            BackendUnavailable. ConnectionLost. Timeout.
        """
        payload = encode_payload(data)
        pool = self._node.shared
        if pool.blobs:
            budget = self._blob_budget(memoryview(payload).nbytes)
            try:
                ref = await pool.blob_put(payload, budget)
            except TimeoutError:
                # Not retried as bytes: the node may still be hashing, and would then hold
                # the blob for us twice.
                raise Timeout(f"sharing a blob took longer than {budget:.1f}s") from None
            except OSError as exc:
                log.warning("pool socket unusable, sharing the blob as bytes: %s", exc)
            else:
                if ref is not None:
                    return ref
        reply, _ = await self._call(STATE_SHARE, Empty(), payload)
        return reply.ref

    async def open_blob(self, ref: str) -> memoryview:
        """The blob's bytes as a read-only ``memoryview``; this agent holds a reference
        until ``drop_blob``.

        On the node's host the view maps the one copy every agent shares (zero copy, pages
        read in place); elsewhere it is over bytes received from the node. Either way the
        view stays valid for as long as you keep it, even after ``drop_blob``: the memory is
        returned once the last holder dropped the blob *and* every view of it (numpy arrays
        and slices made from it included) is released or garbage-collected. Keep views only
        as long as you need them, or a freed blob's pages stay mapped in this process.

        Raises:
            NotFound: no blob with this reference.
            BadDescriptor: the node's memfd is not sealed (never from a sane node).
            BackendUnavailable. ConnectionLost. Timeout.
        """
        pool = self._node.shared
        if pool.blobs:
            try:
                view = await pool.blob_get(ref, self._timeout)
            except TimeoutError:
                raise Timeout(f"opening blob {ref} took longer than {self._timeout}s") from None
            except OSError as exc:
                log.warning("pool socket unusable, fetching the blob as bytes: %s", exc)
            else:
                if view is not None:
                    return view
        _, data = await self._call(STATE_OPEN_BLOB, BlobRef(ref))
        return data.toreadonly()

    async def drop_blob(self, ref: str) -> None:
        """Let go of one reference to a blob (one per ``share`` or ``open_blob``); the blob
        is freed when its last holder let go. Views already returned stay readable.

        Raises:
            NotFound: this agent holds no reference to ``ref``. BackendUnavailable.
        """
        await self._call(STATE_DROP_BLOB, BlobRef(ref))

    async def stats(self) -> StateStats:
        """The backend's memory accounting."""
        s, _ = await self._call(STATE_STATS, Empty())
        return StateStats(s.keys, s.private_bytes, s.blobs, s.blob_bytes, s.shared_saved_bytes)
