"""Value types shared by every state backend: leases, statistics, limits and argument checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

from ..errors import PayloadTooLarge, StateError

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_CHARS",
    "BytesLike",
    "HolderDropped",
    "Lease",
    "StateStats",
    "check_identity",
    "check_key",
    "check_size",
    "check_ttl",
]

#: What ``put`` and ``share`` accept. ``bytes`` (and views over ``bytes``) are kept without a copy.
BytesLike: TypeAlias = bytes | bytearray | memoryview

#: Private values are agent state (a conversation, a scratchpad): 64 MiB is the migration target,
#: twice that leaves room; anything bigger belongs in a shared blob.
DEFAULT_MAX_VALUE_BYTES = 128 * 1024 * 1024
#: Redis refuses bulk strings above 512 MB (``proto-max-bulk-len``); the embedded pool follows it
#: so both backends refuse the same sizes.
DEFAULT_MAX_BLOB_BYTES = 512 * 1024 * 1024
#: Keys travel in every control message and become Redis key names: keep them short.
MAX_KEY_CHARS = 1024


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease on one private key, as handed to its owner."""

    key: str
    #: Opaque identity of the holder (the node uses the agent's session id).
    owner: str
    #: Fencing token: strictly increasing per key, forever; every write under the lease carries it.
    token: int
    #: Seconds the lease had left when the backend granted or renewed it. Relative on purpose:
    #: the owner adds it to its *own* monotonic clock, never compares wall-clock instants.
    expires_in: float


@dataclass(frozen=True, slots=True)
class StateStats:
    """Memory accounting of one backend."""

    #: Private keys that currently hold a value.
    keys: int
    #: Bytes of private values (the values only, not keys or bookkeeping).
    private_bytes: int
    #: Distinct shared blobs stored.
    blobs: int
    #: Bytes of shared blobs, each stored once.
    blob_bytes: int
    #: Sum over holders of the size of each blob they hold, minus ``blob_bytes``: what sharing
    #: saved compared with every holder keeping its own copy.
    shared_saved_bytes: int


@dataclass(frozen=True, slots=True)
class HolderDropped:
    """What ``drop_holder`` let go of."""

    #: Blobs the holder had references to (each counted once however many holds it had).
    blobs: int
    #: Leases the holder owned that were still live.
    leases: int


def check_key(key: str) -> None:
    """Refuse a key no backend can store the same way.

    Raises:
        StateError: the key is not a non-empty ``str`` of at most ``MAX_KEY_CHARS`` characters.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise StateError(f"a key is a non-empty str of at most {MAX_KEY_CHARS} characters")


def check_identity(name: str, what: str) -> None:
    """Refuse an empty owner or holder identity.

    Raises:
        StateError: ``name`` is not a non-empty ``str``.
    """
    if not isinstance(name, str) or not name or len(name) > MAX_KEY_CHARS:
        raise StateError(f"a {what} is a non-empty str of at most {MAX_KEY_CHARS} characters")


def check_ttl(ttl: float, key: str) -> None:
    """Refuse a lease duration that is not a positive, finite number of seconds.

    Raises:
        StateError: ``ttl`` is zero, negative, NaN or infinite.
    """
    if not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise StateError(f"ttl must be a positive finite number of seconds, got {ttl!r}", key=key)


def check_size(value: BytesLike, limit: int, key: str) -> int:
    """Return the size of ``value`` in bytes.

    Raises:
        PayloadTooLarge: the value is larger than ``limit``.
        StateError: the value is not bytes-like.
    """
    if not isinstance(value, bytes | bytearray | memoryview):
        raise StateError(f"values are bytes-like, got {type(value).__name__}", key=key)
    size = value.nbytes if isinstance(value, memoryview) else len(value)
    if size > limit:
        raise PayloadTooLarge(
            subject=key,
            size=size,
            limit=limit,
            hint="keep large values as shared blobs (agent.state.share) and store the reference",
        )
    return size
