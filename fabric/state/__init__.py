"""The pooled memory tier: private versioned state under fenced leases, shared immutable blobs.

``StateStore`` and ``LeaseTable`` hold the rules (pure, no I/O, driven by ``now``);
``EmbeddedBackend`` hosts them in the node; ``RedisBackend`` implements the same rules with Lua
scripts on Redis / Valkey. Both satisfy ``StateBackend``. See docs/state.md.
"""

from typing import TYPE_CHECKING

from ._backend import StateBackend
from ._embedded import EmbeddedBackend
from ._lease import LeaseTable
from ._store import StateStore, blob_ref
from ._types import (
    DEFAULT_MAX_BLOB_BYTES,
    DEFAULT_MAX_VALUE_BYTES,
    MAX_KEY_CHARS,
    BytesLike,
    HolderDropped,
    Lease,
    StateStats,
)

if TYPE_CHECKING:
    from ._redis import RedisBackend

__all__ = [
    "DEFAULT_MAX_BLOB_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_CHARS",
    "BytesLike",
    "EmbeddedBackend",
    "HolderDropped",
    "Lease",
    "LeaseTable",
    "RedisBackend",
    "StateBackend",
    "StateStats",
    "StateStore",
    "blob_ref",
]


def __getattr__(name: str) -> object:
    # RedisBackend needs the [redis] extra; import it lazily so the embedded tier does not.
    if name == "RedisBackend":
        from ._redis import RedisBackend

        return RedisBackend
    raise AttributeError(name)
