"""State backend on Redis / Valkey (``pip install agent-fabric[redis]``).

Key layout. Every key of one private key ``K`` carries the hash tag ``{s:K}``, so its value,
version, lease and fence counter live in one Redis Cluster slot and one Lua script may touch
them all; a blob's two keys share ``{b:REF}``. Only the two indexes (``h:`` blobs per holder,
``o:`` keys per lease owner) live elsewhere; they are hints for ``drop_holder`` and are written
*before* the hold or lease they index, so a crash in between leaves a harmless extra entry,
never an unindexed hold.

    <ns>:{s:K}:v       value                       <ns>:{b:REF}:data   blob bytes
    <ns>:{s:K}:ver     highest version ever        <ns>:{b:REF}:holds  hash holder -> count
    <ns>:{s:K}:lease   "<token>:<owner>", PX ttl   <ns>:{h:HOLDER}     set of refs (index)
    <ns>:{s:K}:fence   last token, never expires   <ns>:{o:OWNER}      set of keys (index)

A ``}`` inside ``K`` ends the hash tag early, but it ends at the same place in all four names,
so they still share a slot; the names stay distinct because no role suffix contains ``}:``.

Errors from redis-py never leave this module: connection failures, timeouts and server-side
refusals become ``BackendUnavailable``; anything else a ``StateError`` (``_translate``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from ..errors import (
    BackendUnavailable,
    Conflict,
    Fenced,
    LeaseExpired,
    LeaseHeld,
    NotFound,
    StateError,
)
from . import _redis_scripts as lua
from ._store import blob_ref
from ._types import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    BytesLike,
    HolderDropped,
    Lease,
    StateStats,
    check_identity,
    check_key,
    check_size,
    check_ttl,
)

__all__ = ["RedisBackend"]

_REFUSALS: dict[bytes, type[StateError]] = {
    b"conflict": Conflict,
    b"fenced": Fenced,
    b"lease_expired": LeaseExpired,
    b"lease_held": LeaseHeld,
    b"not_found": NotFound,
}


#: Server-side refusals that mean "cannot serve now" rather than "bad request".
_REFUSING_WORK = (
    rexc.OutOfMemoryError,
    rexc.ReadOnlyError,
    rexc.ClusterDownError,
    rexc.TryAgainError,
)


@contextmanager
def _translate(key: str | None) -> Iterator[None]:
    """Turn redis-py and socket errors into the fabric's typed errors (httpcore's map_exceptions).

    Raises:
        BackendUnavailable: the server cannot be reached, timed out, or refused to work
            (loading, read-only replica, out of memory).
        StateError: any other redis-py error.
    """
    try:
        yield
    except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
        # ConnectionError covers BusyLoadingError (LOADING after a restart) as well.
        raise BackendUnavailable(f"redis unreachable: {exc}", key=key) from exc
    except _REFUSING_WORK as exc:
        raise BackendUnavailable(f"redis refused: {exc}", key=key) from exc
    except rexc.RedisError as exc:
        # A script or protocol error: a bug on one side, not an outage.
        raise StateError(f"redis error: {exc}", key=key) from exc


def _refuse(status: bytes, key: str, detail: str = "") -> None:
    if status != b"ok":
        cls = _REFUSALS.get(status, StateError)
        raise cls(detail or status.decode(), key=key)


def _ms(ttl: float) -> int:
    # Round up: a lease must never be shorter than asked.
    return max(1, math.ceil(ttl * 1000))


def _as_bytes(reply: bytes | str) -> bytes:
    # The client is built with decode_responses=False; a str here means it was not.
    if isinstance(reply, str):
        raise StateError("the redis client must use decode_responses=False")
    return reply


def _opt(n: int | None) -> int | str:
    return "" if n is None else n


class RedisBackend:
    """``StateBackend`` on one Redis (or Valkey) server, atomic through Lua scripts.

    Build it with ``RedisBackend.from_url`` (sets the timeouts and the no-retry policy this
    backend relies on) or pass a ready ``redis.asyncio.Redis`` created with
    ``decode_responses=False``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str = "fabric",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> None:
        self._r = client
        self._ns = namespace
        self.max_value_bytes = max_value_bytes
        self.max_blob_bytes = max_blob_bytes
        self._closed = False
        # Registered once: redis-py sends EVALSHA and loads the script on NOSCRIPT (after a
        # server restart, say), so the source crosses the wire once per server lifetime.
        reg = client.register_script
        self._put = reg(lua.PUT)
        self._delete = reg(lua.DELETE)
        self._acquire = reg(lua.ACQUIRE)
        self._renew = reg(lua.RENEW)
        self._release = reg(lua.RELEASE)
        self._release_owner = reg(lua.RELEASE_OWNER)
        self._blob_hold = reg(lua.BLOB_HOLD)
        self._blob_share = reg(lua.BLOB_SHARE)
        self._blob_open = reg(lua.BLOB_OPEN)
        self._blob_drop = reg(lua.BLOB_DROP)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 2.0,
        namespace: str = "fabric",
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    ) -> RedisBackend:
        """A backend on ``url`` (``redis://host:port/db``) whose every call ends within about
        ``timeout`` seconds per round trip.

        redis-py retries are switched off: a retried non-idempotent script (``put`` with
        ``expect=None``) could apply twice; the caller decides whether to retry.
        """
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
        return cls(
            client,
            namespace=namespace,
            max_value_bytes=max_value_bytes,
            max_blob_bytes=max_blob_bytes,
        )

    # --- key names -------------------------------------------------------------------------

    def _skeys(self, key: str) -> list[str]:
        base = f"{self._ns}:{{s:{key}}}:"
        return [base + "v", base + "ver", base + "lease", base + "fence"]

    def _bkeys(self, ref: str) -> list[str]:
        base = f"{self._ns}:{{b:{ref}}}:"
        return [base + "data", base + "holds"]

    def _holder_index(self, holder: str) -> str:
        return f"{self._ns}:{{h:{holder}}}"

    def _owner_index(self, owner: str) -> str:
        return f"{self._ns}:{{o:{owner}}}"

    async def _call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        self._check_open()
        return await script(keys=keys, args=args)

    def _check_open(self) -> None:
        # redis-py would silently reconnect after aclose(); a closed backend stays closed.
        if self._closed:
            raise BackendUnavailable("the redis state backend is closed")

    # --- private values --------------------------------------------------------------------

    async def put(
        self, key: str, value: BytesLike, *, expect: int | None = None, token: int | None = None
    ) -> int:
        """See ``StateBackend.put``."""
        check_key(key)
        check_size(value, self.max_value_bytes, key)
        with _translate(key):
            status, n = await self._call(
                self._put, self._skeys(key), [value, _opt(expect), _opt(token)]
            )
        if status == b"conflict":
            raise Conflict(f"expected version {expect}, found {n}", key=key)
        _refuse(status, key)
        return int(n)

    async def get(self, key: str) -> tuple[bytes, int]:
        """See ``StateBackend.get``."""
        check_key(key)
        v, ver, _, _ = self._skeys(key)
        self._check_open()
        with _translate(key):
            # One MGET is atomic: value and version always belong together.
            value, version = await self._r.mget(v, ver)
        if value is None or version is None:
            raise NotFound(key=key)
        return _as_bytes(value), int(version)

    async def delete(
        self, key: str, *, expect: int | None = None, token: int | None = None
    ) -> None:
        """See ``StateBackend.delete``."""
        check_key(key)
        with _translate(key):
            status, n = await self._call(
                self._delete, self._skeys(key), [_opt(expect), _opt(token)]
            )
        if status == b"conflict":
            raise Conflict(f"expected version {expect}, found {n}", key=key)
        _refuse(status, key)

    # --- leases ----------------------------------------------------------------------------

    async def acquire(self, key: str, owner: str, ttl: float) -> Lease:
        """See ``StateBackend.acquire``."""
        check_key(key)
        check_identity(owner, "lease owner")
        check_ttl(ttl, key)
        _, _, lease, fence = self._skeys(key)
        self._check_open()
        with _translate(key):
            await self._r.sadd(self._owner_index(owner), key)
            status, n = await self._call(self._acquire, [lease, fence], [owner, _ms(ttl)])
        if status == b"lease_held":
            raise LeaseHeld(f"held by {n.decode(errors='replace')!r}", key=key)
        _refuse(status, key)
        return Lease(key, owner, int(n), ttl)

    async def renew(self, lease: Lease, ttl: float) -> Lease:
        """See ``StateBackend.renew``."""
        check_ttl(ttl, lease.key)
        _, _, lkey, fence = self._skeys(lease.key)
        with _translate(lease.key):
            status, _ = await self._call(self._renew, [lkey, fence], [lease.token, _ms(ttl)])
        _refuse(status, lease.key)
        return Lease(lease.key, lease.owner, lease.token, ttl)

    async def release(self, lease: Lease) -> bool:
        """See ``StateBackend.release``."""
        _, _, lkey, _ = self._skeys(lease.key)
        with _translate(lease.key):
            released = await self._call(self._release, [lkey], [lease.token])
            if released:
                await self._r.srem(self._owner_index(lease.owner), lease.key)
        return bool(released)

    # --- shared blobs ----------------------------------------------------------------------

    async def share(self, data: BytesLike, holder: str) -> str:
        """See ``StateBackend.share``."""
        check_identity(holder, "blob holder")
        check_size(data, self.max_blob_bytes, "blob")
        ref = blob_ref(data)
        keys = self._bkeys(ref)
        self._check_open()
        with _translate(ref):
            await self._r.sadd(self._holder_index(holder), ref)
            # Try without the bytes first: a blob already stored costs no upload.
            if not await self._call(self._blob_hold, keys, [holder]):
                await self._call(self._blob_share, keys, [holder, data])
        return ref

    async def open_blob(self, ref: str, holder: str) -> bytes:
        """See ``StateBackend.open_blob``."""
        check_identity(holder, "blob holder")
        self._check_open()
        with _translate(ref):
            await self._r.sadd(self._holder_index(holder), ref)
            data = await self._call(self._blob_open, self._bkeys(ref), [holder])
        if data is None:
            raise NotFound(f"no blob {ref}", key=ref)
        return bytes(data)

    async def drop_blob(self, ref: str, holder: str) -> None:
        """See ``StateBackend.drop_blob``."""
        with _translate(ref):
            left = await self._call(self._blob_drop, self._bkeys(ref), [holder, "0"])
            if left <= 0:
                await self._r.srem(self._holder_index(holder), ref)
        if left < 0:
            raise NotFound(f"{holder!r} holds no reference to blob {ref}", key=ref)

    async def drop_holder(self, holder: str) -> HolderDropped:
        """See ``StateBackend.drop_holder``.

        Not atomic across keys (they live in different slots); each key is released atomically,
        and only if it still belongs to ``holder``.
        """
        blobs = leases = 0
        hindex, oindex = self._holder_index(holder), self._owner_index(holder)
        self._check_open()
        with _translate(None):
            for raw in await self._r.smembers(hindex):
                ref = _as_bytes(raw).decode()
                left = await self._call(self._blob_drop, self._bkeys(ref), [holder, "1"])
                blobs += 1 if left == 0 else 0
            for raw in await self._r.smembers(oindex):
                _, _, lkey, _ = self._skeys(_as_bytes(raw).decode())
                leases += await self._call(self._release_owner, [lkey], [holder])
            await self._r.delete(hindex, oindex)
        return HolderDropped(blobs=blobs, leases=leases)

    # --- accounting ------------------------------------------------------------------------

    async def stats(self) -> StateStats:
        """See ``StateBackend.stats``.

        Walks the namespace with SCAN: O(keys), meant for diagnostics, not the hot path.
        """
        ns = self._ns
        self._check_open()
        with _translate(None):
            values = [k async for k in self._r.scan_iter(match=f"{ns}:{{s:*}}:v", count=1000)]
            private = sum(await self._sizes(values, "strlen"))
            datas = [k async for k in self._r.scan_iter(match=f"{ns}:{{b:*}}:data", count=1000)]
            sizes = await self._sizes(datas, "strlen")
            holders = await self._sizes([d[: -len(b"data")] + b"holds" for d in datas], "hlen")
        blob_bytes = sum(sizes)
        held = sum(s * h for s, h in zip(sizes, holders, strict=True))
        return StateStats(
            keys=len(values),
            private_bytes=private,
            blobs=len(datas),
            blob_bytes=blob_bytes,
            shared_saved_bytes=held - blob_bytes,
        )

    async def _sizes(self, keys: list[bytes], command: str) -> list[int]:
        if not keys:
            return []
        pipe = self._r.pipeline(transaction=False)
        for k in keys:
            getattr(pipe, command)(k)
        return [int(n) for n in await pipe.execute()]

    async def aclose(self) -> None:
        """Close the connection pool; later calls raise ``BackendUnavailable``. Never raises."""
        self._closed = True
        with suppress(rexc.RedisError, OSError):
            await self._r.aclose()
